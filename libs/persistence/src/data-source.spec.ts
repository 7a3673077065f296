import { describe, expect, it } from 'vitest';
import { onHost, parseDbUrl } from './data-source';

describe('parseDbUrl', () => {
  it.each([
    ['mysql://u:p@db1:3306/orangery', [{ host: 'db1', port: 3306 }]],
    ['mysql://u:p@db1/orangery', [{ host: 'db1', port: 3306 }]],
    [
      'mysql://u:p@h1:3306,h2:3307,h3/orangery',
      [
        { host: 'h1', port: 3306 },
        { host: 'h2', port: 3307 },
        { host: 'h3', port: 3306 },
      ],
    ],
    [
      'mariadb://u:p%40ss@10.0.0.1:3306, 10.0.0.2:3306/orangery',
      [
        { host: '10.0.0.1', port: 3306 },
        { host: '10.0.0.2', port: 3306 },
      ],
    ],
  ])('%s lists its hosts in order', (url, hosts) => {
    const db = parseDbUrl(url);
    expect(db.hosts).toEqual(hosts);
    expect({ host: db.host, port: db.port }).toEqual(hosts[0]);
    expect(db.database).toBe('orangery');
  });

  it('keeps the credentials of a host list, decoded', () => {
    expect(parseDbUrl('mysql://orangery:p%40ss@h1:1,h2:2/db')).toMatchObject({ user: 'orangery', password: 'p@ss', database: 'db' });
  });

  it.each([
    ['mysql://u:p@h1:3306,,h3:3306/db', /empty host/],
    ['mysql://u:p@h1:3306,h2:notaport/db', /host 'h2:notaport'/],
    ['mysql://u:p@h1:3306,h2:3306', /must name a database/],
    ['postgres://u:p@h1,h2/db', /mysql:\/\//],
    ['not a url', /not a URL/],
  ])('refuses %s with a one-line reason', (url, reason) => {
    expect(() => parseDbUrl(url)).toThrow(reason);
  });

  it('points a configuration at one of its hosts', () => {
    const db = parseDbUrl('mysql://u:p@h1:1,h2:2/db');
    expect(onHost(db, db.hosts[1]!)).toMatchObject({ host: 'h2', port: 2, user: 'u', password: 'p', database: 'db' });
  });
});
