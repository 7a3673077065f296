import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { natsCaProblem, natsEndpoints, natsTlsOptions, natsUrlProblem } from './connection';

const tmp = mkdtempSync(join(tmpdir(), 'orangery-conn-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

describe('natsEndpoints', () => {
  it('splits the credentials out and says when a URL asks for TLS', () => {
    expect(natsEndpoints('tls://ipam:s%40cret@10.0.0.1:4222,tls://ipam:s%40cret@10.0.0.2:4222')).toEqual({
      servers: ['tls://10.0.0.1:4222', 'tls://10.0.0.2:4222'],
      user: 'ipam',
      pass: 's@cret',
      tls: true,
    });
    expect(natsEndpoints('nats://127.0.0.1:4222')).toEqual({ servers: ['nats://127.0.0.1:4222'], tls: false });
    expect(natsUrlProblem('tls://u:p@127.0.0.1:4222')).toBeUndefined();
  });
});

describe('TLS options (ORANGERY_NATS_CA)', () => {
  const pem = '-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n';
  const ca = join(tmp, 'ca.pem');
  writeFileSync(ca, pem);

  it('none without a CA or a tls:// URL; the CA read once when given', () => {
    expect(natsTlsOptions(false, undefined)).toBeUndefined();
    expect(natsTlsOptions(true, undefined)).toEqual({});
    expect(natsTlsOptions(false, ca)).toEqual({ ca: pem });
  });

  it('an unreadable or non-PEM CA file is a configuration problem naming it', () => {
    expect(natsCaProblem(undefined)).toBeUndefined();
    expect(natsCaProblem(ca)).toBeUndefined();
    expect(natsCaProblem(join(tmp, 'missing.pem'))).toMatch(/ORANGERY_NATS_CA '.*missing\.pem' cannot be read: ENOENT/);
    const notPem = join(tmp, 'x.txt');
    writeFileSync(notPem, 'hello');
    expect(natsCaProblem(notPem)).toMatch(/holds no PEM certificate/);
  });
});
