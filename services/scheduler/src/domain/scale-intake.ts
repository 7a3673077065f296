import { createHash } from 'node:crypto';
import {
  decode,
  environmentBytes,
  INBOUND_ID_PATTERN,
  isOrangeryError,
  MAX_ENVIRONMENT_BYTES,
  MAX_INBOUND_ID_LENGTH,
  NAME_PATTERN,
  parseJsonObject,
  ScaleRequestedEvent,
  type Backend,
  type ScaleRequestData,
} from '@orangery/contracts';

/**
 * The edge of the scale stream: turns a stored message into a request the core can judge,
 * or into the INVALID_REQUEST rejection it deserves. Pure.
 */

export interface ScaleMessage {
  /** the JetStream stream sequence: orders requests for the same app within one generation */
  readonly seq: number;
  /**
   * The stream's generation: when ORANGERY_SCALE was created (ms since the epoch). A
   * recreated stream starts its sequences at 1 again; its generation is later, so its
   * requests are newer than every request of the stream before it (see isOlderRequest).
   */
  readonly generation?: number;
  readonly subject: string;
  readonly body: Uint8Array | string;
  readonly traceparent?: string;
}

export interface ValidScale {
  readonly ok: true;
  readonly requestId: string;
  readonly seq: number;
  readonly generation?: number;
  readonly data: ScaleRequestData;
  readonly traceparent?: string;
}

export interface InvalidScale {
  readonly ok: false;
  readonly requestId: string;
  readonly seq: number;
  readonly generation?: number;
  readonly env?: string;
  readonly app?: string;
  readonly message: string;
  readonly details: Record<string, unknown>;
  readonly traceparent?: string;
}

const NAME = new RegExp(NAME_PATTERN);
const INBOUND_ID = new RegExp(INBOUND_ID_PATTERN);

/** A CloudEvents id the platform keeps as the request's id (CONTRACT.md v1.1). */
export const usableRequestId = (id: string): boolean => id.length >= 1 && id.length <= MAX_INBOUND_ID_LENGTH && INBOUND_ID.test(id);

/**
 * The id under which a request with an unusable `id` string is rejected: `sha256:` and the
 * hex SHA-256 of the id's UTF-8 bytes. Printable, fixed length, the same on every
 * redelivery, and computable by the publisher to find its rejection.
 */
export const substituteRequestId = (id: string): string => `sha256:${createHash('sha256').update(id, 'utf8').digest('hex')}`;

/** `orangery.scale.<env>.<app>` -> env, app (when they are valid names). */
export function subjectNames(subject: string): { env?: string; app?: string } {
  const parts = subject.split('.');
  if (parts.length !== 4 || parts[0] !== 'orangery' || parts[1] !== 'scale') return {};
  const [, , env, app] = parts as [string, string, string, string];
  return NAME.test(env) && NAME.test(app) ? { env, app } : {};
}

export function parseScale(msg: ScaleMessage): ValidScale | InvalidScale {
  const names = subjectNames(msg.subject);
  let body: Record<string, unknown> | undefined;
  // A request without an id still gets its one rejection, under the stream's sequence (and
  // generation: a recreated stream's js-5 is another request than the old one's).
  let requestId = msg.generation === undefined ? `js-${msg.seq}` : `js-${msg.generation}-${msg.seq}`;
  const generation = msg.generation === undefined ? {} : { generation: msg.generation };
  const invalid = (message: string, details: Record<string, unknown>): InvalidScale => ({
    ok: false,
    requestId,
    seq: msg.seq,
    ...generation,
    ...names,
    message,
    details,
    ...(msg.traceparent ? { traceparent: msg.traceparent } : {}),
  });
  try {
    body = parseJsonObject(msg.body);
  } catch (e) {
    return invalid(isOrangeryError(e) ? e.message : 'the request is not a JSON object', { field: '' });
  }
  const id = body['id'];
  if (typeof id === 'string' && id !== '') {
    if (!usableRequestId(id)) {
      // Never let it reach a JetStream message id (a NATS header): CR/LF make the client
      // throw, and the client trims surrounding spaces.
      requestId = substituteRequestId(id);
      return invalid(`field 'id': must be printable ASCII, 1 to ${MAX_INBOUND_ID_LENGTH} characters`, {
        field: 'id',
        reason: `must be printable ASCII, 1 to ${MAX_INBOUND_ID_LENGTH} characters`,
        maxLength: MAX_INBOUND_ID_LENGTH,
      });
    }
    requestId = id;
  }
  let event;
  try {
    event = decode(ScaleRequestedEvent, body);
  } catch (e) {
    if (isOrangeryError(e)) return invalid(e.message, e.details ?? {});
    throw e;
  }
  const { data } = event;
  if (names.env !== undefined && (names.env !== data.env || names.app !== data.app)) {
    return invalid(`data names ${data.env}/${data.app} but the request was published on ${msg.subject}`, {
      field: 'data.app',
      reason: 'must match the subject orangery.scale.<env>.<app>',
    });
  }
  if (names.env === undefined) return invalid(`subject '${msg.subject}' is not orangery.scale.<env>.<app>`, { field: '' });
  if (data.environment !== undefined) {
    const bytes = environmentBytes(data.environment);
    if (bytes > MAX_ENVIRONMENT_BYTES) {
      return invalid(`field 'data.environment': is ${bytes} bytes, at most ${MAX_ENVIRONMENT_BYTES} are allowed`, {
        field: 'data.environment',
        reason: `at most ${MAX_ENVIRONMENT_BYTES} bytes in all`,
        limit: MAX_ENVIRONMENT_BYTES,
        bytes,
      });
    }
  }
  if (data.resources.heapMb !== undefined && data.resources.heapMb > data.resources.memoryMb * 64) {
    return invalid('field data.resources.heapMb: is implausibly larger than memoryMb', { field: 'data.resources.heapMb' });
  }
  const traceparent = event.traceparent ?? msg.traceparent;
  return { ok: true, requestId, seq: msg.seq, ...generation, data, ...(traceparent ? { traceparent } : {}) };
}

/**
 * Whether request `a` came before request `b` in the scale stream. Within one generation
 * of the stream the sequence decides; across generations (the stream was deleted and
 * created again, its sequences restarting at 1) the later generation is newer, whatever
 * the sequences. A record journaled before generations were kept has none: the
 * sequence decides, as it did then.
 */
export function isOlderRequest(a: { seq: number; generation?: number | undefined }, b: { seq: number; generation?: number | undefined }): boolean {
  if (a.generation !== undefined && b.generation !== undefined && a.generation !== b.generation) return a.generation < b.generation;
  return a.seq < b.seq;
}

/**
 * The backends a request may use: what it asked (auto = docker and vmware, and swarm when
 * the env's policy names it), what it brings an artifact for (an image for containers and
 * swarm tasks, a template for VMs), and the env's policy. Empty means the request cannot
 * run anywhere: the reason says why.
 */
export function backendsFor(
  data: Pick<ScaleRequestData, 'backend' | 'image' | 'template' | 'env'>,
  envPolicy: readonly Backend[] | undefined,
): { backends: Backend[]; reason?: string; field?: string } {
  const auto: Backend[] = envPolicy?.includes('swarm') ? ['docker', 'vmware', 'swarm'] : ['docker', 'vmware'];
  const asked: Backend[] = data.backend === undefined || data.backend === 'auto' ? auto : [data.backend];
  // containers and swarm services run an image, VMs are cloned from a template
  const withArtifact = asked.filter((b) => (b === 'vmware' ? data.template !== undefined : data.image !== undefined));
  if (withArtifact.length === 0) {
    const field = asked.length === 1 && asked[0] === 'vmware' ? 'data.template' : 'data.image';
    return {
      backends: [],
      field,
      reason:
        data.backend === 'docker' || data.backend === 'swarm'
          ? `backend ${data.backend} needs an image`
          : data.backend === 'vmware'
            ? 'backend vmware needs a template'
            : 'give an image (containers) or a template (VMs)',
    };
  }
  const allowed = envPolicy ? withArtifact.filter((b) => envPolicy.includes(b)) : withArtifact;
  if (allowed.length === 0) {
    return { backends: [], field: 'data.backend', reason: `env '${data.env}' allows only ${envPolicy!.join(', ')}` };
  }
  return { backends: allowed };
}
