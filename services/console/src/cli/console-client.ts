/**
 * The CLI's way to the console (CONTRACT.md "Console"): ORANGERY_CONSOLE_URL and
 * ORANGERY_TOKEN. Every refusal is a Refusal with the contract's code and message; a
 * console that cannot be reached is a Refusal UNAVAILABLE.
 */
export class Refusal extends Error {
  constructor(
    readonly code: string,
    message: string,
    readonly details: Record<string, unknown> = {},
    readonly status?: number,
  ) {
    super(message);
    this.name = 'Refusal';
  }
}

export class ConsoleClient {
  constructor(
    readonly baseUrl: string,
    private readonly token: string,
  ) {}

  private url(path: string, query?: Record<string, string | number | undefined>): string {
    const u = new URL(path, this.baseUrl.endsWith('/') ? this.baseUrl : `${this.baseUrl}/`);
    for (const [k, v] of Object.entries(query ?? {})) if (v !== undefined) u.searchParams.set(k, String(v));
    return u.toString();
  }

  async call<T>(method: string, path: string, opts: { query?: Record<string, string | number | undefined>; body?: unknown } = {}): Promise<T> {
    let res: Response;
    try {
      res = await fetch(this.url(path, opts.query), {
        method,
        headers: {
          Authorization: `Bearer ${this.token}`,
          Accept: 'application/json',
          ...(opts.body !== undefined ? { 'Content-Type': 'application/json' } : {}),
        },
        ...(opts.body !== undefined ? { body: JSON.stringify(opts.body) } : {}),
      });
    } catch (e) {
      const cause = (e as { cause?: { code?: string; message?: string } }).cause;
      throw new Refusal('UNAVAILABLE', `cannot reach the console at ${this.baseUrl}: ${cause?.code ?? cause?.message ?? (e as Error).message}`);
    }
    const text = await res.text();
    let body: unknown;
    try {
      body = text === '' ? {} : JSON.parse(text);
    } catch {
      throw new Refusal('INTERNAL', `the console answered ${res.status} with something that is not JSON`, {}, res.status);
    }
    if (!res.ok) {
      const err = (body as { error?: { code?: string; message?: string; details?: Record<string, unknown> } }).error;
      throw new Refusal(err?.code ?? `HTTP_${res.status}`, err?.message ?? res.statusText, err?.details ?? {}, res.status);
    }
    return body as T;
  }

  /** Every item of a paged list, page after page. */
  async all<T>(path: string, key: string, query: Record<string, string | number | undefined> = {}): Promise<T[]> {
    const out: T[] = [];
    let cursor: string | undefined;
    for (;;) {
      const page = await this.call<Record<string, unknown>>('GET', path, { query: { ...query, cursor } });
      out.push(...((page[key] as T[] | undefined) ?? []));
      const next = page['nextCursor'];
      if (typeof next !== 'string' || next === cursor) return out;
      cursor = next;
    }
  }

  /** The SSE stream as parsed events, until the console ends it or `signal` aborts. */
  async *events(query: Record<string, string | number | undefined>, lastEventId?: number, signal?: AbortSignal): AsyncGenerator<{ id: number; data: string }> {
    let res: Response;
    try {
      res = await fetch(this.url('/api/v1/events', query), {
        headers: {
          Authorization: `Bearer ${this.token}`,
          Accept: 'text/event-stream',
          ...(lastEventId !== undefined ? { 'Last-Event-ID': String(lastEventId) } : {}),
        },
        ...(signal ? { signal } : {}),
      });
    } catch (e) {
      throw new Refusal('UNAVAILABLE', `cannot reach the console at ${this.baseUrl}: ${(e as Error).message}`);
    }
    if (!res.ok || !res.body) {
      const body = (await res.json().catch(() => ({}))) as { error?: { code?: string; message?: string } };
      throw new Refusal(body.error?.code ?? `HTTP_${res.status}`, body.error?.message ?? res.statusText, {}, res.status);
    }
    const decoder = new TextDecoder();
    let buf = '';
    for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
      buf += decoder.decode(chunk, { stream: true });
      let i: number;
      while ((i = buf.indexOf('\n\n')) >= 0) {
        const block = buf.slice(0, i);
        buf = buf.slice(i + 2);
        let id: number | undefined;
        const data: string[] = [];
        for (const line of block.split('\n')) {
          if (line.startsWith('id:')) id = Number(line.slice(3).trim());
          else if (line.startsWith('data:')) data.push(line.slice(5).replace(/^ /, ''));
        }
        if (id !== undefined && data.length > 0) yield { id, data: data.join('\n') };
      }
    }
  }
}
