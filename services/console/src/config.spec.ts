import { describe, expect, it } from 'vitest';
import { ConfigError } from '@orangery/service-kit';
import { loadConsoleConfig, parseAddr } from './config';

describe('console configuration', () => {
  it('defaults to 0.0.0.0:7480 and a generated operator token', () => {
    const c = loadConsoleConfig({});
    expect([c.host, c.port]).toEqual(['0.0.0.0', 7480]);
    expect(c.generatedToken).toMatch(/^[A-Za-z0-9_-]{32}$/);
    expect(c.tokens.authenticate(c.generatedToken!)).toEqual({ name: 'admin', role: 'operator' });
  });

  it('reads addresses and tokens', () => {
    expect(parseAddr(':8080', 'X')).toEqual({ host: '0.0.0.0', port: 8080 });
    expect(parseAddr('[::1]:80', 'X')).toEqual({ host: '::1', port: 80 });
    const c = loadConsoleConfig({ ORANGERY_CONSOLE_ADDR: '127.0.0.1:9000', ORANGERY_CONSOLE_TOKENS: 'ops:0123456789abcdef:operator' });
    expect([c.host, c.port, c.generatedToken, c.tokens.size]).toEqual(['127.0.0.1', 9000, undefined, 1]);
  });

  it.each([
    [{ ORANGERY_CONSOLE_ADDR: 'localhost' }, 'ORANGERY_CONSOLE_ADDR must be host:port'],
    [{ ORANGERY_CONSOLE_ADDR: 'h:70000' }, 'ORANGERY_CONSOLE_ADDR must be host:port'],
    [{ ORANGERY_CONSOLE_TOKENS: 'ops:secret-value:root' }, 'role must be viewer or operator'],
    [{ ORANGERY_CONSOLE_SSE_PING_SECONDS: '0' }, 'ORANGERY_CONSOLE_SSE_PING_SECONDS must be between'],
  ])('refuses %j', (env, reason) => {
    expect(() => loadConsoleConfig(env)).toThrow(ConfigError);
    expect(() => loadConsoleConfig(env)).toThrow(reason);
  });
});
