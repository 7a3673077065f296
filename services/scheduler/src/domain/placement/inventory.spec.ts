import { describe, it, expect } from 'vitest';
import { Inventory, needOf } from './inventory';
import { place } from './place';
import { capacity, host, request, used } from './testing/fleet';
import type { HostView } from './types';

describe('Inventory', () => {
  it.each<[string, HostView, { cpu: number; memoryMb: number; diskMb: number }]>([
    ['an empty host: its capacity', host('h'), { cpu: 8, memoryMb: 16_384, diskMb: 102_400 }],
    ['a host in use: capacity less allocations', host('h', used(2.5, 4096, 1024)), { cpu: 5.5, memoryMb: 12_288, diskMb: 101_376 }],
    ['an overcommitted host: below zero', host('h', { ...capacity(2, 1024, 0), ...used(3, 2048, 0) }), { cpu: -1, memoryMb: -1024, diskMb: 0 }],
  ])('free capacity of %s', (_what, h, free) => {
    expect(Inventory.of([h]).free('h')).toEqual(free);
  });

  it('keeps hosts in id order, whatever the snapshot order', () => {
    expect(Inventory.of([host('c'), host('a'), host('b')]).ids).toEqual(['a', 'b', 'c']);
  });

  it('counts the instances of the snapshot per env:app and host', () => {
    const inventory = Inventory.of([
      host('a', {
        instances: [
          { env: 'prod', app: 'web' },
          { env: 'prod', app: 'web' },
          { env: 'qa', app: 'web' },
        ],
      }),
      host('b', { instances: [{ env: 'prod', app: 'web' }] }),
    ]);
    expect(inventory.instancesOf('prod:web')).toEqual(
      new Map([
        [0, 2],
        [1, 1],
      ]),
    );
    expect(inventory.instancesOf('qa:web')).toEqual(new Map([[0, 1]]));
    expect(inventory.instancesOf('prod:api')).toBeUndefined();
  });

  it('assigning 0.1 CPU ten times takes exactly 1 CPU, and unassigning gives all of it back', () => {
    const inventory = Inventory.of([host('h', used(6.9, 0))]);
    const small = request({ resources: { cpu: 0.1, memoryMb: 100 } });
    for (let n = 0; n < 10; n++) inventory.assign('h', small);
    expect(inventory.free('h')).toEqual({ cpu: 0.1, memoryMb: 15_384, diskMb: 102_400 });
    for (let n = 0; n < 10; n++) inventory.unassign('h', small);
    expect(inventory.free('h')).toEqual({ cpu: 1.1, memoryMb: 16_384, diskMb: 102_400 });
    expect(inventory.instancesOf('prod:web')).toBeUndefined();
  });

  it('takes the container limit on assign: the heap rule included', () => {
    const inventory = Inventory.of([host('h')]);
    inventory.assign('h', request({ resources: { cpu: 1, memoryMb: 1024, heapMb: 2048, diskMb: 500 } }));
    expect(inventory.free('h')).toEqual({ cpu: 7, memoryMb: 16_384 - 2560, diskMb: 101_900 });
    expect(needOf({ cpu: 1, memoryMb: 1024, heapMb: 2048 })).toEqual({ cpuMilli: 1000, memoryMb: 2560, diskMb: 0 });
  });

  it('what is assigned counts for spread, and stops counting once unassigned', () => {
    const inventory = Inventory.of([host('a', used(4, 0)), host('b')]);
    expect(place(request(), inventory)).toMatchObject({ hostId: 'a' });
    inventory.assign('a', request());
    expect(place(request(), inventory)).toMatchObject({ hostId: 'b' });
    inventory.unassign('a', request());
    expect(place(request(), inventory)).toMatchObject({ hostId: 'a' });
  });

  it.each<[string, () => unknown, string]>([
    ['a host listed twice', () => Inventory.of([host('a'), host('a')]), "host 'a' appears twice"],
    ['assigning to an unknown host', () => Inventory.of([host('a')]).assign('x', request()), "host 'x' is not in the inventory"],
    ['unassigning what was never assigned', () => Inventory.of([host('a')]).unassign('a', request()), 'no instance of prod:web'],
    ['the free capacity of an unknown host', () => Inventory.of([]).free('x'), "host 'x' is not in the inventory"],
  ])('refuses %s', (_what, act, message) => {
    expect(act).toThrow(message);
  });
});
