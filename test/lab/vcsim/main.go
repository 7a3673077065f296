// vcsim for the Orangery lab: govmomi's vSphere API simulator (simulator.VPX model) with an
// inventory shaped like a small real site, listening on loopback only.
//
//	dc-lab
//	  host/cluster-a: esx01.lab.local, esx02.lab.local, esx03.lab.local (one DRS cluster)
//	  datastore/datastore1 (mounted on every host)
//	  network/dvs-lab: vlan0 (VLAN 0), pg-vlan100 (VLAN 100), pg-vlan200 (VLAN 200)
//	  vm/templates: centos7-jdk8, centos7-jdk11 (templates, NIC on vlan0)
//	  vm/orangery: empty folder for the VMs the platform creates
//
// Build (Debian's golang-go and golang-github-vmware-govmomi-dev, no module download):
//
//	GOPATH=/usr/share/gocode GO111MODULE=off go build -o vcsim-lab .
//
// Credentials come from VCSIM_USERNAME / VCSIM_PASSWORD (environment, so they never show
// in a process list). On start it prints one JSON line on stdout: {"url": "...", "pid": N}.
// VMs whose extraConfig holds RUN.container run as containers through the first `docker`
// on PATH against DOCKER_HOST (see simulator/container.go); SIGTERM removes them.
package main

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"flag"
	"fmt"
	"log"
	"net"
	"net/url"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/vmware/govmomi"
	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/types"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:0", "loopback address:port to listen on (port 0 = any free port)")
	useTLS := flag.Bool("tls", false, "serve https with a self-signed certificate")
	dsDir := flag.String("datastore-dir", "", "directory backing datastore1 (default: a temp dir)")
	idle := flag.Duration("session-idle", 0, "expire sessions idle this long (0 = never)")
	pidFile := flag.String("pidfile", "", "write the process id here (the lab finds its vcsim by this path)")
	delays := flag.String("method-delay", "", `JSON map of vim25 method to delay in ms, e.g. {"CloneVM_Task":2000}`)
	flag.Parse()

	host, _, err := net.SplitHostPort(*listen)
	if err != nil || !net.ParseIP(host).IsLoopback() {
		log.Fatalf("-listen %q: must be a loopback address:port", *listen)
	}
	user, pass := os.Getenv("VCSIM_USERNAME"), os.Getenv("VCSIM_PASSWORD")
	if user == "" || pass == "" {
		log.Fatal("VCSIM_USERNAME and VCSIM_PASSWORD must be set")
	}
	simulator.SessionIdleTimeout = *idle

	// The VPX model with nothing in it but the service content: the site is built below
	// through the API itself, so its names look like a real vCenter's.
	m := simulator.VPX()
	m.Datacenter, m.Cluster, m.ClusterHost, m.Host, m.Portgroup, m.Datastore, m.Machine = 0, 0, 0, 0, 0, 0, 0
	m.Autostart = false
	if err := m.Create(); err != nil {
		log.Fatalf("model: %v", err)
	}
	if *pidFile != "" {
		if err := os.WriteFile(*pidFile, []byte(fmt.Sprintf("%d\n", os.Getpid())), 0o644); err != nil {
			log.Fatal(err)
		}
	}
	m.Service.Listen = &url.URL{Host: *listen, User: url.UserPassword(user, pass)}
	if *useTLS {
		m.Service.TLS = new(tls.Config)
	}
	server := m.Service.NewServer()

	dir := *dsDir
	if dir == "" {
		if dir, err = os.MkdirTemp("", "vcsim-lab-ds-"); err != nil {
			log.Fatal(err)
		}
		defer os.RemoveAll(dir)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	if err := buildSite(ctx, server.URL, dir); err != nil {
		log.Fatalf("inventory: %v", err)
	}
	cancel()
	// Delays apply from here on (the model keeps a pointer to its DelayConfig), so building
	// the site is never slowed down.
	if *delays != "" {
		if err := json.Unmarshal([]byte(*delays), &m.DelayConfig.MethodDelay); err != nil {
			log.Fatalf("-method-delay: %v", err)
		}
	}

	shown := *server.URL
	shown.User = nil
	line, _ := json.Marshal(map[string]interface{}{"url": shown.String(), "pid": os.Getpid()})
	fmt.Println(string(line))

	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	<-sig
	// Removes every VM's container (docker rm -f) and the model's temp dirs.
	m.Remove()
	server.Close()
	os.RemoveAll(dir)
	if *pidFile != "" {
		os.Remove(*pidFile)
	}
}

func must(err error) {
	if err != nil {
		panic(err)
	}
}

// waitTask returns a task waiter bound to ctx, shaped to take a call's (task, error) as is.
func waitTask(ctx context.Context) func(*object.Task, error) types.ManagedObjectReference {
	return func(t *object.Task, err error) types.ManagedObjectReference {
		must(err)
		return taskResult(ctx, t)
	}
}

func taskResult(ctx context.Context, t *object.Task) types.ManagedObjectReference {
	info, err := t.WaitForResult(ctx, nil)
	must(err)
	if ref, ok := info.Result.(types.ManagedObjectReference); ok {
		return ref
	}
	return types.ManagedObjectReference{}
}

type portgroup struct {
	name string
	vlan int32
}

func buildSite(ctx context.Context, u *url.URL, dsDir string) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%v", r)
		}
	}()
	c, err := govmomi.NewClient(ctx, u, true)
	if err != nil {
		return err
	}
	defer func() { _ = c.Logout(ctx) }()
	wait := waitTask(ctx)

	root := object.NewRootFolder(c.Client)
	dc, err := root.CreateDatacenter(ctx, "dc-lab")
	must(err)
	folders, err := dc.Folders(ctx)
	must(err)

	var spec types.DVSCreateSpec
	spec.ConfigSpec = &types.VMwareDVSConfigSpec{}
	spec.ConfigSpec.GetDVSConfigSpec().Name = "dvs-lab"
	dvsRef := wait(folders.NetworkFolder.CreateDVS(ctx, spec))
	dvs := object.NewDistributedVirtualSwitch(c.Client, dvsRef)

	cluster, err := folders.HostFolder.CreateCluster(ctx, "cluster-a", types.ClusterConfigSpecEx{})
	must(err)
	var hosts []*object.HostSystem
	for i := 1; i <= 3; i++ {
		ref := wait(cluster.AddHost(ctx, types.HostConnectSpec{HostName: fmt.Sprintf("esx%02d.lab.local", i)}, true, nil, nil))
		h := object.NewHostSystem(c.Client, ref)
		hosts = append(hosts, h)
		wait(dvs.Reconfigure(ctx, &types.DVSConfigSpec{Host: []types.DistributedVirtualSwitchHostMemberConfigSpec{{
			Operation: string(types.ConfigSpecOperationAdd),
			Host:      ref,
		}}}))
		dss, err := h.ConfigManager().DatastoreSystem(ctx)
		must(err)
		_, err = dss.CreateLocalDatastore(ctx, "datastore1", dsDir)
		must(err)
	}

	for _, pg := range []portgroup{{"vlan0", 0}, {"pg-vlan100", 100}, {"pg-vlan200", 200}} {
		wait(dvs.AddPortgroup(ctx, []types.DVPortgroupConfigSpec{{
			Name:     pg.name,
			Type:     string(types.DistributedVirtualPortgroupPortgroupTypeEarlyBinding),
			NumPorts: 128,
			DefaultPortConfig: &types.VMwareDVSPortSetting{
				Vlan: &types.VmwareDistributedVirtualSwitchVlanIdSpec{VlanId: pg.vlan},
			},
		}}))
	}

	templates, err := folders.VmFolder.CreateFolder(ctx, "templates")
	must(err)
	_, err = folders.VmFolder.CreateFolder(ctx, "orangery")
	must(err)
	pool, err := cluster.ResourcePool(ctx)
	must(err)
	net0, err := object.NewSearchIndex(c.Client).FindChild(ctx, folders.NetworkFolder, "vlan0")
	must(err)
	backing, err := object.NewDistributedVirtualPortgroup(c.Client, net0.Reference()).EthernetCardBackingInfo(ctx)
	must(err)

	for _, name := range []string{"centos7-jdk8", "centos7-jdk11"} {
		var devices object.VirtualDeviceList
		scsi, err := devices.CreateSCSIController("pvscsi")
		must(err)
		devices = append(devices, scsi)
		disk := devices.CreateDisk(scsi.(types.BaseVirtualController), types.ManagedObjectReference{}, "[datastore1] "+name+"/disk1.vmdk")
		disk.CapacityInKB = 20 * 1024 * 1024
		nic, err := object.EthernetCardTypes().CreateEthernetCard("vmxnet3", backing)
		must(err)
		devices = append(devices, disk, nic)
		changes, err := devices.ConfigSpec(types.VirtualDeviceConfigSpecOperationAdd)
		must(err)
		ref := wait(templates.CreateVM(ctx, types.VirtualMachineConfigSpec{
			Name:         name,
			GuestId:      string(types.VirtualMachineGuestOsIdentifierCentos7_64Guest),
			NumCPUs:      2,
			MemoryMB:     4096,
			Annotation:   "Orangery lab template: CentOS 7 with " + name[len("centos7-"):],
			Files:        &types.VirtualMachineFileInfo{VmPathName: "[datastore1]"},
			DeviceChange: changes,
		}, pool, hosts[0]))
		must(object.NewVirtualMachine(c.Client, ref).MarkAsTemplate(ctx))
	}
	return nil
}
