// Records real vcsim SOAP responses as libs/vsphere unit-test fixtures:
//   node tools/run-ts.mjs test/lab/vcsim/record-fixtures.ts
// Starts the lab's vcsim alone (no engines: no VM runs a container), drives the client
// through login, inventory, a clone, a failing task, change tracking and faults, and
// writes one file per response: <method>[-<label>].xml.
import { spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { REPO_ROOT } from '@orangery/testing';
import { httpTransport, VsphereClient, type SoapTransport } from '@orangery/vsphere';
import { buildVcsim } from '../vcsim';

const OUT = join(REPO_ROOT, 'libs', 'vsphere', 'src', 'testing', 'fixtures');
const USER = 'fixture-user';
const PASSWORD = 'fixture-password';

const { binary } = await buildVcsim();
const dir = mkdtempSync(join(tmpdir(), 'vcsim-fixtures-'));
const child = spawn(binary, ['-listen', '127.0.0.1:0', '-datastore-dir', dir], {
  env: { PATH: '/usr/bin:/bin', TMPDIR: dir, VCSIM_USERNAME: USER, VCSIM_PASSWORD: PASSWORD },
  stdio: ['ignore', 'pipe', 'inherit'],
});
const url = await new Promise<string>((resolve) =>
  createInterface({ input: child.stdout! }).once('line', (l) => resolve((JSON.parse(l) as { url: string }).url)),
);

let label = '';
const http = httpTransport(new URL(url));
const recorded = new Set<string>();
const recording: SoapTransport = async (req) => {
  const res = await http(req);
  const name = `${req.method}${label ? `-${label}` : ''}`;
  if (!recorded.has(name)) {
    recorded.add(name);
    // The port changes per run; fixtures use a fixed one.
    writeFileSync(join(OUT, `${name}.xml`), res.body.replace(/127\.0\.0\.1:\d+/g, '127.0.0.1:8989'));
  }
  return res;
};

try {
  mkdirSync(OUT, { recursive: true });
  const c = new VsphereClient({ url, username: USER, password: PASSWORD, transport: recording, keepAliveMs: 0 });
  label = 'not-authenticated';
  await c.retrieveServiceContent();
  await c.currentTime().catch(() => undefined);
  label = '';
  await c.login();
  await c.currentTime();
  label = 'hosts';
  await c.inventory.hosts();
  label = 'clusters';
  await c.inventory.clusters();
  label = 'networks';
  await c.inventory.networks();
  label = 'datastores';
  await c.inventory.datastores();
  label = 'template-path';
  const template = (await c.vms.findByInventoryPath('/dc-lab/vm/templates/centos7-jdk8'))!;
  label = 'template';
  await c.vms.get(template);
  label = '';
  const folder = (await c.vms.findByInventoryPath('/dc-lab/vm/orangery'))!;
  const pool = (await c.inventory.clusters())[0]!.resourcePool!;
  label = 'clone';
  const vm = await c.vms.clone(template, { name: 'fixture-vm', folder, pool, extraConfig: { 'guestinfo.orangery.ip': '198.18.7.20' } });
  label = 'vm';
  await c.vms.get(vm);
  label = 'filter';
  await c.createFilter({ propSet: [{ type: 'VirtualMachine', pathSet: ['runtime.powerState'] }], objectSet: [{ obj: vm }] });
  label = 'initial';
  const first = await c.waitForUpdates('', { maxWaitSeconds: 2 });
  label = 'power-on';
  await c.vms.powerOn(vm);
  label = 'changed';
  await c.waitForUpdates(first!.version, { maxWaitSeconds: 2 });
  label = 'power-on-again';
  await c.vms.powerOn(vm).catch(() => undefined);
  label = 'bad-login';
  await new VsphereClient({ url, username: USER, password: 'wrong', transport: recording, keepAliveMs: 0 }).login().catch(() => undefined);
  label = '';
  await c.logout();
  console.log(`recorded ${recorded.size} responses in ${OUT}`);
} finally {
  child.kill('SIGTERM');
  rmSync(dir, { recursive: true, force: true });
}
