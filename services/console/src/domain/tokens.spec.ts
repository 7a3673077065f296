import { describe, expect, it } from 'vitest';
import { bearerToken, TokenConfigError, TokenTable } from './tokens';

describe('console tokens', () => {
  const table = TokenTable.parse('alice:alice-secret-0123456789:operator, bob:bob-secret-0123456789:viewer');

  it('finds the principal of a valid token, and nobody for another', () => {
    expect(table.authenticate('alice-secret-0123456789')).toEqual({ name: 'alice', role: 'operator' });
    expect(table.authenticate('bob-secret-0123456789')).toEqual({ name: 'bob', role: 'viewer' });
    expect(table.authenticate('bob-secret-012345678')).toBeUndefined();
    expect(table.authenticate('')).toBeUndefined();
  });

  it.each([
    ['', 'has no entry'],
    ['alice:secret', 'is not name:token:role'],
    ['alice:secret:admin', "role must be viewer or operator, got 'admin'"],
    ['al ice:secret:viewer', 'name must be'],
    ['a:s1:viewer,a:s2:viewer', "the name 'a' is used twice"],
    ['a:same:viewer,b:same:operator', 'the same token is given twice'],
    ['a::viewer', 'the token must be printable ASCII'],
  ])('refuses %j: %s', (raw, reason) => {
    expect(() => TokenTable.parse(raw)).toThrow(TokenConfigError);
    expect(() => TokenTable.parse(raw)).toThrow(reason);
  });

  it('never puts a token into its error messages', () => {
    try {
      TokenTable.parse('a:very-secret-token:root');
    } catch (e) {
      expect(String(e)).not.toContain('very-secret-token');
    }
  });

  it('warns about short tokens by name', () => {
    expect(TokenTable.parse('a:short:viewer').shortTokenNames).toEqual(['a']);
  });

  it('generates an operator token that authenticates', () => {
    const { table: t, token } = TokenTable.generated();
    expect(token.length).toBeGreaterThanOrEqual(32);
    expect(t.authenticate(token)).toEqual({ name: 'admin', role: 'operator' });
  });

  it('reads a bearer header', () => {
    expect(bearerToken('Bearer abc')).toBe('abc');
    expect(bearerToken('bearer abc')).toBe('abc');
    expect(bearerToken('Basic abc')).toBeUndefined();
    expect(bearerToken('Bearer ')).toBeUndefined();
    expect(bearerToken(undefined)).toBeUndefined();
  });
});
