import { Readable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { engineEventOf, linesOf } from './docker-engine';

const line = (o: unknown) => JSON.stringify(o);
const labels = { 'io.orangery.managed': 'true', 'io.orangery.instance-id': 'prod:web:0' };

describe('the engine event stream, parsed into port events', () => {
  it.each([
    ['start', { id: 'c1', Action: 'start', Actor: { Attributes: labels } }, { kind: 'start', containerId: 'c1', labels }],
    ['oom', { id: 'c1', Action: 'oom', Actor: { Attributes: labels } }, { kind: 'oom', containerId: 'c1', labels }],
    ['destroy', { id: 'c1', Action: 'destroy', Actor: { Attributes: labels } }, { kind: 'destroy', containerId: 'c1', labels }],
    [
      'die with its exit code',
      { id: 'c1', Action: 'die', Actor: { Attributes: { ...labels, exitCode: '143' } } },
      { kind: 'die', containerId: 'c1', labels: { ...labels, exitCode: '143' }, exitCode: 143 },
    ],
    ['die without one', { id: 'c1', Action: 'die', Actor: { Attributes: labels } }, { kind: 'die', containerId: 'c1', labels, exitCode: undefined }],
  ])('%s', (_name, raw, parsed) => {
    expect(engineEventOf(line(raw))).toEqual(parsed);
  });

  it.each([
    ['an action not followed', line({ id: 'c1', Action: 'exec_start', Actor: { Attributes: labels } })],
    ['no container id', line({ Action: 'die', Actor: { Attributes: labels } })],
    ['not JSON', '{"id": "c1", "Act'],
  ])('ignores %s', (_name, raw) => {
    expect(engineEventOf(raw)).toBeUndefined();
  });

  it('splits chunks into lines wherever the chunks break', async () => {
    const chunks = ['{"a":1}\n{"b"', ':2}\n\n', '{"c":3}\n{"unfinished"'].map((c) => Buffer.from(c));
    const lines: string[] = [];
    for await (const l of linesOf(Readable.from(chunks))) lines.push(l);
    expect(lines).toEqual(['{"a":1}', '{"b":2}', '{"c":3}']);
  });
});
