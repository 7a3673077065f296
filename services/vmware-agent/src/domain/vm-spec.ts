import { createHash } from 'node:crypto';
import { HOST_ID_PATTERN, memoryLimitMb, type VmCreateCommand } from '@orangery/contracts';
import { netmaskOf } from '@orangery/netaddr';
import type { VmPlan } from './ports';

/**
 * The VM's labels: extraConfig keys under `guestinfo.orangery.` (a real guest reads them
 * with `vmware-rpctool "info-get guestinfo.orangery.ip"`; vcsim's container-backed VMs see
 * them as VMX_GUESTINFO_ORANGERY_* variables). They are the agent's only state: adoption
 * after a restart, idempotency and the heartbeat's `allocated` all read them.
 */
export const GUESTINFO = 'guestinfo.orangery.';
export const LABEL = {
  managed: `${GUESTINFO}managed`,
  instanceId: `${GUESTINFO}instanceId`,
  env: `${GUESTINFO}env`,
  app: `${GUESTINFO}app`,
  slot: `${GUESTINFO}slot`,
  ip: `${GUESTINFO}ip`,
  mac: `${GUESTINFO}mac`,
  prefixLength: `${GUESTINFO}prefixLength`,
  gateway: `${GUESTINFO}gateway`,
  vlan: `${GUESTINFO}vlan`,
  hostId: `${GUESTINFO}hostId`,
  template: `${GUESTINFO}template`,
  cpu: `${GUESTINFO}cpu`,
  memoryMb: `${GUESTINFO}memoryMb`,
  heapMb: `${GUESTINFO}heapMb`,
  diskMb: `${GUESTINFO}diskMb`,
  specHash: `${GUESTINFO}specHash`,
} as const;

/** The values ORANGERY_VCENTER_EXTRA_CONFIG may hold, filled per VM. */
export const PLACEHOLDERS = ['ip', 'mac', 'prefixLength', 'gateway', 'instanceId', 'env', 'app', 'slot'] as const;
export type Placeholder = (typeof PLACEHOLDERS)[number];
const PLACEHOLDER_RE = /\{([A-Za-z]+)\}/g;
/** VMX keys: what vSphere accepts in extraConfig, and nothing a shell or XML could misread. */
export const EXTRA_CONFIG_KEY = /^[A-Za-z][A-Za-z0-9_.:-]{0,127}$/;

const MAX_VM_NAME = 80;

/**
 * A platform host id for an ESXi host from vCenter's name: lower-cased, every run of other
 * characters a hyphen, at most 63 characters (a hash keeps long names apart), e.g.
 * `esx01.lab.local` -> `esx01-lab-local`.
 */
export function hostIdFromName(name: string): string {
  let id = name
    .toLowerCase()
    .replace(/[^a-z0-9]+/g, '-')
    .replace(/^-+|-+$/g, '');
  if (id === '') id = `esxi-${shortHash(name)}`;
  if (id.length > 63) id = `${id.slice(0, 54).replace(/-+$/, '')}-${shortHash(name)}`;
  if (!new RegExp(HOST_ID_PATTERN).test(id)) id = `h${id}`.slice(0, 63);
  return id;
}

/** The VM's name: `orangery-<env>-<app>-<slot>` (vCenter allows 80 characters; a hash keeps long ones unique). */
export function vmNameOf(instanceId: string): string {
  const [env = '', app = '', slot = '0'] = instanceId.split(':');
  const name = `orangery-${env}-${app}-${slot}`;
  if (name.length <= MAX_VM_NAME) return name;
  return `${name.slice(0, MAX_VM_NAME - 9)}-${shortHash(instanceId)}`;
}

function shortHash(s: string): string {
  return createHash('sha256').update(s).digest('hex').slice(0, 8);
}

/** Everything that makes two creates of one instance id the same VM. */
export function specHash(cmd: VmCreateCommand, hostId: string): string {
  const material = JSON.stringify([
    hostId,
    cmd.template,
    cmd.resources.cpu,
    cmd.resources.memoryMb,
    cmd.resources.heapMb ?? null,
    cmd.resources.diskMb ?? null,
    [cmd.network.ip, cmd.network.mac, cmd.network.prefixLength, cmd.network.gateway, cmd.network.vlan],
  ]);
  return createHash('sha256').update(material).digest('hex').slice(0, 16);
}

/** Checks ORANGERY_VCENTER_EXTRA_CONFIG; returns the problem, or undefined when usable. */
export function extraConfigProblem(extra: Record<string, unknown>): string | undefined {
  for (const [key, value] of Object.entries(extra)) {
    if (!EXTRA_CONFIG_KEY.test(key)) return `key '${key}' is not a VMX key (letters, digits, _ . : -)`;
    if (key.startsWith(GUESTINFO)) return `key '${key}': ${GUESTINFO}* keys are the agent's own`;
    if (typeof value !== 'string') return `value of '${key}' must be a string`;
    if ([...value].some((ch) => ch.charCodeAt(0) < 0x20)) return `value of '${key}' holds control characters`;
    for (const m of value.matchAll(PLACEHOLDER_RE)) {
      if (!(PLACEHOLDERS as readonly string[]).includes(m[1]!))
        return `value of '${key}': unknown placeholder {${m[1]}} (known: ${PLACEHOLDERS.map((p) => `{${p}}`).join(' ')})`;
    }
  }
  return undefined;
}

export function fillPlaceholders(template: string, values: Readonly<Record<Placeholder, string>>): string {
  return template.replace(PLACEHOLDER_RE, (whole, name: string) => ((PLACEHOLDERS as readonly string[]).includes(name) ? values[name as Placeholder] : whole));
}

/**
 * The clone of one create command: name, CPU (whole vCPUs, at least 1), memory (the JVM
 * rule: heap plus head room, as the docker-agent limits containers), the NIC's manual
 * MAC, a fixed-IP customization, and extraConfig = labels + the configured extra keys.
 */
export function planVm(cmd: VmCreateCommand, hostId: string, extraConfig: Readonly<Record<string, string>>): VmPlan {
  const n = cmd.network;
  const values: Record<Placeholder, string> = {
    ip: n.ip,
    mac: n.mac,
    prefixLength: String(n.prefixLength),
    gateway: n.gateway,
    instanceId: cmd.instanceId,
    env: cmd.env,
    app: cmd.app,
    slot: String(cmd.slot),
  };
  const name = vmNameOf(cmd.instanceId);
  const labels: Record<string, string> = {
    [LABEL.managed]: 'true',
    [LABEL.instanceId]: cmd.instanceId,
    [LABEL.env]: cmd.env,
    [LABEL.app]: cmd.app,
    [LABEL.slot]: String(cmd.slot),
    [LABEL.ip]: n.ip,
    [LABEL.mac]: n.mac,
    [LABEL.prefixLength]: String(n.prefixLength),
    [LABEL.gateway]: n.gateway,
    [LABEL.vlan]: String(n.vlan),
    [LABEL.hostId]: hostId,
    // templates may hold spaces; labels stay free of anything a shell would split
    [LABEL.template]: encodeURIComponent(cmd.template),
    [LABEL.cpu]: String(cmd.resources.cpu),
    [LABEL.memoryMb]: String(cmd.resources.memoryMb),
    ...(cmd.resources.heapMb !== undefined ? { [LABEL.heapMb]: String(cmd.resources.heapMb) } : {}),
    ...(cmd.resources.diskMb !== undefined ? { [LABEL.diskMb]: String(cmd.resources.diskMb) } : {}),
    [LABEL.specHash]: specHash(cmd, hostId),
  };
  const extra = Object.fromEntries(Object.entries(extraConfig).map(([k, v]) => [k, fillPlaceholders(v, values)]));
  return {
    name,
    template: cmd.template,
    numCpus: Math.max(1, Math.ceil(cmd.resources.cpu)),
    memoryMb: memoryLimitMb(cmd.resources.memoryMb, cmd.resources.heapMb),
    vlan: n.vlan,
    mac: n.mac,
    // Locally administered MACs (Orangery's 02:4f:...) are outside VMware's static range:
    // a real vCenter refuses them on the NIC unless its MAC check is off.
    extraConfig: { 'ethernet0.checkMACAddress': 'FALSE', ...extra, ...labels },
    customization: { hostName: `${cmd.app}-${cmd.slot}`.slice(0, 63).replace(/-+$/, ''), ip: n.ip, subnetMask: netmaskOf(n.prefixLength), gateway: n.gateway },
  };
}

/** The platform's view of a VM's labels (undefined for VMs that are not Orangery's). */
export interface VmLabels {
  instanceId: string;
  env: string;
  app: string;
  slot: number;
  hostId: string;
  ip: string;
  mac: string;
  vlan: number;
  template: string;
  cpu: number;
  memoryMb: number;
  heapMb: number | undefined;
  diskMb: number | undefined;
  specHash: string;
}

export function labelsOf(extraConfig: Readonly<Record<string, string>>): VmLabels | undefined {
  const l = extraConfig;
  if (l[LABEL.managed] !== 'true' || !l[LABEL.instanceId]) return undefined;
  const num = (k: string) => (l[k] !== undefined && l[k] !== '' ? Number(l[k]) : undefined);
  let template = l[LABEL.template] ?? '';
  try {
    template = decodeURIComponent(template);
  } catch {
    /* keep it as it is */
  }
  return {
    instanceId: l[LABEL.instanceId],
    env: l[LABEL.env] ?? '',
    app: l[LABEL.app] ?? '',
    slot: num(LABEL.slot) ?? 0,
    hostId: l[LABEL.hostId] ?? '',
    ip: l[LABEL.ip] ?? '',
    mac: l[LABEL.mac] ?? '',
    vlan: num(LABEL.vlan) ?? 0,
    template,
    cpu: num(LABEL.cpu) ?? 0,
    memoryMb: num(LABEL.memoryMb) ?? 0,
    heapMb: num(LABEL.heapMb),
    diskMb: num(LABEL.diskMb),
    specHash: l[LABEL.specHash] ?? '',
  };
}
