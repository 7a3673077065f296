// The lab's Docker Swarm: N nodes on the fabric, each a dockerd in its own network
// namespace (and UTS namespace, so every node has its own hostname), formed with
// `swarm init` / `swarm join` over their fabric addresses. See README.md ("Docker Swarm").
//
// Layout of node i (1-based; engine run dir s<SWARM_BASE_INDEX + i> so the lab's generic
// engine sweep covers a crashed run):
//
//   netns olab-sw<i>:  eth0 = <fabric address>/16 (veth; root side olab-sw<i>f on olab-fab)
//                      dockerd -H unix:///run/olab/s<k>/docker.sock (hostname olab-sw<i>)
//                      macvlan parent for tasks: eth0 (ORANGERY_SWARM_UPLINK)
//   /run/olab/swarm/olab-sw<i>.sock -> /run/olab/s<k>/docker.sock (the engine by hostname)
import { existsSync, mkdirSync, symlinkSync, unlinkSync } from 'node:fs';
import { join } from 'node:path';
import { assertLabName, LAB_PREFIX, LAB_RUN_DIR, sleep } from './sys';

/** Swarm node engines use run dirs s<SWARM_BASE_INDEX + i> (servers use s1..s16, the ESXi engine s17). */
export const SWARM_BASE_INDEX = 17;
export const MAX_SWARM_NODES = 8;
/** The macvlan parent inside every node's namespace (ORANGERY_SWARM_UPLINK). */
export const SWARM_UPLINK = 'eth0';
/** Directory of one symlink per node, named by hostname, to the node's engine socket. */
export const SWARM_SOCKET_DIR = join(LAB_RUN_DIR, 'swarm');
/** unix:// URL template of a node's engine by its hostname (e.g. ORANGERY_SWARM_NODE_ENGINES). */
export const SWARM_NODE_ENGINE_TEMPLATE = `unix://${SWARM_SOCKET_DIR}/{hostname}.sock`;

/** Fabric address of swarm node i: 198.18.0.201.. (inside the lab pool's reserved 198.18.0.2-255). */
export const swarmNodeAddress = (i: number) => `198.18.0.${200 + i}`;

/** One swarm node: a LabServer-like engine living in its own network namespace. */
export interface LabSwarmNode {
  /** = hostname, e.g. 'olab-sw1' (the lab's name for it; Lab.server() accepts it). */
  readonly id: string;
  /** The node's hostname (swarm's Description.Hostname), e.g. 'olab-sw1'. */
  readonly hostname: string;
  /** Engine index (run dir s<index>): SWARM_BASE_INDEX + position. */
  readonly index: number;
  /** 1-based position in the swarm. */
  readonly node: number;
  /** Network namespace of the node's dockerd (and of its containerd; not of its tasks). */
  readonly netns: string;
  /** The node's address on the fabric (prefix 16): swarm's advertise/listen address. */
  readonly address: string;
  /** DOCKER_HOST of the node's engine, e.g. unix:///run/olab/s18/docker.sock. */
  readonly dockerHost: string;
  readonly socketPath: string;
  /** unix:///run/olab/swarm/<hostname>.sock: the same engine, found by hostname (a symlink). */
  readonly engineByHostname: string;
  /** The macvlan parent inside the node's namespace: 'eth0' (not a root-namespace interface). */
  readonly uplink: string;
  /** The root-namespace end of its veth, on the fabric, e.g. 'olab-sw1f' (Lab.cutUplink sets it down: node off the network). */
  readonly fabricPort: string;
  readonly dataRoot: string;
  readonly execRoot: string;
  readonly pidFile: string;
  readonly logFile: string;
  readonly cgroupParent: string;
}

export interface LabSwarmOptions {
  /** 1..MAX_SWARM_NODES; node 1 is the manager (the only one unless `managers` says more). */
  nodes: number;
  /** How many nodes are managers (default 1; 3 for a quorum that survives one manager). */
  managers?: number;
}

/** What the swarm-agent needs to reach the lab's swarm, and what a test needs to steer it. */
export interface LabSwarm {
  readonly nodes: readonly LabSwarmNode[];
  /** Node 1: `swarm init` ran there. */
  readonly manager: LabSwarmNode;
  /** DOCKER_HOST of the manager's engine (ORANGERY_SWARM_MANAGER). */
  readonly managerUrl: string;
  /** The macvlan parent name on every node ('eth0', ORANGERY_SWARM_UPLINK). */
  readonly uplink: string;
  /** `unix:///run/olab/swarm/{hostname}.sock` (ORANGERY_SWARM_NODE_ENGINES as a template). */
  readonly nodeEngineTemplate: string;
  /** `olab-sw1=unix:///run/olab/s18/docker.sock,olab-sw2=...` (ORANGERY_SWARM_NODE_ENGINES as pairs). */
  readonly nodeEngines: string;
  /** Swarm node id by hostname. */
  readonly nodeIds: Readonly<Record<string, string>>;
}

export function swarmNodeSpec(i: number, labDir: string): LabSwarmNode {
  const hostname = `${LAB_PREFIX}-sw${i}`;
  const index = SWARM_BASE_INDEX + i;
  const runDir = join(LAB_RUN_DIR, `s${index}`);
  const spec: LabSwarmNode = {
    id: hostname,
    hostname,
    index,
    node: i,
    netns: hostname,
    address: swarmNodeAddress(i),
    dockerHost: `unix://${runDir}/docker.sock`,
    socketPath: `${runDir}/docker.sock`,
    engineByHostname: SWARM_NODE_ENGINE_TEMPLATE.replace('{hostname}', hostname),
    uplink: SWARM_UPLINK,
    fabricPort: `${hostname}f`,
    dataRoot: join(labDir, `s${index}`, 'data'),
    execRoot: `${runDir}/exec`,
    pidFile: `${runDir}/docker.pid`,
    logFile: join(labDir, `s${index}`, 'dockerd.log'),
    cgroupParent: `/${hostname}`,
  };
  assertLabName(spec.netns);
  assertLabName(spec.fabricPort);
  return spec;
}

/** The symlink /run/olab/swarm/<hostname>.sock -> the node's engine socket. */
export function linkNodeSocket(n: LabSwarmNode): void {
  mkdirSync(SWARM_SOCKET_DIR, { recursive: true });
  const link = join(SWARM_SOCKET_DIR, `${n.hostname}.sock`);
  if (existsSync(link)) unlinkSync(link);
  symlinkSync(n.socketPath, link);
}

type Docker = (node: LabSwarmNode, argv: readonly string[], opts?: { timeoutMs?: number }) => Promise<string>;

/** `swarm init` on nodes[0], `join` of the others (the first `managers` as managers); returns node ids by hostname. */
export async function formSwarm(docker: Docker, nodes: readonly LabSwarmNode[], managers: number): Promise<Record<string, string>> {
  const [first, ...rest] = nodes;
  if (!first) throw new Error('a swarm needs at least one node');
  await docker(first, ['swarm', 'init', '--advertise-addr', first.address, '--listen-addr', `${first.address}:2377`], { timeoutMs: 60_000 });
  const token = async (role: 'manager' | 'worker') => (await docker(first, ['swarm', 'join-token', '-q', role])).trim();
  const [managerToken, workerToken] = [await token('manager'), await token('worker')];
  // One at a time: managers joining concurrently may race for raft membership.
  for (const [k, n] of rest.entries()) {
    const t = k + 1 < managers ? managerToken : workerToken;
    await docker(n, ['swarm', 'join', '--token', t, '--advertise-addr', n.address, '--listen-addr', `${n.address}:2377`, `${first.address}:2377`], {
      timeoutMs: 60_000,
    });
  }
  const ids: Record<string, string> = {};
  const deadline = Date.now() + 60_000;
  for (;;) {
    const lines = (await docker(first, ['node', 'ls', '--format', '{{.ID}} {{.Hostname}} {{.Status}}'])).split('\n').filter(Boolean);
    for (const l of lines) {
      const [id, host, status] = l.split(' ');
      if (id && host && status === 'Ready') ids[host] = id;
    }
    if (nodes.every((n) => ids[n.hostname])) return ids;
    if (Date.now() > deadline) throw new Error(`swarm nodes not all Ready after 60 s: ${lines.join('; ')}`);
    await sleep(250);
  }
}
