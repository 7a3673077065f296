import { describe, expect, it } from 'vitest';
import { agentUser, allUsers, authorizationBlock, type RoleUser } from './permissions';
import { dbUsersSql, tablesOf } from './generate';

/** nats-server's subject matching: `*` is one token, `>` the rest (at least one token). */
function matches(pattern: string, subject: string): boolean {
  const p = pattern.split('.');
  const s = subject.split('.');
  for (let i = 0; i < p.length; i++) {
    if (p[i] === '>') return s.length > i;
    if (i >= s.length) return false;
    if (p[i] !== '*' && p[i] !== s[i]) return false;
  }
  return p.length === s.length;
}

const users = allUsers([
  { name: 'host-a', hosts: ['host-a'] },
  { name: 'host-b', hosts: ['host-b'] },
  { name: 'vc1', hosts: ['esx-1', 'esx-2'] },
  { name: 'sw1', hosts: ['sw1-n1', 'sw1-n2'], swarm: true },
]);
const byName = (n: string): RoleUser => users.find((u) => u.user === n)!;
const can = (user: string, op: 'publish' | 'subscribe', subject: string): boolean => byName(user).permissions[op].allow.some((p) => matches(p, subject));

// One line per (user, operation, subject): what the permission table must allow or refuse.
const table: [string, 'publish' | 'subscribe', string, boolean][] = [
  // agents: their own heartbeat, the host and instance events, their own commands and inbox
  ['agent-host-a', 'publish', 'orangery.hb.host-a', true],
  ['agent-host-a', 'publish', 'orangery.hb.host-b', false],
  ['agent-host-a', 'publish', 'orangery.hb.phantom', false],
  ['agent-host-a', 'publish', 'orangery.evt.host.registered', true],
  ['agent-host-a', 'publish', 'orangery.evt.instance.running', true],
  ['agent-host-a', 'publish', 'orangery.evt.scale.completed', false],
  ['agent-host-a', 'publish', 'orangery.evt.ip.released', false],
  ['agent-host-a', 'publish', 'orangery.ipam.release', false],
  ['agent-host-a', 'publish', 'orangery.scheduler.slot.hold', false],
  ['agent-host-a', 'publish', 'orangery.scheduler.slot.commit', false],
  ['agent-host-a', 'publish', 'orangery.agent.host-b.instance.stop', false],
  ['agent-host-a', 'publish', 'orangery.scale.prod.web', false],
  ['agent-host-a', 'publish', '$JS.API.STREAM.CREATE.ORANGERY_EVENTS', true],
  // updating a stream could shrink it: the control-plane services only
  ['agent-host-a', 'publish', '$JS.API.STREAM.UPDATE.ORANGERY_EVENTS', false],
  ['ipam', 'publish', '$JS.API.STREAM.UPDATE.ORANGERY_EVENTS', true],
  ['scheduler', 'publish', '$JS.API.STREAM.UPDATE.ORANGERY_SCALE', true],
  ['migrator', 'publish', '$JS.API.STREAM.UPDATE.ORANGERY_SCALE', false],
  ['agent-host-a', 'publish', '$JS.API.STREAM.DELETE.ORANGERY_EVENTS', false],
  ['agent-host-a', 'publish', '$JS.API.STREAM.PURGE.ORANGERY_SCALE', false],
  ['agent-host-a', 'subscribe', 'orangery.agent.host-a.instance.create', true],
  ['agent-host-a', 'subscribe', 'orangery.agent.host-a.wire.probe', true],
  ['agent-host-a', 'subscribe', 'orangery.agent.host-b.instance.create', false],
  ['agent-host-a', 'subscribe', '_INBOX_host-a.abc', true],
  ['agent-host-a', 'subscribe', '_INBOX.abc', false],
  ['agent-host-a', 'subscribe', '_INBOX_host-b.abc', false],
  ['agent-host-a', 'subscribe', 'orangery.hb.host-b', false],
  ['agent-vc1', 'publish', 'orangery.hb.esx-1', true],
  ['agent-vc1', 'publish', 'orangery.hb.esx-2', true],
  ['agent-vc1', 'publish', 'orangery.hb.esx-3', false],
  ['agent-vc1', 'subscribe', 'orangery.agent.esx-2.instance.get', true],
  ['agent-vc1', 'subscribe', 'orangery.agent.host-a.instance.get', false],
  // swarm-agent: an agent of its nodes, plus its nodes' ipam blocks and task bindings
  ['agent-sw1', 'publish', 'orangery.hb.sw1-n1', true],
  ['agent-sw1', 'publish', 'orangery.hb.sw1-n2', true],
  ['agent-sw1', 'publish', 'orangery.hb.host-a', false],
  ['agent-sw1', 'subscribe', 'orangery.agent.sw1-n2.instance.create', true],
  ['agent-sw1', 'subscribe', 'orangery.agent.host-a.instance.create', false],
  ['agent-sw1', 'subscribe', '_INBOX_sw1.x', true],
  ['agent-sw1', 'publish', 'orangery.ipam.block.reserve', true],
  ['agent-sw1', 'publish', 'orangery.ipam.block.release', true],
  ['agent-sw1', 'publish', 'orangery.ipam.block.list', true],
  ['agent-sw1', 'publish', 'orangery.ipam.block.bind', true],
  ['agent-sw1', 'publish', 'orangery.ipam.block.unbind', true],
  ['agent-sw1', 'publish', 'orangery.ipam.get', true],
  ['agent-sw1', 'publish', 'orangery.ipam.pool.get', true],
  ['agent-sw1', 'publish', 'orangery.ipam.allocate', false],
  ['agent-sw1', 'publish', 'orangery.ipam.bind', false],
  ['agent-sw1', 'publish', 'orangery.ipam.release', false],
  ['agent-sw1', 'publish', 'orangery.ipam.pool.delete', false],
  ['agent-sw1', 'publish', 'orangery.scheduler.slot.hold', false],
  ['agent-host-a', 'publish', 'orangery.ipam.block.bind', false],
  ['agent-host-a', 'publish', 'orangery.ipam.block.reserve', false],
  ['agent-vc1', 'publish', 'orangery.ipam.block.unbind', false],
  ['operator', 'publish', 'orangery.ipam.block.list', true],
  ['operator', 'publish', 'orangery.ipam.block.release', true],
  ['console', 'publish', 'orangery.ipam.block.release', false],
  ['upstream', 'publish', 'orangery.ipam.block.list', false],
  // upstream: scale requests in, events out; nothing else
  ['upstream', 'publish', 'orangery.scale.prod.web', true],
  ['upstream', 'publish', 'orangery.ipam.release', false],
  ['upstream', 'publish', 'orangery.scheduler.slot.hold', false],
  ['upstream', 'publish', 'orangery.migrator.drain', false],
  ['upstream', 'publish', 'orangery.hb.host-a', false],
  ['upstream', 'publish', 'orangery.evt.scale.completed', false],
  ['upstream', 'publish', '$JS.API.CONSUMER.MSG.NEXT.ORANGERY_EVENTS.mine', true],
  ['upstream', 'publish', '$JS.API.CONSUMER.MSG.NEXT.ORANGERY_SCALE.orangery-scheduler', false],
  ['upstream', 'publish', '$JS.API.STREAM.PURGE.ORANGERY_SCALE', false],
  ['upstream', 'subscribe', 'orangery.evt.scale.completed', true],
  ['upstream', 'subscribe', '_INBOX_upstream.x', true],
  ['upstream', 'subscribe', '_INBOX.x', false],
  ['upstream', 'subscribe', 'orangery.scale.prod.web', false],
  // operator: the contract's commands, not the internal slot API or agent commands
  ['operator', 'publish', 'orangery.ipam.release', true],
  ['operator', 'publish', 'orangery.ipam.pool.create', true],
  ['operator', 'publish', 'orangery.scheduler.hosts.list', true],
  ['operator', 'publish', 'orangery.scheduler.instances.list', true],
  ['operator', 'publish', 'orangery.scheduler.envs.put', true],
  ['operator', 'publish', 'orangery.migrator.drain', true],
  ['operator', 'publish', 'orangery.scale.prod.web', true],
  ['operator', 'publish', 'orangery.scheduler.slot.get', false],
  ['operator', 'publish', 'orangery.scheduler.slot.hold', false],
  ['operator', 'publish', 'orangery.scheduler.host.drain', false],
  ['operator', 'publish', 'orangery.scheduler.slot.create', false],
  ['upstream', 'publish', 'orangery.scheduler.slot.create', false],
  ['agent-host-a', 'publish', 'orangery.scheduler.slot.create', false],
  ['migrator', 'publish', 'orangery.scheduler.slot.create', true],
  ['scheduler', 'publish', 'orangery.agent.host-a.host.get', true],
  ['agent-host-a', 'subscribe', 'orangery.agent.host-a.host.get', true],
  ['agent-host-a', 'subscribe', 'orangery.agent.host-b.host.get', false],
  ['operator', 'publish', 'orangery.agent.host-a.instance.stop', false],
  ['operator', 'publish', 'orangery.hb.host-a', false],
  ['operator', 'subscribe', '_INBOX.x', false],
  ['console', 'publish', 'orangery.scheduler.slot.commit', false],
  ['console', 'publish', 'orangery.ipam.pool.create', true],
  ['console', 'publish', 'orangery.ipam.release', false],
  ['console', 'publish', 'orangery.ipam.bind', false],
  ['console', 'publish', 'orangery.migrator.migrate', true],
  ['console', 'publish', 'orangery.scheduler.envs.put', true],
  ['console', 'subscribe', '_INBOX_console.x', true],
  ['console', 'publish', 'orangery.scale.prod.web', true],
  // services: what their code sends and serves
  ['ipam', 'subscribe', 'orangery.ipam.release', true],
  ['ipam', 'publish', 'orangery.evt.ip.released', true],
  ['ipam', 'publish', 'orangery.agent.host-a.instance.stop', false],
  ['ipam', 'publish', 'orangery.scheduler.slot.hold', false],
  ['scheduler', 'subscribe', 'orangery.scheduler.slot.hold', true],
  ['scheduler', 'subscribe', 'orangery.hb.host-a', true],
  ['scheduler', 'publish', 'orangery.ipam.allocate.batch', true],
  ['scheduler', 'publish', 'orangery.agent.host-a.instance.create', true],
  ['scheduler', 'publish', '$JS.API.CONSUMER.MSG.NEXT.ORANGERY_SCALE.orangery-scheduler', true],
  ['scheduler', 'publish', '$JS.ACK.ORANGERY_SCALE.orangery-scheduler.1.2.3.4.5', true],
  ['scheduler', 'publish', '$JS.API.STREAM.DELETE.ORANGERY_SCALE', false],
  ['scheduler', 'publish', 'orangery.scale.prod.web', false],
  ['migrator', 'publish', 'orangery.scheduler.slot.hold', true],
  ['migrator', 'publish', 'orangery.agent.esx-1.wire.probe', true],
  ['migrator', 'subscribe', 'orangery.migrator.drain', true],
  ['migrator', 'publish', 'orangery.scale.prod.web', false],
];

describe('the permission table', () => {
  it.each(table)('%s %s %s: %s', (user, op, subject, allowed) => {
    expect(can(user, op, subject)).toBe(allowed);
  });

  it('only services and agents may answer requests (allow_responses)', () => {
    expect(users.filter((u) => u.permissions.allowResponses).map((u) => u.user)).toEqual([
      'ipam',
      'scheduler',
      'migrator',
      'agent-host-a',
      'agent-host-b',
      'agent-vc1',
      'agent-sw1',
    ]);
  });

  it('no user but the services may subscribe to the shared reply inboxes', () => {
    const shared = users.filter((u) => u.permissions.subscribe.allow.some((p) => matches(p, '_INBOX.x'))).map((u) => u.user);
    expect(shared).toEqual(['ipam', 'scheduler', 'migrator']);
  });

  it('refuses a host listed for two agents, two agents of one name and bad host ids', () => {
    expect(() =>
      allUsers([
        { name: 'vc1', hosts: ['esx-1'] },
        { name: 'vc2', hosts: ['esx-1'] },
      ]),
    ).toThrow(/esx-1/);
    expect(() =>
      allUsers([
        { name: 'h', hosts: ['h'] },
        { name: 'h', hosts: ['h2'] },
      ]),
    ).toThrow(/two agents/);
    expect(() => agentUser({ name: 'a', hosts: ['bad.host'] })).toThrow(/bad\.host/);
    expect(() => agentUser({ name: 'x>', hosts: ['h'] })).toThrow();
    expect(() => agentUser({ name: 'a', hosts: [] })).toThrow(/no host/);
  });

  it("refuses an agent whose reply inbox would be a role's (a host named console reading the console's replies)", () => {
    for (const role of ['console', 'operator', 'upstream']) {
      expect(() => allUsers([{ name: role, hosts: [role] }])).toThrow(/reply inbox _INBOX_/);
    }
  });
});

describe('the nats-server authorization block', () => {
  it('holds what passwordOf gives (the hash), quoted, with every permission', () => {
    const block = authorizationBlock([byName('agent-host-a')], () => '$2b$11$hash');
    expect(block).toContain('user: "agent-host-a", password: "$2b$11$hash"');
    expect(block).toContain('"orangery.hb.host-a"');
    expect(block).toContain('"$JS.API.STREAM.INFO.ORANGERY_EVENTS"');
    expect(block).toContain('allow_responses: { max: 1, expires: "15m" }');
  });
});

describe('database users', () => {
  it("finds a service's tables in its migrations, and its migrations table", () => {
    const src = ['await q.query(`CREATE TABLE IF NOT EXISTS ipam_pool (', 'CREATE TABLE `ipam_audit` (', "q.query('DROP TABLE IF EXISTS ipam_old')"];
    expect(tablesOf('ipam', src)).toEqual(['ipam_audit', 'ipam_migrations', 'ipam_pool', 'orangery_migration_lock']);
  });

  it('grants each service its own tables only, with quoted names and passwords', () => {
    const sql = dbUsersSql(
      'orangery',
      '%',
      { ipam: ['ipam_pool'], scheduler: ['sched_app'], migrator: ['mig_migration'] },
      { ipam: "p'1", scheduler: 'p2', migrator: 'p3' },
    );
    expect(sql).toContain("CREATE USER IF NOT EXISTS 'orangery_ipam'@'%' IDENTIFIED BY 'p\\'1';");
    expect(sql).toContain("GRANT SELECT, INSERT, UPDATE, DELETE, CREATE, ALTER, INDEX, DROP ON `orangery`.`ipam_pool` TO 'orangery_ipam'@'%';");
    expect(sql).not.toMatch(/ON `orangery`\.`sched_app` TO 'orangery_ipam'/);
    expect(sql).not.toMatch(/ON `orangery`\.\*/);
  });
});
