import type { Vm } from './ports';

/**
 * What vCenter's change stream (WaitForUpdatesEx) says about the datacenter's VMs, kept
 * current by the runtime, plus what the agent itself just did (write-through). Creates
 * read it instead of listing every VM: a listing reads every VM's properties, and vCenter
 * (vcsim, at least) holds a VM's lock for the whole of a power-on, so a listing waits for
 * every power-on in flight. `ready` only between a full resync and the next break of the
 * stream; otherwise callers list.
 */
export class VmIndex {
  private readonly byRef = new Map<string, Vm>();
  private synced = false;

  get ready(): boolean {
    return this.synced;
  }

  /** A full picture: replaces everything. */
  reset(vms: readonly Vm[]): void {
    this.byRef.clear();
    for (const v of vms) this.byRef.set(v.ref, v);
    this.synced = true;
  }

  /** The change stream broke: nothing here is trusted until the next reset. */
  invalidate(): void {
    this.synced = false;
  }

  upsert(vm: Vm): void {
    this.byRef.set(vm.ref, vm);
  }

  patch(ref: string, change: Partial<Omit<Vm, 'ref'>>): void {
    const before = this.byRef.get(ref);
    this.byRef.set(ref, {
      ref,
      name: change.name ?? before?.name ?? ref,
      powerState: change.powerState ?? before?.powerState ?? 'poweredOff',
      template: change.template ?? before?.template ?? false,
      guestIp: 'guestIp' in change ? change.guestIp : before?.guestIp,
      extraConfig: change.extraConfig ?? before?.extraConfig ?? {},
    });
  }

  remove(ref: string): void {
    this.byRef.delete(ref);
  }

  list(): Vm[] {
    return [...this.byRef.values()];
  }
}
