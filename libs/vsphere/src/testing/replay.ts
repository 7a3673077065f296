// Replays recorded vcsim responses (fixtures/*.xml) as a SoapTransport, in a scripted order.
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { SoapRequest, SoapResponse, SoapTransport } from '../transport';

export const fixture = (name: string): string => readFileSync(join(dirname(fileURLToPath(import.meta.url)), 'fixtures', `${name}.xml`), 'utf8');

export interface ReplayStep {
  /** The vim25 method the client must call next. */
  method: string;
  /** A fixture name, or a full response. */
  reply: string | SoapResponse | Error;
}

/** A transport that answers each call with the next step and keeps every request. */
export function replay(steps: readonly ReplayStep[]): SoapTransport & { requests: SoapRequest[]; left: () => number } {
  const queue = [...steps];
  const requests: SoapRequest[] = [];
  const t: SoapTransport = async (req) => {
    requests.push(req);
    const step = queue.shift();
    if (!step) throw new Error(`unexpected call ${req.method}: the script is done`);
    if (step.method !== req.method) throw new Error(`expected a ${step.method} call, got ${req.method}`);
    if (step.reply instanceof Error) throw step.reply;
    if (typeof step.reply !== 'string') return step.reply;
    const body = fixture(step.reply);
    return {
      status: body.includes('<soapenv:Fault>') ? 500 : 200,
      setCookie: step.method === 'Login' ? ['vmware_soap_session="abc123"; Path=/; HttpOnly'] : [],
      body,
    };
  };
  return Object.assign(t, { requests, left: () => queue.length });
}
