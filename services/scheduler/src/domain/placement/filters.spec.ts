import { describe, it, expect } from 'vitest';
import { demandOf, FEASIBILITY, firstRejection, STATIC, ELIGIBILITY, CAPACITY } from './filters';
import { Inventory } from './inventory';
import { place } from './place';
import { capacity, esxHost, host, request, used } from './testing/fleet';
import type { FilterReason, HostView, PlacementRequest } from './types';

/** The reasons of every filter that rejects the only host for the request. */
function rejections(h: HostView, req: PlacementRequest): FilterReason[] {
  const inventory = Inventory.of([h]);
  const demand = demandOf(req);
  return FEASIBILITY.filter((f) => !f.admits(inventory, 0, demand)).map((f) => f.reason);
}

describe('feasibility filters', () => {
  it('run in a fixed order: what a host could ever take first, then its room', () => {
    expect(FEASIBILITY.map((f) => f.reason)).toEqual([
      'backend-not-allowed',
      'labels-mismatch',
      'host-not-ready',
      'host-excluded',
      'vlan-unreachable',
      'cpu-exhausted',
      'memory-exhausted',
      'disk-exhausted',
    ]);
    expect([...ELIGIBILITY, ...CAPACITY]).toEqual(FEASIBILITY);
    // The engine caches the STATIC verdicts: they must not read allocations or exclusions.
    expect(STATIC.map((f) => f.reason)).toEqual(['backend-not-allowed', 'labels-mismatch', 'host-not-ready', 'vlan-unreachable']);
  });

  it.each<[FilterReason, string, HostView, PlacementRequest]>([
    ['backend-not-allowed', 'a vmware host for a docker request', esxHost('h'), request({ backend: 'docker' })],
    ['backend-not-allowed', 'a docker host for a vmware request', host('h'), request({ backend: 'vmware' })],
    ['backend-not-allowed', "a vmware host when the env's policy allows docker only", esxHost('h'), request({ allowedBackends: ['docker'] })],
    [
      'backend-not-allowed',
      "a docker host asked for by name that the env's policy forbids",
      host('h'),
      request({ backend: 'docker', allowedBackends: ['vmware'] }),
    ],
    ['labels-mismatch', "a host without the env's hostLabels", host('h', { labels: { zone: 'a' } }), request({ hostLabels: { tier: 'prod' } })],
    ['labels-mismatch', 'a host with one of two labels', host('h', { labels: { tier: 'prod' } }), request({ hostLabels: { tier: 'prod', zone: 'b' } })],
    ['labels-mismatch', 'a host with another value', host('h', { labels: { tier: 'test' } }), request({ hostLabels: { tier: 'prod' } })],
    ['backend-not-allowed', 'a docker host for a swarm request', host('h'), request({ backend: 'swarm' })],
    ['host-not-ready', 'a draining host', host('h', { state: 'draining' }), request()],
    ['host-not-ready', 'a lost host', host('h', { state: 'lost' }), request()],
    ['host-excluded', 'an excluded host', host('h'), request({ excludeHosts: ['x', 'h'] })],
    ['vlan-unreachable', 'an ESXi host without the VLAN', esxHost('h', { vlans: [200, 300] }), request({ vlan: 100 })],
    ['vlan-unreachable', 'an ESXi host reaching no VLAN', esxHost('h', { vlans: [] }), request({ vlan: 100 })],
    ['cpu-exhausted', 'a host with 0.5 CPU free for 1 CPU', host('h', used(7.5, 0)), request()],
    ['cpu-exhausted', 'an overcommitted host', host('h', used(9, 0)), request({ resources: { cpu: 0.1, memoryMb: 64 } })],
    ['memory-exhausted', 'a host with 512 MiB free for 1 GiB', host('h', used(0, 15_872)), request()],
    [
      'memory-exhausted',
      'the heap rule: 2 GiB asked with a 2 GiB heap needs 2.5 GiB, 2 GiB free',
      host('h', used(0, 14_336)),
      request({ resources: { cpu: 1, memoryMb: 2048, heapMb: 2048 } }),
    ],
    [
      'disk-exhausted',
      'a host with 1 GiB of disk for 2 GiB',
      host('h', capacity(8, 16_384, 1024)),
      request({ resources: { cpu: 1, memoryMb: 1024, diskMb: 2048 } }),
    ],
  ])('%s: %s', (reason, _what, h, req) => {
    expect(rejections(h, req)).toEqual([reason]);
    const decision = place(req, [h]);
    expect(decision.ok).toBe(false);
    if (!decision.ok) {
      expect(decision.reason.code).toBe('INSUFFICIENT_CAPACITY');
      expect(decision.reason.details.filtered).toEqual({ [reason]: 1 });
    }
  });

  it.each<[string, HostView, PlacementRequest]>([
    ['a docker host for an auto request', host('h'), request()],
    ['a vmware host reaching the VLAN for an auto request', esxHost('h'), request({ vlan: 200 })],
    ['a vmware host asked for by name', esxHost('h'), request({ backend: 'vmware' })],
    ["a vmware host the env's policy allows", esxHost('h'), request({ allowedBackends: ['docker', 'vmware'] })],
    ['a docker host on any VLAN', host('h'), request({ vlan: 4094 })],
    ['a host when other hosts are excluded', host('h'), request({ excludeHosts: ['x', 'y'] })],
    [
      'exactly the room asked for',
      host('h', { ...capacity(2, 2048, 4096), ...used(1, 1024, 2048) }),
      request({ resources: { cpu: 1, memoryMb: 1024, diskMb: 2048 } }),
    ],
    ['0.3 CPU free for 0.3 CPU (millicores, no float drift)', host('h', used(7.7, 0)), request({ resources: { cpu: 0.3, memoryMb: 64 } })],
    [
      'exactly the container limit free: 2 GiB asked, 2 GiB heap, 2.5 GiB free',
      host('h', used(0, 16_384 - 2560)),
      request({ resources: { cpu: 1, memoryMb: 2048, heapMb: 2048 } }),
    ],
    ['no disk asked of a host without disk', host('h', capacity(8, 16_384, 0)), request()],
    [
      "a host carrying every one of the env's hostLabels, and more",
      host('h', { labels: { tier: 'prod', zone: 'b', rack: 'r1' } }),
      request({ hostLabels: { tier: 'prod', zone: 'b' } }),
    ],
    ['a swarm node for an auto request its env allows on swarm', host('h', { backend: 'swarm' }), request({ allowedBackends: ['swarm'] })],
  ])('admit %s', (_what, h, req) => {
    expect(rejections(h, req)).toEqual([]);
    expect(place(req, [h])).toMatchObject({ ok: true, hostId: 'h' });
  });

  it.each<[string, HostView, PlacementRequest, FilterReason]>([
    ['draining and full', host('h', { state: 'draining', ...used(8, 16_384) }), request(), 'host-not-ready'],
    ['of the wrong backend and lost', esxHost('h', { state: 'lost' }), request({ backend: 'docker' }), 'backend-not-allowed'],
    ['excluded and without the VLAN', esxHost('h', { vlans: [] }), request({ excludeHosts: ['h'] }), 'host-excluded'],
    ['short of cpu and memory', host('h', used(8, 16_384)), request(), 'cpu-exhausted'],
    [
      'short of memory and disk',
      host('h', { ...used(0, 16_384), ...capacity(8, 16_384, 0) }),
      request({ resources: { cpu: 1, memoryMb: 1024, diskMb: 1 } }),
      'memory-exhausted',
    ],
  ])('a host %s is counted once, under the first filter that rejects it', (_what, h, req, reason) => {
    expect(firstRejection(FEASIBILITY, Inventory.of([h]), 0, demandOf(req))?.reason).toBe(reason);
    const decision = place(req, [h]);
    expect(decision.ok || decision.reason.details.filtered).toEqual({ [reason]: 1 });
  });
});

describe('hostLabels in the engine', () => {
  it('caches the STATIC verdicts per labels: two requests alike but for their labels see their own hosts', () => {
    const inventory = Inventory.of([host('a', { labels: { tier: 'prod' } }), host('b', { labels: { tier: 'test' } })]);
    expect(place(request({ hostLabels: { tier: 'test' } }), inventory)).toMatchObject({ ok: true, hostId: 'b' });
    expect(place(request({ hostLabels: { tier: 'prod' } }), inventory)).toMatchObject({ ok: true, hostId: 'a' });
    const none = place(request({ hostLabels: { tier: 'perf' } }), inventory);
    expect(none.ok).toBe(false);
    if (!none.ok) expect(none.reason.details.filtered).toEqual({ 'labels-mismatch': 2 });
  });
});
