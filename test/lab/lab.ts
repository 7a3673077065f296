// The lab: a small data centre on one Linux machine (see README.md next to this file).
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { appendFileSync, closeSync, existsSync, mkdirSync, openSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, isAbsolute, join } from 'node:path';
import { REPO_ROOT, waitFor } from '@orangery/testing';
import { buildImageTars, importImages, LAB_IMAGES } from './images';
import {
  formSwarm,
  linkNodeSocket,
  MAX_SWARM_NODES,
  SWARM_NODE_ENGINE_TEMPLATE,
  SWARM_UPLINK,
  swarmNodeSpec,
  type LabSwarm,
  type LabSwarmNode,
  type LabSwarmOptions,
} from './swarm';
import { buildVcsim, createMacvlanNetwork, removeVcsimContainers, VCSIM_DEB_PACKAGES, VcsimProcess, type LabVcenter, type VcenterOptions } from './vcsim';
import {
  alive,
  ARPING,
  assertLabDir,
  assertLabName,
  BUSYBOX,
  cmdlineOf,
  type CleanupReport,
  defaultRouteInterfaces,
  DOCKER_CLI,
  DOCKERD,
  IP,
  NSENTER,
  UNSHARE,
  killPids,
  LAB_PREFIX,
  LAB_RUN_DIR,
  must,
  run,
  type RunResult,
  startTimeOf,
  sweepLab,
} from './sys';

/** The lab's L2 segment; every lab address is in 198.18.0.0/15 (RFC 2544 benchmarking). */
export const LAB_SUBNET = '198.18.0.0/16';
/**
 * The segment's gateway address: configured in docker networks and held by the gateway
 * namespace (LAB_GATEWAY_NETNS), so it answers ARP and ping like a real router's. The
 * docker-agents probe it to tell isolation of their instance network from a control-plane
 * outage (CONTRACT.md "Failure semantics").
 */
export const LAB_GATEWAY = '198.18.0.1';
/** Network namespace holding LAB_GATEWAY/16 on the fabric (its port: `${LAB_GATEWAY_NETNS}f`). */
export const LAB_GATEWAY_NETNS = `${LAB_PREFIX}-gw`;
/** The Linux bridge that plays the physical L2 switch. */
export const LAB_FABRIC = `${LAB_PREFIX}-fab`;
/** Network namespace (and veth) used by arpProbe: on the fabric, no IP address. */
export const LAB_PROBE = `${LAB_PREFIX}-probe`;
/** Default lab directory (data roots, logs, image tars). */
export const LAB_DIR = join(REPO_ROOT, '.run', 'lab');

const OWNER_FILE = join(LAB_RUN_DIR, 'lab.json');
const PIDS_FILE = join(LAB_RUN_DIR, 'pids');
const MAX_SERVERS = 16;
/** The ESXi engine's run dir is s<ESXI_INDEX> so the generic engine sweep covers it. */
const ESXI_INDEX = MAX_SERVERS + 1;
/** The docker macvlan network on the ESXi engine that vcsim's VM containers join. */
export const LAB_VM_NETWORK = `${LAB_PREFIX}-vmnet`;
const MAX_VMS = 100;

/** One simulated physical server: its own dockerd and one uplink on the fabric. */
export interface LabServer {
  /** Host id for the docker-agent (ORANGERY_HOST_ID), e.g. 'olab-s1'. */
  readonly id: string;
  /** 1-based. */
  readonly index: number;
  /** DOCKER_HOST for this engine, e.g. unix:///run/olab/s1/docker.sock. */
  readonly dockerHost: string;
  /** The socket path alone (dockerode: `new Docker({ socketPath })`). */
  readonly socketPath: string;
  /** The uplink in the root namespace, e.g. 'olab-s1u' (ORANGERY_UPLINK; macvlan parent). */
  readonly uplink: string;
  /** The uplink's peer, plugged into the fabric, e.g. 'olab-s1f' (cutUplink sets it down). */
  readonly fabricPort: string;
  readonly dataRoot: string;
  readonly execRoot: string;
  readonly pidFile: string;
  readonly logFile: string;
  /** dockerd --cgroup-parent: containers live in /sys/fs/cgroup/<controller>/olab-s1/<id>. */
  readonly cgroupParent: string;
}

/** A swarm task as the manager reports it (Lab.swarmTasks). */
export interface LabSwarmTask {
  id: string;
  serviceId: string;
  slot: number | undefined;
  /** hostname of the node it is assigned to */
  node: string | undefined;
  desired: string;
  /** new, pending, assigned, ..., running, complete, shutdown, failed, rejected, orphaned */
  state: string;
  since: string;
  err: string | undefined;
  containerId: string | undefined;
  /**
   * Address (no prefix length) by network name: from the manager's task when it has one
   * (overlay), else from the container on its node (macvlan --config-from: node-allocated).
   */
  ips: Record<string, string>;
  /** MAC by network name (from the container on its node). */
  macs: Record<string, string>;
}

/** A legacy VM (the existing VMware estate): a network namespace with eth0 on the fabric. */
export interface LabVm {
  /** e.g. 'olab-vm1' (also the netns name). */
  readonly name: string;
  readonly netns: string;
  /** e.g. '198.18.0.11' (prefix length 16). */
  readonly ip: string;
  /** The root-namespace end of its veth, on the fabric, e.g. 'olab-vm1f'. */
  readonly fabricPort: string;
}

export interface LabOptions {
  servers: number;
  legacyVms?: number;
  /** vCenter (vcsim) plus one more engine, the "ESXi" server, whose VM containers sit on the fabric. */
  vcenter?: boolean | VcenterOptions;
}

/** The lab owns only 198.18.0.0/15: nothing else is ever probed or contacted. */
export function isLabAddress(ip: string): boolean {
  const m = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.exec(ip);
  if (!m || m.slice(1).some((o) => Number(o) > 255)) return false;
  return m[1] === '198' && (m[2] === '18' || m[2] === '19');
}

function assertLabAddress(ip: string): void {
  if (!isLabAddress(ip)) throw new Error(`${JSON.stringify(ip)} is not a lab address (198.18.0.0/15)`);
}

const DEB_PACKAGES = ['docker.io', 'iputils-arping', 'busybox-static'];

/** Installs the lab's Debian packages that are missing (apt-get, as root); `extra` for options (vcsim's Go). */
export async function ensureLabPackages(extra: readonly string[] = []): Promise<string[]> {
  const missing: string[] = [];
  for (const p of [...DEB_PACKAGES, ...extra]) {
    const r = await run('dpkg-query', ['-W', '-f=${Status}', p]);
    if (r.code !== 0 || !r.stdout.includes('install ok installed')) missing.push(p);
  }
  if (missing.length === 0) return [];
  const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
  const args = ['install', '-y', '--no-install-recommends', ...missing];
  let r = await run('apt-get', args, { env, timeoutMs: 600_000 });
  if (r.code !== 0) {
    await run('apt-get', ['update'], { env, timeoutMs: 600_000 });
    r = await run('apt-get', args, { env, timeoutMs: 600_000 });
  }
  if (r.code !== 0) throw new Error(`apt-get install ${missing.join(' ')} failed: ${r.stderr.trim()}`);
  return missing;
}

interface Owner {
  pid: number;
  start: string | undefined;
  labDir: string;
}

function readOwner(): Owner | undefined {
  try {
    return JSON.parse(readFileSync(OWNER_FILE, 'utf8')) as Owner;
  } catch {
    return undefined;
  }
}

/** The Lab object of this process that is live (a second setup supersedes it). */
let current: Lab | undefined;

/**
 * Removes what a crashed lab left behind (same as the first step of `Lab.setup`). Refuses
 * while another live process owns the lab.
 */
export async function cleanLabLeftovers(labDir = LAB_DIR): Promise<CleanupReport> {
  const owner = readOwner();
  if (owner && owner.pid !== process.pid && alive(owner.pid) && startTimeOf(owner.pid) === owner.start) {
    throw new Error(
      `the lab is in use by process ${owner.pid} (${cmdlineOf(owner.pid).slice(0, 200)}); ` +
        `only one lab runs per machine. Stop it, or remove ${OWNER_FILE} if that is wrong.`,
    );
  }
  if (current) {
    current.supersede();
    current = undefined;
  }
  assertLabDir(labDir);
  const earlier = owner?.labDir;
  const dirs = [...new Set([labDir, ...(earlier && isAbsolute(earlier) && /\/\.run\/lab[a-z0-9-]*$/.test(earlier) ? [earlier] : [])])];
  return sweepLab(dirs);
}

/**
 * cleanLabLeftovers, but when another live process owns the lab, waits for it up to
 * ORANGERY_LAB_WAIT_SECONDS (default 0: fail at once, as CI runs one test file at a time;
 * developers running test files side by side set it to queue them).
 */
async function cleanWhenFree(labDir: string): Promise<CleanupReport> {
  const waitMs = Math.max(0, Number(process.env['ORANGERY_LAB_WAIT_SECONDS'] ?? 0) || 0) * 1000;
  const deadline = Date.now() + waitMs;
  for (;;) {
    try {
      return await cleanLabLeftovers(labDir);
    } catch (e) {
      if (!(e instanceof Error) || !e.message.includes('the lab is in use') || Date.now() > deadline) throw e;
      await new Promise((r) => setTimeout(r, 2_000));
    }
  }
}

export class Lab {
  readonly subnet = LAB_SUBNET;
  readonly gateway = LAB_GATEWAY;
  readonly fabric = LAB_FABRIC;
  /** What setup removed of an earlier run. */
  leftovers: CleanupReport = { processes: [], interfaces: [], netns: [], mounts: [], cgroups: [], dirs: [] };
  readonly timings = { setupMs: 0, teardownMs: 0, vcsimBuildMs: 0, vcsimStartMs: 0, swarmMs: 0 };
  /** Set with `vcenter` in the options: the lab's vCenter and its ESXi engine. */
  vcenter: LabVcenter | undefined;
  private vcsim: VcsimProcess | undefined;
  private vcsimStart: ((override?: Omit<VcenterOptions, 'user' | 'password'>) => Promise<VcsimProcess>) | undefined;
  /** Set by addSwarm: the lab's Docker Swarm. */
  swarm: LabSwarm | undefined;
  private readonly engines = new Map<string, ChildProcess>();
  private done = false;

  private constructor(
    readonly servers: readonly LabServer[],
    readonly vms: readonly LabVm[],
    readonly labDir: string,
    /** The "ESXi" server (vcenter option): an engine like the others, not in `servers`. */
    readonly esxi: LabServer | undefined = undefined,
  ) {}

  /**
   * Builds the lab: packages, fabric, N servers (veth uplink + dockerd each), M legacy VMs,
   * and the test images in every engine. Removes leftovers of a crashed earlier run first.
   * `labDir` (data roots, logs, image tars) must be `<dir>/.run/lab[-suffix]`.
   */
  static async setup(opts: LabOptions, labDir = LAB_DIR): Promise<Lab> {
    const t0 = Date.now();
    const nServers = opts.servers;
    const nVms = opts.legacyVms ?? 0;
    if (!Number.isInteger(nServers) || nServers < 0 || nServers > MAX_SERVERS) throw new Error(`servers: 0..${MAX_SERVERS}`);
    if (!Number.isInteger(nVms) || nVms < 0 || nVms > MAX_VMS) throw new Error(`legacyVms: 0..${MAX_VMS}`);
    if (process.getuid?.() !== 0) throw new Error('the lab needs root (network namespaces, bridges, dockerd)');

    const asked = opts.vcenter === true ? {} : opts.vcenter || undefined;
    // Credentials fixed for the lab's life: a restarted vcsim accepts the same ones.
    const vcOpts: VcenterOptions | undefined = asked && {
      ...asked,
      user: asked.user ?? 'orangery@vsphere.local',
      password: asked.password ?? randomBytes(12).toString('base64url'),
    };
    await ensureLabPackages(vcOpts ? VCSIM_DEB_PACKAGES : []);
    const leftovers = await cleanWhenFree(labDir);

    const servers = Array.from({ length: nServers }, (_, k) => serverSpec(k + 1, labDir));
    const vms = Array.from({ length: nVms }, (_, k) => vmSpec(k + 1));
    const esxi = vcOpts ? { ...serverSpec(ESXI_INDEX, labDir), id: `${LAB_PREFIX}-esxi` } : undefined;
    const lab = new Lab(servers, vms, labDir, esxi);
    lab.leftovers = leftovers;
    current = lab;
    mkdirSync(LAB_RUN_DIR, { recursive: true });
    mkdirSync(labDir, { recursive: true });
    writeFileSync(OWNER_FILE, JSON.stringify({ pid: process.pid, start: startTimeOf(process.pid), labDir } satisfies Owner));

    try {
      const defaults = await defaultRouteInterfaces();
      if (defaults.has(LAB_FABRIC)) throw new Error(`${LAB_FABRIC} holds a default route: refusing`);
      await ip(['link', 'add', 'name', LAB_FABRIC, 'type', 'bridge']);
      await ip(['link', 'set', LAB_FABRIC, 'type', 'bridge', 'forward_delay', '0', 'stp_state', '0']);
      await ip(['link', 'set', LAB_FABRIC, 'up']);
      await plugNetns(LAB_PROBE, `${LAB_PROBE}f`, undefined);
      await plugNetns(LAB_GATEWAY_NETNS, `${LAB_GATEWAY_NETNS}f`, `${LAB_GATEWAY}/16`);

      const images = buildImageTars(join(labDir, 'images'));
      images.catch(() => undefined); // awaited below; avoid an unhandled rejection meanwhile
      const vcsimBinary = vcOpts ? buildVcsim() : undefined;
      vcsimBinary?.catch(() => undefined);
      await Promise.all([
        ...[...servers, ...(esxi ? [esxi] : [])].map(async (s) => {
          await ip(['link', 'add', s.uplink, 'type', 'veth', 'peer', 'name', s.fabricPort]);
          await ip(['link', 'set', s.fabricPort, 'master', LAB_FABRIC]);
          await ip(['link', 'set', s.fabricPort, 'up']);
          await ip(['link', 'set', s.uplink, 'up']);
          await lab.startEngine(s);
          await importImages((argv) => lab.docker(s, argv), await images);
        }),
        ...vms.map((vm) => plugNetns(vm.netns, vm.fabricPort, `${vm.ip}/16`)),
      ]);
      await images;
      if (vcOpts && esxi && vcsimBinary) {
        const built = await vcsimBinary;
        lab.timings.vcsimBuildMs = built.ms;
        await createMacvlanNetwork(esxi.dockerHost, LAB_VM_NETWORK, LAB_SUBNET, LAB_GATEWAY, esxi.uplink);
        lab.vcsimStart = (override = {}) =>
          VcsimProcess.start(built.binary, { ...vcOpts, ...override }, esxi, LAB_VM_NETWORK, LAB_IMAGES.busybox, labDir, PIDS_FILE);
        await lab.startVcenter();
      }
    } catch (e) {
      await lab.teardown().catch(() => undefined);
      throw e;
    }
    lab.timings.setupMs = Date.now() - t0;
    return lab;
  }

  /**
   * Adds a Docker Swarm of `nodes` engines (see swarm.ts): each a dockerd in its own
   * network namespace (netns = hostname = `olab-sw<i>`) whose eth0 sits on the fabric at
   * 198.18.0.20<i>/16, the lab's images loaded, `swarm init` on node 1 and `join` of the
   * others over the fabric. One swarm per lab; teardown removes it (services first).
   */
  async addSwarm(opts: LabSwarmOptions): Promise<LabSwarm> {
    if (this.done) throw new Error('the lab is torn down');
    if (this.swarm) throw new Error('this lab has a swarm already');
    const n = opts.nodes;
    const managers = opts.managers ?? 1;
    if (!Number.isInteger(n) || n < 1 || n > MAX_SWARM_NODES) throw new Error(`swarm nodes: 1..${MAX_SWARM_NODES}`);
    if (!Number.isInteger(managers) || managers < 1 || managers > n) throw new Error(`swarm managers: 1..${n}`);
    const t0 = Date.now();
    const nodes = Array.from({ length: n }, (_, k) => swarmNodeSpec(k + 1, this.labDir));
    const tars = join(this.labDir, 'images');
    const images = existsSync(join(tars, 'svc.tar')) ? { busybox: join(tars, 'busybox.tar'), svc: join(tars, 'svc.tar') } : await buildImageTars(tars);
    // Registered before anything is created, so teardown finds a half-built swarm too.
    const partial: LabSwarm = {
      nodes,
      manager: nodes[0]!,
      managerUrl: nodes[0]!.dockerHost,
      uplink: SWARM_UPLINK,
      nodeEngineTemplate: SWARM_NODE_ENGINE_TEMPLATE,
      nodeEngines: nodes.map((x) => `${x.hostname}=${x.dockerHost}`).join(','),
      nodeIds: {},
    };
    this.swarm = partial;
    await Promise.all(
      nodes.map(async (x) => {
        await plugNetns(x.netns, x.fabricPort, `${x.address}/16`);
        await this.startEngine(x);
        linkNodeSocket(x);
        await importImages((argv) => this.docker(x, argv), images);
      }),
    );
    const nodeIds = await formSwarm((x, argv, o) => this.docker(x, argv, o), nodes, managers);
    this.swarm = { ...partial, nodeIds };
    this.timings.swarmMs = Date.now() - t0;
    return this.swarm;
  }

  /** The swarm's node by hostname, or the object itself. */
  swarmNode(node: LabSwarmNode | string): LabSwarmNode {
    const found = this.swarm?.nodes.find((x) => x.hostname === (typeof node === 'string' ? node : node.hostname));
    if (!found) throw new Error(`no swarm node ${typeof node === 'string' ? node : node.hostname}`);
    return found;
  }

  /** `docker` on the swarm's manager engine (service, node, network commands). */
  swarmDocker(argv: readonly string[], opts: { timeoutMs?: number } = {}): Promise<string> {
    if (!this.swarm) throw new Error('this lab has no swarm (lab.addSwarm)');
    return this.docker(this.swarm.manager, argv, opts);
  }

  /** `docker node update --availability` on the manager: drain moves the node's tasks away, active takes tasks again. */
  async setNodeAvailability(node: LabSwarmNode | string, availability: 'active' | 'pause' | 'drain'): Promise<void> {
    await this.swarmDocker([
      'node',
      'update',
      '--availability',
      availability,
      this.swarm!.nodeIds[this.swarmNode(node).hostname] ?? this.swarmNode(node).hostname,
    ]);
  }

  /** The manager's view of its nodes: hostname -> { state (ready/down), availability, id }. */
  async swarmNodeStates(): Promise<Record<string, { id: string; state: string; availability: string }>> {
    const out: Record<string, { id: string; state: string; availability: string }> = {};
    const ids = (await this.swarmDocker(['node', 'ls', '-q'])).split('\n').filter(Boolean);
    if (ids.length === 0) return out;
    const nodes = JSON.parse(await this.swarmDocker(['node', 'inspect', ...ids])) as {
      ID: string;
      Description: { Hostname: string };
      Status: { State: string };
      Spec: { Availability: string };
    }[];
    for (const x of nodes) out[x.Description.Hostname] = { id: x.ID, state: x.Status.State, availability: x.Spec.Availability };
    return out;
  }

  /**
   * The manager's tasks (of `service`, or of every service): id, slot, node hostname,
   * desired and current state, container id and the address on each network (by network name).
   */
  async swarmTasks(service?: string): Promise<LabSwarmTask[]> {
    const services = service ? [service] : (await this.swarmDocker(['service', 'ls', '-q'])).split('\n').filter(Boolean);
    const ids: string[] = [];
    for (const svc of services) ids.push(...(await this.swarmDocker(['service', 'ps', '-q', '--no-trunc', svc])).split('\n').filter(Boolean));
    if (ids.length === 0) return [];
    const byId = Object.fromEntries(Object.entries(this.swarm!.nodeIds).map(([h, id]) => [id, h]));
    const raw = JSON.parse(await this.swarmDocker(['inspect', '--type', 'task', ...ids])) as {
      ID: string;
      ServiceID: string;
      Slot?: number;
      NodeID?: string;
      DesiredState: string;
      Status: { State: string; Timestamp: string; Err?: string; ContainerStatus?: { ContainerID?: string } };
      NetworksAttachments?: { Network: { Spec: { Name: string } }; Addresses?: string[] }[];
    }[];
    const tasks: LabSwarmTask[] = raw.map((t) => ({
      id: t.ID,
      serviceId: t.ServiceID,
      slot: t.Slot,
      node: t.NodeID ? (byId[t.NodeID] ?? t.NodeID) : undefined,
      desired: t.DesiredState,
      state: t.Status.State,
      since: t.Status.Timestamp,
      err: t.Status.Err,
      macs: {},
      containerId: t.Status.ContainerStatus?.ContainerID,
      ips: Object.fromEntries((t.NetworksAttachments ?? []).filter((a) => a.Addresses?.[0]).map((a) => [a.Network.Spec.Name, a.Addresses![0]!.split('/')[0]!])),
    }));
    // A macvlan network made --config-from node-local config networks is allocated by the
    // node, not the manager: the task's NetworksAttachments carry no address. The container
    // on its node knows it.
    for (const t of tasks) {
      if (!t.containerId || !t.node || !this.swarm!.nodes.some((x) => x.hostname === t.node) || this.enginePid(t.node) === undefined) continue;
      const r = await run(DOCKER_CLI, ['-H', this.swarmNode(t.node).dockerHost, 'inspect', '--type', 'container', t.containerId], { timeoutMs: 10_000 });
      if (r.code !== 0) continue;
      const [c] = JSON.parse(r.stdout) as { NetworkSettings: { Networks: Record<string, { IPAddress?: string; MacAddress?: string }> } }[];
      for (const [name, n] of Object.entries(c?.NetworkSettings.Networks ?? {})) {
        if (n.IPAddress && !t.ips[name]) t.ips[name] = n.IPAddress;
        if (n.MacAddress) t.macs[name] = n.MacAddress;
      }
    }
    return tasks;
  }

  /**
   * Removes every swarm service (on the manager) and waits, bounded, until no node runs a
   * container; then force-removes what is left. Teardown does this before stopping engines.
   */
  async removeSwarmServices(timeoutMs = 60_000): Promise<void> {
    const sw = this.swarm;
    if (!sw || this.enginePid(sw.manager) === undefined) return;
    const ids = (await run(DOCKER_CLI, ['-H', sw.managerUrl, 'service', 'ls', '-q'], { timeoutMs: 10_000 })).stdout.split('\n').filter(Boolean);
    if (ids.length > 0) await run(DOCKER_CLI, ['-H', sw.managerUrl, 'service', 'rm', ...ids], { timeoutMs: 30_000 });
    const deadline = Date.now() + timeoutMs;
    for (const x of sw.nodes) {
      if (this.enginePid(x) === undefined) continue;
      for (;;) {
        const left = (await run(DOCKER_CLI, ['-H', x.dockerHost, 'ps', '-aq'], { timeoutMs: 10_000 })).stdout.split('\n').filter(Boolean);
        if (left.length === 0) break;
        if (Date.now() > deadline) {
          await run(DOCKER_CLI, ['-H', x.dockerHost, 'rm', '-f', ...left], { timeoutMs: 30_000 });
          break;
        }
        await new Promise((r) => setTimeout(r, 250));
      }
    }
  }

  /** Called when a later setup in this process takes the lab over (as after a crash). */
  supersede(): void {
    this.done = true;
  }

  /**
   * Starts vcsim (vcenter option) after removing containers a killed vcsim left; a fresh
   * inventory each time. `override` changes options for this start (port, delays, tls...).
   */
  async startVcenter(override?: Omit<VcenterOptions, 'user' | 'password'>): Promise<LabVcenter> {
    if (!this.vcsimStart || !this.esxi) throw new Error('this lab has no vcenter (Lab.setup({ vcenter: true }))');
    if (this.vcsim?.running) return this.vcsim.info;
    const t0 = Date.now();
    await removeVcsimContainers(this.esxi.dockerHost);
    this.vcsim = await this.vcsimStart(override);
    this.vcenter = this.vcsim.info;
    this.timings.vcsimStartMs = Date.now() - t0;
    return this.vcenter;
  }

  /** Stops vcsim by PID: SIGTERM removes its VMs' containers; SIGKILL leaves them (a crash). */
  async stopVcenter(signal: NodeJS.Signals = 'SIGTERM'): Promise<void> {
    await this.vcsim?.stop(signal);
  }

  get vcenterRunning(): boolean {
    return this.vcsim?.running ?? false;
  }

  server(s: LabServer | LabSwarmNode | string): LabServer | LabSwarmNode {
    const all: (LabServer | LabSwarmNode)[] = [...this.servers, ...(this.esxi ? [this.esxi] : []), ...(this.swarm?.nodes ?? [])];
    const found = typeof s === 'string' ? all.find((x) => x.id === s) : all.find((x) => x.id === s.id);
    if (!found) throw new Error(`no lab server ${typeof s === 'string' ? s : s.id}`);
    return found;
  }

  vm(v: LabVm | string): LabVm {
    const found = this.vms.find((x) => x.name === (typeof v === 'string' ? v : v.name));
    if (!found) throw new Error(`no lab VM ${typeof v === 'string' ? v : v.name}`);
    return found;
  }

  /** Runs the Debian docker CLI against one lab engine; returns stdout, throws with stderr. */
  docker(server: LabServer | LabSwarmNode | string, argv: readonly string[], opts: { timeoutMs?: number } = {}): Promise<string> {
    const s = this.server(server);
    return must(DOCKER_CLI, ['-H', s.dockerHost, ...argv], { timeoutMs: opts.timeoutMs ?? 120_000 });
  }

  /** Runs argv inside a legacy VM's network namespace. Never throws for a non-zero exit. */
  execInVm(vm: LabVm | string, argv: readonly string[], opts: { timeoutMs?: number } = {}): Promise<RunResult> {
    const v = this.vm(vm);
    if (argv.length === 0) throw new Error('execInVm: empty argv');
    return run(IP, ['netns', 'exec', v.netns, ...argv], { timeoutMs: opts.timeoutMs ?? 30_000 });
  }

  /** One ICMP echo (busybox ping -c 1 -W 1) from a legacy VM; true when answered. */
  async vmPing(vm: LabVm | string, ip: string): Promise<boolean> {
    assertLabAddress(ip);
    return (await this.execInVm(vm, [BUSYBOX, 'ping', '-c', '1', '-W', '1', ip])).code === 0;
  }

  /**
   * HTTP GET from a legacy VM (busybox wget): the body, or undefined when unreachable or
   * slower than `timeoutMs`. (Not `wget -T`: Debian's busybox-static 1.35 wget segfaults with it.)
   */
  async vmHttpGet(vm: LabVm | string, ip: string, port: number, path = '/', timeoutMs = 3_000): Promise<string | undefined> {
    assertLabAddress(ip);
    if (!Number.isInteger(port) || port < 1 || port > 65535) throw new Error(`bad port ${port}`);
    if (!/^\/[\x21-\x7e]*$/.test(path)) throw new Error(`bad path ${path}`);
    const r = await this.execInVm(vm, [BUSYBOX, 'wget', '-q', '-O', '-', `http://${ip}:${port}${path}`], { timeoutMs });
    return r.code === 0 ? r.stdout : undefined;
  }

  /**
   * True when anything answers ARP for `ip` on the fabric: `arping -D` (duplicate address
   * detection, sender 0.0.0.0) from the probe namespace, which has no address of its own.
   */
  async arpProbe(ip: string, opts: { count?: number; timeoutSec?: number } = {}): Promise<boolean> {
    assertLabAddress(ip);
    const count = String(opts.count ?? 2);
    const wait = String(opts.timeoutSec ?? 2);
    const r = await run(IP, ['netns', 'exec', LAB_PROBE, ARPING, '-D', '-c', count, '-w', wait, '-I', 'eth0', ip], {
      timeoutMs: (opts.timeoutSec ?? 2) * 1000 + 10_000,
    });
    if (r.code === 0) return false;
    if (r.code === 1) return true;
    throw new Error(`arping ${ip} failed (${r.code}): ${r.stderr.trim()}`);
  }

  /** Takes the server off the fabric (its fabric-side veth goes down; the uplink loses carrier). */
  async cutUplink(server: LabServer | LabSwarmNode | string): Promise<void> {
    await ip(['link', 'set', this.server(server).fabricPort, 'down']);
  }

  async restoreUplink(server: LabServer | LabSwarmNode | string): Promise<void> {
    await ip(['link', 'set', this.server(server).fabricPort, 'up']);
  }

  /** Takes the gateway off the fabric (its port goes down): LAB_GATEWAY stops answering for everyone. */
  async isolateGateway(): Promise<void> {
    await ip(['link', 'set', `${LAB_GATEWAY_NETNS}f`, 'down']);
  }

  async restoreGateway(): Promise<void> {
    await ip(['link', 'set', `${LAB_GATEWAY_NETNS}f`, 'up']);
  }

  /** PID of the server's dockerd, when running. */
  enginePid(server: LabServer | LabSwarmNode | string): number | undefined {
    const s = this.server(server);
    const child = this.engines.get(s.id);
    if (child?.pid && child.exitCode === null && child.signalCode === null) return child.pid;
    try {
      const pid = Number(readFileSync(s.pidFile, 'utf8').trim());
      return alive(pid) && cmdlineOf(pid).includes(s.execRoot) ? pid : undefined;
    } catch {
      return undefined;
    }
  }

  /** Starts the server's dockerd (same dirs as before) and waits until it answers. */
  async startEngine(server: LabServer | LabSwarmNode | string): Promise<void> {
    const s = this.server(server);
    if (this.enginePid(s) !== undefined) return;
    mkdirSync(join(LAB_RUN_DIR, `s${s.index}`), { recursive: true });
    mkdirSync(s.dataRoot, { recursive: true });
    mkdirSync(dirname(s.logFile), { recursive: true });
    const log = openSync(s.logFile, 'a');
    const dockerdArgs = [
      '--data-root',
      s.dataRoot,
      '--exec-root',
      s.execRoot,
      '-H',
      s.dockerHost,
      '--pidfile',
      s.pidFile,
      '--iptables=false',
      '--ip6tables=false',
      '--bridge=none',
      '--ip-forward=false',
      '--ip-masq=false',
      '--userland-proxy=false',
      '--cgroup-parent',
      s.cgroupParent,
    ];
    // A swarm node: dockerd in its network namespace (nsenter, not `ip netns exec`, which
    // remounts /sys and breaks dockerd's cgroups) and its own UTS namespace with the node's
    // hostname. Every step execs, so the PID is dockerd's.
    const child =
      'netns' in s
        ? spawn(
            NSENTER,
            [`--net=/var/run/netns/${s.netns}`, UNSHARE, '--uts', BUSYBOX, 'sh', '-c', 'hostname "$0" && exec dockerd "$@"', s.hostname, ...dockerdArgs],
            { stdio: ['ignore', log, log] },
          )
        : spawn(DOCKERD, dockerdArgs, { stdio: ['ignore', log, log] });
    closeSync(log);
    if (child.pid) appendFileSync(PIDS_FILE, `${child.pid}\n`);
    this.engines.set(s.id, child);
    let exited = false;
    child.once('exit', () => (exited = true));
    await waitFor(
      `dockerd of ${s.id}`,
      async () => {
        if (exited) throw new Error(`dockerd of ${s.id} exited; log: ${tail(s.logFile)}`);
        return (await run(DOCKER_CLI, ['-H', s.dockerHost, 'version', '--format', '{{.Server.Version}}'], { timeoutMs: 5_000 })).code === 0;
      },
      30_000,
      100,
    ).catch((e: unknown) => {
      if (exited) throw e;
      throw new Error(`${String(e)}; log: ${tail(s.logFile)}`);
    });
  }

  /** SIGTERM to the server's dockerd (it stops its containers), by PID; SIGKILL after 30 s. */
  async stopEngine(server: LabServer | LabSwarmNode | string): Promise<void> {
    const s = this.server(server);
    const pid = this.enginePid(s);
    if (pid !== undefined) await killPids([pid], 30_000);
    this.engines.delete(s.id);
  }

  /**
   * Removes everything: containers, engines (their containerd and shims die with them),
   * namespaces, interfaces, directories. Idempotent; also safe after a failed setup.
   */
  async teardown(): Promise<void> {
    if (this.done) return;
    this.done = true;
    const t0 = Date.now();
    await this.vcsim?.stop().catch(() => undefined);
    await this.removeSwarmServices(30_000).catch(() => undefined);
    await Promise.all(
      [...this.servers, ...(this.esxi ? [this.esxi] : []), ...(this.swarm?.nodes ?? [])].map(async (s) => {
        if (this.enginePid(s) === undefined) return;
        const ids = (await run(DOCKER_CLI, ['-H', s.dockerHost, 'ps', '-aq'], { timeoutMs: 10_000 })).stdout.split('\n').filter(Boolean);
        if (ids.length > 0) await run(DOCKER_CLI, ['-H', s.dockerHost, 'rm', '-f', ...ids], { timeoutMs: 30_000 });
        await this.stopEngine(s);
      }),
    );
    if (current === this) current = undefined;
    await sweepLab([this.labDir]);
    this.timings.teardownMs = Date.now() - t0;
  }

  get tornDown(): boolean {
    return this.done;
  }
}

function serverSpec(i: number, labDir: string): LabServer {
  const run = join(LAB_RUN_DIR, `s${i}`);
  const spec: LabServer = {
    id: `${LAB_PREFIX}-s${i}`,
    index: i,
    dockerHost: `unix://${run}/docker.sock`,
    socketPath: `${run}/docker.sock`,
    uplink: `${LAB_PREFIX}-s${i}u`,
    fabricPort: `${LAB_PREFIX}-s${i}f`,
    dataRoot: join(labDir, `s${i}`, 'data'),
    execRoot: `${run}/exec`,
    pidFile: `${run}/docker.pid`,
    logFile: join(labDir, `s${i}`, 'dockerd.log'),
    cgroupParent: `/${LAB_PREFIX}-s${i}`,
  };
  assertLabName(spec.uplink);
  assertLabName(spec.fabricPort);
  return spec;
}

function vmSpec(j: number): LabVm {
  const name = `${LAB_PREFIX}-vm${j}`;
  const vm: LabVm = { name, netns: name, ip: `198.18.0.${10 + j}`, fabricPort: `${name}f` };
  assertLabName(vm.fabricPort);
  return vm;
}

const ip = (args: readonly string[]) => must(IP, args);

/** A network namespace whose eth0 is a veth to `port` on the fabric; optional address. */
async function plugNetns(netns: string, port: string, cidr: string | undefined): Promise<void> {
  assertLabName(netns);
  assertLabName(port);
  await ip(['netns', 'add', netns]);
  await ip(['link', 'add', port, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', netns]);
  await ip(['link', 'set', port, 'master', LAB_FABRIC]);
  await ip(['link', 'set', port, 'up']);
  await ip(['-n', netns, 'link', 'set', 'lo', 'up']);
  if (cidr) await ip(['-n', netns, 'addr', 'add', cidr, 'dev', 'eth0']);
  await ip(['-n', netns, 'link', 'set', 'eth0', 'up']);
}

function tail(file: string, lines = 15): string {
  if (!existsSync(file)) return '(no log)';
  return readFileSync(file, 'utf8').trimEnd().split('\n').slice(-lines).join('\n');
}
