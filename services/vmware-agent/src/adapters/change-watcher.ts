import { asBoolean, asMoRef, extraConfigOf, asString, type MoRef, type VsphereClient } from '@orangery/vsphere';
import type { ChangeHandlers, VmChange } from '../domain/ports';

/**
 * vCenter's changes through the PropertyCollector (WaitForUpdatesEx): VMs' name, power
 * state, guest IP and labels, hosts' connection state. Two container views, one per type: vcsim 0.24 panics on
 * a destroyed VM when one filter covers VMs and hosts from the root folder. Filters belong
 * to the session: after an error or a re-login they are made again and the first update
 * set (everything, as `enter`) becomes a resync.
 */
export class ChangeWatcher {
  private stopped = false;

  constructor(
    private readonly client: VsphereClient,
    private readonly roots: { vms: MoRef; hosts: MoRef },
    private readonly handlers: ChangeHandlers,
    private readonly waitSeconds = 10,
  ) {}

  stop(): void {
    this.stopped = true;
  }

  async run(): Promise<void> {
    while (!this.stopped) {
      const views: MoRef[] = [];
      const filters: MoRef[] = [];
      try {
        const generation = this.client.sessionGeneration;
        const vmView = await this.view(this.roots.vms, 'VirtualMachine');
        views.push(vmView);
        const hostView = await this.view(this.roots.hosts, 'HostSystem');
        views.push(hostView);
        filters.push(
          await this.client.createFilter({
            propSet: [{ type: 'VirtualMachine', pathSet: ['name', 'config.template', 'runtime.powerState', 'guest.ipAddress', 'config.extraConfig'] }],
            objectSet: [viewSet(vmView)],
          }),
        );
        filters.push(
          await this.client.createFilter({ propSet: [{ type: 'HostSystem', pathSet: ['runtime.connectionState'] }], objectSet: [viewSet(hostView)] }),
        );
        let version = '';
        // The first update set is the full picture, but vCenter may send it in pieces
        // (`truncated`): a resync on the first piece alone would report every VM of the
        // others removed. So the pieces are gathered, merged per VM, and resynced once.
        let initial: { vms: Map<string, VmChange>; hosts: Map<string, string> } | undefined = { vms: new Map(), hosts: new Map() };
        while (!this.stopped && generation === this.client.sessionGeneration) {
          const set = await this.client.waitForUpdates(version, { maxWaitSeconds: this.waitSeconds });
          if (!set) continue;
          const vms: VmChange[] = [];
          const hosts: { ref: string; connectionState: string }[] = [];
          for (const f of set.filterSets) {
            for (const o of f.objects) {
              if (o.obj.type === 'HostSystem') {
                const st = o.changes.find((c) => c.name === 'runtime.connectionState');
                if (st) hosts.push({ ref: o.obj.value, connectionState: asString(st.val) ?? 'unknown' });
                continue;
              }
              if (o.obj.type !== 'VirtualMachine') continue;
              const change: VmChange = { ref: o.obj.value, kind: o.kind };
              for (const c of o.changes) {
                if (c.name === 'name') change.name = asString(c.val);
                if (c.name === 'config.template') change.template = asBoolean(c.val);
                if (c.name === 'guest.ipAddress') change.guestIp = asString(c.val) || undefined;
                if (c.name === 'runtime.powerState') change.powerState = asString(c.val);
                if (c.name === 'config.extraConfig') change.extraConfig = extraConfigOf(c.val);
              }
              vms.push(change);
            }
          }
          version = set.version;
          if (initial) {
            for (const h of hosts) initial.hosts.set(h.ref, h.connectionState);
            for (const v of vms) {
              if (v.kind === 'leave') initial.vms.delete(v.ref);
              else initial.vms.set(v.ref, { ...initial.vms.get(v.ref), ...definedOf(v), kind: 'enter' });
            }
            if (set.truncated) continue;
            const whole = initial;
            initial = undefined;
            this.handlers.resync(
              [...whole.vms.values()],
              [...whole.hosts].map(([ref, connectionState]) => ({ ref, connectionState })),
            );
            continue;
          }
          for (const h of hosts) this.handlers.host(h.ref, h.connectionState);
          for (const v of vms) this.handlers.vm(v);
        }
      } catch (err) {
        if (this.stopped) return;
        this.handlers.error(err);
        await new Promise((r) => setTimeout(r, 1_000));
      } finally {
        // views die with the session anyway; best effort when it is still alive
        for (const f of filters) void this.client.destroyFilter(f).catch(() => undefined);
        for (const v of views) void this.client.call('DestroyView', v).catch(() => undefined);
      }
    }
  }

  private async view(root: MoRef, type: string): Promise<MoRef> {
    const ref = asMoRef(
      await this.client.callValue('CreateContainerView', this.client.serviceContent.viewManager, { container: root, type: [type], recursive: true }),
    );
    if (!ref) throw new Error('CreateContainerView returned no view');
    return ref;
  }
}

/** A change's fields that are set (a later piece must not blank what an earlier one said); `guestIp` kept when present. */
function definedOf(v: VmChange): VmChange {
  const out: VmChange = { ref: v.ref, kind: v.kind };
  for (const [k, val] of Object.entries(v) as [keyof VmChange, unknown][])
    if (val !== undefined || k === 'guestIp') (out as unknown as Record<string, unknown>)[k] = val;
  return out;
}

function viewSet(view: MoRef) {
  return { obj: view, skip: true, selectSet: [{ name: 'view', type: 'ContainerView', path: 'view', skip: false }] };
}
