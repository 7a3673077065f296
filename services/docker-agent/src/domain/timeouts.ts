import { OrangeryError } from '@orangery/contracts';

/** An engine (or other outside) call that did not answer in time: worth trying again later. */
export class TimeoutError extends OrangeryError {
  constructor(what: string, ms: number) {
    super('UNAVAILABLE', `${what} did not answer within ${ms} ms`, { what, ms });
    this.name = 'TimeoutError';
  }
}

/**
 * `p`, or a TimeoutError after `ms`. The call itself goes on (dockerode cannot cancel it);
 * what matters is that the caller (a heartbeat, the self-fence) is not held by a hung engine.
 */
export function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new TimeoutError(what, ms)), ms);
  });
  p.catch(() => undefined); // a late rejection of the abandoned call is not unhandled
  return Promise.race([p, timeout]).finally(() => clearTimeout(timer));
}
