import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';

/**
 * Console API tokens (CONTRACT.md "Console"): `ORANGERY_CONSOLE_TOKENS` holds
 * `name:token:role` entries, comma separated; role `viewer` reads, `operator` reads and
 * sends commands. The name is the audit actor of every command sent with the token.
 */
export type Role = 'viewer' | 'operator';

export interface Principal {
  name: string;
  role: Role;
}

interface Entry extends Principal {
  /** SHA-256 of the token: compared in constant time, the token itself is not kept */
  digest: Buffer;
}

/** Token names: they go into audit trails and CloudEvents sources, so they stay plain. */
export const TOKEN_NAME_PATTERN = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;
/** Tokens: printable ASCII without the separators `:` and `,` and without spaces. */
const TOKEN_PATTERN = /^[!-~]+$/;
/** A token shorter than this is accepted but warned about (a guessable secret). */
export const SHORT_TOKEN_LENGTH = 16;

export class TokenConfigError extends Error {}

const digestOf = (token: string): Buffer => createHash('sha256').update(token, 'utf8').digest();

export class TokenTable {
  private constructor(
    private readonly entries: readonly Entry[],
    /** names of tokens shorter than SHORT_TOKEN_LENGTH, for a warning at start */
    readonly shortTokenNames: readonly string[],
  ) {}

  /** Parses ORANGERY_CONSOLE_TOKENS; throws TokenConfigError naming the bad entry (never its token). */
  static parse(raw: string): TokenTable {
    const entries: Entry[] = [];
    const short: string[] = [];
    const parts = raw
      .split(',')
      .map((p) => p.trim())
      .filter((p) => p !== '');
    if (parts.length === 0) throw new TokenConfigError('ORANGERY_CONSOLE_TOKENS has no entry');
    parts.forEach((part, i) => {
      const fields = part.split(':');
      const where = `ORANGERY_CONSOLE_TOKENS entry ${i + 1}`;
      if (fields.length !== 3) throw new TokenConfigError(`${where} is not name:token:role`);
      const [name, token, role] = fields as [string, string, string];
      if (!TOKEN_NAME_PATTERN.test(name)) throw new TokenConfigError(`${where}: name must be letters, digits, '.', '_' or '-' (at most 64)`);
      if (!TOKEN_PATTERN.test(token)) throw new TokenConfigError(`${where} ('${name}'): the token must be printable ASCII without spaces`);
      if (role !== 'viewer' && role !== 'operator') throw new TokenConfigError(`${where} ('${name}'): role must be viewer or operator, got '${role}'`);
      if (entries.some((e) => e.name === name)) throw new TokenConfigError(`${where}: the name '${name}' is used twice`);
      const digest = digestOf(token);
      if (entries.some((e) => timingSafeEqual(e.digest, digest))) throw new TokenConfigError(`${where} ('${name}'): the same token is given twice`);
      if (token.length < SHORT_TOKEN_LENGTH) short.push(name);
      entries.push({ name, role, digest });
    });
    return new TokenTable(entries, short);
  }

  /** One operator token with a random secret, for a console started without ORANGERY_CONSOLE_TOKENS. */
  static generated(name = 'admin'): { table: TokenTable; token: string } {
    const token = randomBytes(24).toString('base64url');
    return { table: new TokenTable([{ name, role: 'operator', digest: digestOf(token) }], []), token };
  }

  /**
   * The principal a bearer token belongs to, or undefined. Every entry is compared, in
   * constant time each, so neither a match's position nor a near-miss shows in the timing.
   */
  authenticate(token: string): Principal | undefined {
    const digest = digestOf(token);
    let found: Entry | undefined;
    for (const e of this.entries) {
      if (timingSafeEqual(e.digest, digest) && !found) found = e;
    }
    return found ? { name: found.name, role: found.role } : undefined;
  }

  get size(): number {
    return this.entries.length;
  }
}

/** The token of an `Authorization: Bearer <token>` header, or undefined. */
export function bearerToken(header: string | undefined): string | undefined {
  if (!header) return undefined;
  const m = /^Bearer[ ]+([!-~]+)[ ]*$/i.exec(header);
  return m ? m[1] : undefined;
}
