import { describe, expect, it } from 'vitest';
import { MoRef, type UpdateSet, type VsphereClient } from '@orangery/vsphere';
import type { VmChange } from '../domain/ports';
import { ChangeWatcher } from './change-watcher';

const vmUpdate = (ref: string, kind: 'enter' | 'modify' | 'leave', changes: Record<string, unknown>) => ({
  kind,
  obj: new MoRef('VirtualMachine', ref),
  changes: Object.entries(changes).map(([name, val]) => ({ name, op: 'assign' as const, val: val as never })),
});

/** A client whose WaitForUpdatesEx answers the scripted update sets, then stops the watcher. */
function scripted(sets: UpdateSet[], onDone: () => void): VsphereClient {
  const queue = [...sets];
  return {
    sessionGeneration: 1,
    serviceContent: { viewManager: new MoRef('ViewManager', 'ViewManager') },
    callValue: async () => new MoRef('ContainerView', 'view-1'),
    call: async () => undefined,
    createFilter: async () => new MoRef('PropertyFilter', 'f-1'),
    destroyFilter: async () => undefined,
    waitForUpdates: async () => {
      const next = queue.shift();
      if (!next) onDone();
      return next;
    },
  } as unknown as VsphereClient;
}

describe('ChangeWatcher', () => {
  it('a first update set sent in pieces (truncated) is one resync of the whole, not a resync of the first piece', async () => {
    const resyncs: VmChange[][] = [];
    const changes: VmChange[] = [];
    const done = { stop: (): void => undefined };
    const client = scripted(
      [
        {
          version: '1',
          truncated: true,
          filterSets: [{ filter: new MoRef('PropertyFilter', 'f-1'), objects: [vmUpdate('vm-1', 'enter', { name: 'a', 'runtime.powerState': 'poweredOn' })] }],
        },
        {
          version: '2',
          truncated: false,
          filterSets: [
            {
              filter: new MoRef('PropertyFilter', 'f-1'),
              objects: [
                vmUpdate('vm-2', 'enter', { name: 'b', 'runtime.powerState': 'poweredOn' }),
                vmUpdate('vm-1', 'modify', { 'guest.ipAddress': '198.18.20.1' }),
              ],
            },
          ],
        },
        {
          version: '3',
          truncated: false,
          filterSets: [{ filter: new MoRef('PropertyFilter', 'f-1'), objects: [vmUpdate('vm-2', 'modify', { 'runtime.powerState': 'poweredOff' })] }],
        },
      ],
      () => done.stop(),
    );
    const watcher = new ChangeWatcher(
      client,
      { vms: new MoRef('Folder', 'vm'), hosts: new MoRef('Folder', 'host') },
      {
        resync: (vms) => resyncs.push(vms),
        vm: (c) => changes.push(c),
        host: () => undefined,
        error: (err) => {
          throw err;
        },
      },
    );
    done.stop = () => watcher.stop();
    await watcher.run();
    expect(resyncs).toHaveLength(1);
    expect(resyncs[0]!.map((v) => [v.ref, v.name, v.powerState, v.guestIp])).toEqual([
      ['vm-1', 'a', 'poweredOn', '198.18.20.1'],
      ['vm-2', 'b', 'poweredOn', undefined],
    ]);
    expect(changes).toEqual([{ ref: 'vm-2', kind: 'modify', powerState: 'poweredOff' }]);
  });
});
