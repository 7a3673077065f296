import type Docker from 'dockerode';
import { invalidRequest } from '@orangery/contracts';
import { statfs } from 'node:fs/promises';
import { LABEL, type ContainerPlan } from '../domain/container-spec';
import type { Logger } from '@orangery/telemetry';
import type { Engine, EngineEvent, EngineFacts, EngineNetwork, ManagedContainer, NetworkSpec } from '../domain/ports';
import { loadDockerode } from './load-dockerode';

/** DOCKER_HOST (unix:///path, tcp://host:port) -> dockerode options. */
export function dockerOptions(dockerHost: string): Docker.DockerOptions {
  if (dockerHost.startsWith('unix://')) return { socketPath: dockerHost.slice('unix://'.length) };
  const u = new URL(dockerHost.replace(/^tcp:/, 'http:'));
  return { host: u.hostname, port: Number(u.port || 2375), protocol: 'http' };
}

const statusCode = (e: unknown): number | undefined => (e as { statusCode?: number }).statusCode;

/** The container engine through dockerode (Docker Engine API; Debian's daemon speaks 1.41). */
export class DockerEngine implements Engine {
  readonly docker: Docker;
  private readonly ensuring = new Map<string, Promise<void>>();

  constructor(
    dockerHost: string,
    /** told the container's PID and IP after each start it made (see GratuitousArp) */
    private readonly onStarted?: (pid: number, ip: string) => void,
  ) {
    const Dockerode = loadDockerode();
    this.docker = new Dockerode(dockerOptions(dockerHost));
  }

  async facts(): Promise<EngineFacts> {
    const [info, version] = await Promise.all([this.docker.info(), this.docker.version()]);
    let diskMb = 0;
    try {
      const fs = await statfs(info.DockerRootDir as string);
      diskMb = Math.floor((fs.blocks * fs.bsize) / (1024 * 1024));
    } catch {
      // the engine's root dir is not visible from here (remote engine): disk unknown
    }
    return {
      cpus: Number(info.NCPU),
      memoryMb: Math.floor(Number(info.MemTotal) / (1024 * 1024)),
      diskMb,
      version: `${version.Version} (API ${version.ApiVersion})`,
    };
  }

  async listManaged(withSize = false): Promise<ManagedContainer[]> {
    const list = await this.docker.listContainers({
      all: true,
      size: withSize,
      filters: JSON.stringify({ label: [`${LABEL.managed}=true`] }),
    });
    // The list has no exit codes; inspect the few that are not running.
    return Promise.all(
      list.map(async (c) => {
        const base: ManagedContainer = {
          id: c.Id,
          image: c.Image,
          labels: c.Labels ?? {},
          engineState: c.State,
          exitCode: undefined,
          oomKilled: false,
          ...(withSize ? { sizeRw: (c as { SizeRw?: number }).SizeRw ?? 0 } : {}),
        };
        if (c.State === 'running' || c.State === 'created') return base;
        try {
          const i = await this.docker.getContainer(c.Id).inspect();
          return { ...base, exitCode: i.State.ExitCode, oomKilled: i.State.OOMKilled };
        } catch {
          return base;
        }
      }),
    );
  }

  async findByInstance(instanceId: string): Promise<ManagedContainer | undefined> {
    const list = await this.docker.listContainers({
      all: true,
      filters: JSON.stringify({ label: [`${LABEL.managed}=true`, `${LABEL.instanceId}=${instanceId}`] }),
    });
    const c = list[0];
    if (!c) return undefined;
    try {
      const i = await this.docker.getContainer(c.Id).inspect();
      return {
        id: i.Id,
        image: i.Config.Image,
        labels: i.Config.Labels ?? {},
        engineState: i.State.Status,
        exitCode: i.State.Status === 'exited' || i.State.Status === 'dead' ? i.State.ExitCode : undefined,
        oomKilled: i.State.OOMKilled,
      };
    } catch (e) {
      if (statusCode(e) === 404) return undefined;
      throw e;
    }
  }

  async hasImage(image: string): Promise<boolean> {
    try {
      await this.docker.getImage(image).inspect();
      return true;
    } catch (e) {
      if (statusCode(e) === 404) return false;
      // The contract's image pattern is looser than Docker's reference grammar ('2/_@'
      // passes it): the engine's 400 is the caller's error, not an INTERNAL (fuzz suite).
      if (statusCode(e) === 400) throw invalidRequest('image', `is not an image reference the engine accepts (${(e as Error).message})`);
      throw e;
    }
  }

  /**
   * One network creation per parent interface at a time: two creates racing on a fresh host
   * (two instances started at once) made the second fail before the first one's network
   * existed (the macvlan driver refuses a parent already being taken), an INTERNAL error
   * the scheduler then retried elsewhere. Callers for the same parent share the one in flight.
   */
  ensureNetwork(spec: NetworkSpec): Promise<void> {
    const inFlight = this.ensuring.get(spec.parent);
    if (inFlight) return inFlight.catch(() => undefined).then(() => this.ensureNetwork(spec));
    const p = this.ensureNetworkNow(spec).finally(() => this.ensuring.delete(spec.parent));
    this.ensuring.set(spec.parent, p);
    return p;
  }

  private async ensureNetworkNow(spec: NetworkSpec): Promise<void> {
    try {
      await this.docker.getNetwork(spec.name).inspect();
      return;
    } catch (e) {
      if (statusCode(e) !== 404) throw e;
    }
    try {
      // The macvlan driver creates <uplink>.<vlan> itself when the parent names a VLAN.
      await this.docker.createNetwork({
        Name: spec.name,
        Driver: 'macvlan',
        CheckDuplicate: true,
        Options: { parent: spec.parent, macvlan_mode: 'bridge' },
        IPAM: { Driver: 'default', Config: [{ Subnet: spec.subnet, Gateway: spec.gateway }] },
        Labels: { [LABEL.managed]: 'true' },
      });
    } catch (e) {
      // Another create raced us: fine if the network is there now.
      await this.docker
        .getNetwork(spec.name)
        .inspect()
        .catch(() => {
          throw e;
        });
    }
  }

  async create(plan: ContainerPlan, network: string): Promise<string> {
    const c = await this.docker.createContainer({
      name: plan.name,
      Image: plan.image,
      Hostname: plan.hostname,
      Labels: plan.labels,
      Env: plan.env,
      ...(plan.cmd ? { Cmd: plan.cmd } : {}),
      MacAddress: plan.macAddress,
      HostConfig: {
        NetworkMode: network,
        Memory: plan.memoryBytes,
        MemorySwap: plan.memoryBytes, // no swap at all
        MemorySwappiness: 0,
        CpusetCpus: plan.cpusetCpus,
        NanoCpus: plan.nanoCpus,
        CpuShares: plan.cpuShares,
        // Confinement (docs/docker-agent.md "Container hardening"): no gaining privileges
        // through setuid binaries, a bounded number of tasks, no raw sockets (a tenant
        // answering ARP for others' IPs) nor the other defaults a service never needs.
        SecurityOpt: plan.security.noNewPrivileges ? ['no-new-privileges'] : [],
        PidsLimit: plan.security.pidsLimit,
        CapDrop: plan.security.capDrop,
        // `no`: the agent restarts failed instances itself (AgentService.restartAfterFailure).
        // Any engine policy, on-failure included, restarts containers when the daemon
        // restarts, which after a failover would put an old copy of a moved IP on the wire.
        RestartPolicy: { Name: 'no' },
        LogConfig: { Type: 'json-file', Config: { 'max-size': '10m', 'max-file': '3' } },
      },
      NetworkingConfig: {
        EndpointsConfig: { [network]: { IPAMConfig: { IPv4Address: plan.ip }, MacAddress: plan.macAddress } },
      },
    });
    return c.id;
  }

  async start(id: string): Promise<void> {
    try {
      await this.docker.getContainer(id).start();
    } catch (e) {
      if (statusCode(e) !== 304) throw e; // 304: already running
      return;
    }
    if (this.onStarted) {
      const i = await this.docker
        .getContainer(id)
        .inspect()
        .catch(() => undefined);
      const ip = i?.Config.Labels?.[LABEL.ip];
      if (i?.State.Pid && ip) this.onStarted(i.State.Pid, ip);
    }
  }

  async stop(id: string, timeoutSeconds: number): Promise<void> {
    try {
      await this.docker.getContainer(id).stop({ t: timeoutSeconds });
    } catch (e) {
      if (statusCode(e) !== 304 && statusCode(e) !== 404) throw e;
    }
  }

  async remove(id: string): Promise<void> {
    try {
      await this.docker.getContainer(id).remove({ force: true, v: true });
    } catch (e) {
      if (statusCode(e) !== 404) throw e;
    }
  }

  /** The macvlan networks the agent made (labelled managed), with their parent and gateway. */
  async listNetworks(): Promise<EngineNetwork[]> {
    const list = await this.docker.listNetworks({ filters: { label: [`${LABEL.managed}=true`], driver: ['macvlan'] } });
    const out: EngineNetwork[] = [];
    for (const n of list) {
      const parent = n.Options?.['parent'];
      if (parent) out.push({ name: n.Name, parent, gateway: n.IPAM?.Config?.find((c) => c.Gateway)?.Gateway });
    }
    return out;
  }

  async *events(signal: AbortSignal): AsyncGenerator<EngineEvent> {
    if (signal.aborted) return;
    const stream = (await this.docker.getEvents({
      filters: JSON.stringify({ type: ['container'], label: [`${LABEL.managed}=true`], event: Object.keys(FOLLOWED) }),
    })) as NodeJS.ReadableStream & { destroy?: () => void };
    const abort = (): void => stream.destroy?.();
    signal.addEventListener('abort', abort, { once: true });
    try {
      for await (const line of linesOf(stream as AsyncIterable<Buffer>)) {
        const e = engineEventOf(line);
        if (e) yield e;
      }
    } catch (err) {
      if (!signal.aborted) throw err;
    } finally {
      signal.removeEventListener('abort', abort);
      stream.destroy?.();
    }
  }

  async usage(id: string): Promise<{ memoryBytes: number; cpuNanos: number }> {
    const s = (await this.docker.getContainer(id).stats({ stream: false, 'one-shot': true } as never)) as unknown as {
      memory_stats?: { usage?: number; stats?: { inactive_file?: number } };
      cpu_stats?: { cpu_usage?: { total_usage?: number } };
    };
    const mem = (s.memory_stats?.usage ?? 0) - (s.memory_stats?.stats?.inactive_file ?? 0);
    return { memoryBytes: Math.max(0, mem), cpuNanos: s.cpu_stats?.cpu_usage?.total_usage ?? 0 };
  }
}

/** The engine's actions we follow, and what they are called in the port. */
const FOLLOWED = { start: 'start', die: 'die', oom: 'oom', destroy: 'destroy' } as const;

/**
 * One line of the engine's event stream (`GET /events`, newline-delimited JSON) as a port
 * event; undefined for a line that is not JSON or not a container event we follow.
 */
export function engineEventOf(line: string): EngineEvent | undefined {
  let raw: { id?: unknown; Action?: unknown; Actor?: { Attributes?: Record<string, string> } };
  try {
    raw = JSON.parse(line) as typeof raw;
  } catch {
    return undefined;
  }
  const kind = typeof raw.Action === 'string' ? FOLLOWED[raw.Action as keyof typeof FOLLOWED] : undefined;
  if (!kind || typeof raw.id !== 'string' || !raw.id) return undefined;
  const labels = { ...(raw.Actor?.Attributes ?? {}) };
  if (kind !== 'die') return { kind, containerId: raw.id, labels };
  const code = labels['exitCode'];
  return { kind, containerId: raw.id, labels, exitCode: code !== undefined && code !== '' && Number.isFinite(Number(code)) ? Number(code) : undefined };
}

/** Splits a byte stream into its lines (the last one, unfinished, waits for the next chunk). */
export async function* linesOf(chunks: AsyncIterable<Buffer | string>): AsyncGenerator<string> {
  let buf = '';
  for await (const chunk of chunks) {
    buf += chunk.toString();
    let nl: number;
    while ((nl = buf.indexOf('\n')) >= 0) {
      const line = buf.slice(0, nl).trim();
      buf = buf.slice(nl + 1);
      if (line) yield line;
    }
  }
}

/**
 * The engine's facts, waiting as long as the engine is down (not a configuration error):
 * the agent's capacity and CPU reservations are computed from what the engine reports.
 */
export async function waitForEngineFacts(engine: Engine, logger: Logger, dockerHost: string): Promise<EngineFacts> {
  for (let delay = 250; ; delay = Math.min(delay * 2, 5_000)) {
    try {
      return await engine.facts();
    } catch (err) {
      logger.warn({ err: String(err), dockerHost, retryInMs: delay }, 'container engine not reachable yet; retrying');
      await new Promise((r) => setTimeout(r, delay));
    }
  }
}
