import { describe, expect, it } from 'vitest';
import { createServer } from 'node:net';
import type { Logger } from '@orangery/telemetry';
import { ConfigError } from './config';
import { observeAddrFrom, Readiness, startObserveServer } from './observe';

describe('ORANGERY_OBSERVE_ADDR', () => {
  it('defaults to every interface on the service port, and is off when empty', () => {
    expect(observeAddrFrom({}, 9401)).toEqual({ host: '0.0.0.0', port: 9401 });
    expect(observeAddrFrom({ ORANGERY_OBSERVE_ADDR: '' }, 9401)).toBeUndefined();
    expect(observeAddrFrom({ ORANGERY_OBSERVE_ADDR: '  ' }, 9401)).toBeUndefined();
  });

  it('reads host:port, :port and [v6]:port', () => {
    expect(observeAddrFrom({ ORANGERY_OBSERVE_ADDR: '127.0.0.1:9500' }, 1)).toEqual({ host: '127.0.0.1', port: 9500 });
    expect(observeAddrFrom({ ORANGERY_OBSERVE_ADDR: ':9402' }, 1)).toEqual({ host: '0.0.0.0', port: 9402 });
    expect(observeAddrFrom({ ORANGERY_OBSERVE_ADDR: '[::1]:9403' }, 1)).toEqual({ host: '::1', port: 9403 });
  });

  it.each(['9401', 'host', 'host:', 'host:0', 'host:70000', 'a b:1', 'x:1:2'])('refuses %j', (v) => {
    expect(() => observeAddrFrom({ ORANGERY_OBSERVE_ADDR: v }, 1)).toThrow(ConfigError);
  });
});

describe('Readiness', () => {
  it('reports an expected dependency as missing until its check is set, then the check', async () => {
    const r = new Readiness();
    r.expect('nats', 'connecting');
    expect(await r.report()).toEqual({ ready: false, checks: { nats: 'connecting' } });
    let up = false;
    r.set('nats', () => (up ? undefined : 'disconnected'));
    expect((await r.report()).checks['nats']).toBe('disconnected');
    up = true;
    expect(await r.report()).toEqual({ ready: true, checks: { nats: 'ok' } });
    r.expect('nats', 'connecting'); // a later expect does not undo a set check
    expect((await r.report()).ready).toBe(true);
  });

  it('turns a throwing, rejecting or hanging check into a reason', async () => {
    const r = new Readiness();
    r.set('a', () => {
      throw new Error('boom');
    });
    r.set('b', () => Promise.reject(new Error('db down')));
    r.set('c', () => new Promise<undefined>(() => undefined));
    const rep = await r.report();
    expect(rep.ready).toBe(false);
    expect(rep.checks).toEqual({ a: 'boom', b: 'db down', c: 'no answer within 1000 ms' });
  });
});

describe('the endpoint', () => {
  it('does not fail the service when its port is in use', async () => {
    const blocker = createServer();
    await new Promise<void>((r) => blocker.listen(0, '127.0.0.1', () => r()));
    const port = (blocker.address() as { port: number }).port;
    const lines: string[] = [];
    const logger = { warn: (_o: unknown, m: string) => lines.push(m), info: (_o: unknown, m: string) => lines.push(m) } as unknown as Logger;
    expect(await startObserveServer({ host: '127.0.0.1', port }, logger, new Readiness())).toBeUndefined();
    expect(lines.join('')).toContain('health and metrics endpoint not served');
    blocker.close();
  });
});
