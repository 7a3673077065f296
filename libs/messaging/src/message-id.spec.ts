import { describe, expect, it } from 'vitest';
import { headers } from '@nats-io/nats-core';
import { messageIdOf } from '@orangery/contracts';

/** What a NATS header hands back for `value` (or the error it throws). */
function throughHeader(value: string): string {
  const h = headers();
  h.set('Nats-Msg-Id', value);
  return h.get('Nats-Msg-Id');
}

describe('messageIdOf', () => {
  it.each(['scale-rejected:req-1', '0b7e6f1c-5a7e-4d51-9d0e-3f1b2c4d5e6f', 'scale-completed:a b', 'x'])('keeps a header-safe id %j as it is', (id) => {
    expect(messageIdOf(id)).toBe(id);
    expect(throughHeader(messageIdOf(id))).toBe(id);
  });

  it.each(['scale-rejected:a ', ' a', 'a\r\nNats-Msg-Id: b', 'a\nb', 'a\tb', 'é', ''])('hashes %j into a header-safe ~sha256 id', (id) => {
    const m = messageIdOf(id);
    expect(m).toMatch(/^~sha256:[0-9a-f]{64}$/);
    expect(throughHeader(m)).toBe(m);
  });

  it('gives ids that differ only by surrounding spaces different message ids, after the header', () => {
    const ids = ['scale-rejected:a', 'scale-rejected:a ', 'scale-rejected:a  ', ' scale-rejected:a'];
    expect(new Set(ids.map((id) => throughHeader(messageIdOf(id)))).size).toBe(ids.length);
  });

  it('the raw ids would have collided (why messageIdOf exists)', () => {
    expect(throughHeader('scale-rejected:a ')).toBe(throughHeader('scale-rejected:a'));
    expect(() => throughHeader('a\r\nb')).toThrow();
  });
});
