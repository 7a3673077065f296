// The NATS permission table of every role (docs/security.md). Pure: no I/O, unit-tested in
// permissions.spec.ts and exercised against a real nats-server in
// test/integration/permissions.test.ts. Derived from the subjects each service publishes,
// subscribes to and requests (libs/contracts/src/subjects.ts and the services' transport/ and
// adapters/ folders), JetStream API subjects included.
import { agentInboxPrefix, EVENTS_STREAM, HOST_ID_PATTERN, SCALE_STREAM, SUBJECTS } from '@orangery/contracts';

export interface SubjectRules {
  allow: string[];
}

export interface Permissions {
  publish: SubjectRules;
  subscribe: SubjectRules;
  /** may publish to the reply subject of a request it received (one reply, within 15 minutes: a vCenter clone takes minutes) */
  allowResponses: boolean;
}

export type ServiceRole = 'ipam' | 'scheduler' | 'migrator' | 'console';
export type Role = ServiceRole | 'operator' | 'upstream' | 'agent' | 'swarm-agent';

export interface RoleUser {
  /** the NATS user name, also the env file's name */
  user: string;
  role: Role;
  permissions: Permissions;
  /** the reply inbox prefix the client must use (`inboxPrefix`); `_INBOX` for services */
  inboxPrefix: string;
  /** agents: the host ids it may heartbeat for and take commands of */
  hosts?: string[];
}

/** A host agent: a docker-agent serves one host (its id), a vmware- or swarm-agent several. */
export interface AgentSpec {
  /** the agent's own identity (ORANGERY_HOST_ID): its NATS user is `agent-<name>` */
  name: string;
  hosts: string[];
  /** a swarm-agent (`--swarm-agent`): also keeps its nodes' ipam blocks and task bindings */
  swarm?: boolean;
}

/**
 * What a swarm-agent asks ipam besides an agent's rights (docs/ipam.md "Blocks"): its nodes'
 * blocks and its tasks' bindings, and the reads it needs to build the nodes' networks. Not
 * allocate, plain bind or release: it cannot take or free an address outside blocks.
 */
export const SWARM_AGENT_REQUESTS = [
  SUBJECTS.ipam.blockReserve,
  SUBJECTS.ipam.blockRelease,
  SUBJECTS.ipam.blockList,
  SUBJECTS.ipam.blockBind,
  SUBJECTS.ipam.blockUnbind,
  SUBJECTS.ipam.get,
  SUBJECTS.ipam.poolGet,
] as const;

const JS_API = '$JS.API';
const JS_INFO = `${JS_API}.INFO`;

/** Creating (and looking up) one stream: what `ensureStream` sends. */
const ensureStreamSubjects = (stream: string): string[] => [JS_INFO, `${JS_API}.STREAM.INFO.${stream}`, `${JS_API}.STREAM.CREATE.${stream}`];
/**
 * The control-plane services also bring an existing stream to their settings (replicas when
 * the cluster grew, byte bounds: never lower, libs/messaging ensureStream). Agents may not:
 * an update could shrink the stream.
 */
const ownStreamSubjects = (stream: string): string[] => [...ensureStreamSubjects(stream), `${JS_API}.STREAM.UPDATE.${stream}`];

/**
 * Reading one stream through consumers of one's own (a dashboard replaying events, a CLI's
 * `events`): create, look up, pull from and delete consumers, ack. Never purge, delete or
 * update the stream itself.
 */
const streamReaderSubjects = (stream: string): string[] => [
  JS_INFO,
  `${JS_API}.STREAM.INFO.${stream}`,
  `${JS_API}.STREAM.MSG.GET.${stream}`,
  `${JS_API}.CONSUMER.CREATE.${stream}`,
  `${JS_API}.CONSUMER.CREATE.${stream}.>`,
  `${JS_API}.CONSUMER.DURABLE.CREATE.${stream}.>`,
  `${JS_API}.CONSUMER.INFO.${stream}.>`,
  `${JS_API}.CONSUMER.DELETE.${stream}.>`,
  `${JS_API}.CONSUMER.NAMES.${stream}`,
  `${JS_API}.CONSUMER.LIST.${stream}`,
  `${JS_API}.CONSUMER.MSG.NEXT.${stream}.>`,
  `$JS.ACK.${stream}.>`,
  `$JS.FC.${stream}.>`,
];

const sorted = (xs: Iterable<string>): string[] => [...new Set(xs)].sort();

const perms = (publish: Iterable<string>, subscribe: Iterable<string>, allowResponses: boolean): Permissions => ({
  publish: { allow: sorted(publish) },
  subscribe: { allow: sorted(subscribe) },
  allowResponses,
});

/** Request subjects an operator may send: the contract's commands and reads (CONTRACT.md "IPAM", "Operators", "Environments"). */
export const OPERATOR_REQUESTS = [
  'orangery.ipam.>',
  SUBJECTS.scheduler.hostsList,
  SUBJECTS.scheduler.instancesList,
  'orangery.scheduler.envs.>',
  'orangery.migrator.>',
] as const;

/** Public event subjects an agent may publish: the host and instance areas (CONTRACT.md "Events"). */
export const AGENT_EVENT_SUBJECTS = [SUBJECTS.event('host', '*'), SUBJECTS.event('instance', '*')] as const;

const INBOX = '_INBOX';
const ownInbox = (prefix: string): string => `${prefix}.>`;

export function serviceUser(role: ServiceRole): RoleUser {
  const replies = ownInbox(INBOX);
  switch (role) {
    case 'ipam':
      return {
        user: 'ipam',
        role,
        inboxPrefix: INBOX,
        permissions: perms([SUBJECTS.eventsAll, ...ownStreamSubjects(EVENTS_STREAM.name)], ['orangery.ipam.>', replies], true),
      };
    case 'scheduler':
      return {
        user: 'scheduler',
        role,
        inboxPrefix: INBOX,
        permissions: perms(
          [
            'orangery.ipam.>',
            'orangery.agent.*.>',
            SUBJECTS.eventsAll,
            ...ownStreamSubjects(EVENTS_STREAM.name),
            ...ownStreamSubjects(SCALE_STREAM.name),
            // its durable scale consumer: create/update, look up, pull, ack
            `${JS_API}.CONSUMER.*.${SCALE_STREAM.name}`,
            `${JS_API}.CONSUMER.*.${SCALE_STREAM.name}.>`,
            `${JS_API}.CONSUMER.DURABLE.CREATE.${SCALE_STREAM.name}.>`,
            `${JS_API}.CONSUMER.MSG.NEXT.${SCALE_STREAM.name}.>`,
            `$JS.ACK.${SCALE_STREAM.name}.>`,
          ],
          ['orangery.scheduler.>', SUBJECTS.heartbeatsAll, SUBJECTS.eventsAll, replies],
          true,
        ),
      };
    case 'migrator':
      return {
        user: 'migrator',
        role,
        inboxPrefix: INBOX,
        permissions: perms(
          ['orangery.ipam.>', 'orangery.scheduler.>', 'orangery.agent.*.>', SUBJECTS.eventsAll, ...ownStreamSubjects(EVENTS_STREAM.name)],
          ['orangery.migrator.>', SUBJECTS.heartbeatsAll, SUBJECTS.eventsAll, replies],
          true,
        ),
      };
    case 'console':
      // The operators' HTTP front: what its API offers (CONTRACT.md "Console") and no more —
      // pools (no allocate, bind or release), hosts, instances, envs, migrations, scale
      // requests (it publishes them for `POST .../scale`) and the event stream (SSE).
      return {
        user: 'console',
        role,
        inboxPrefix: `${INBOX}_console`,
        permissions: perms(
          [
            SUBJECTS.ipam.poolCreate,
            SUBJECTS.ipam.poolGet,
            SUBJECTS.ipam.poolList,
            SUBJECTS.scheduler.hostsList,
            SUBJECTS.scheduler.instancesList,
            'orangery.scheduler.envs.>',
            'orangery.migrator.>',
            SUBJECTS.scaleAll,
            ...streamReaderSubjects(EVENTS_STREAM.name),
          ],
          [SUBJECTS.eventsAll, SUBJECTS.heartbeatsAll, ownInbox(`${INBOX}_console`)],
          false,
        ),
      };
  }
}

/**
 * A person (or script) with power: every command of the contract, scale requests, events.
 * Not the scheduler's internal slot API (`orangery.scheduler.slot.*`, `host.drain`), not
 * the agents' commands: those would let anyone bypass the saga's fencing.
 */
export function operatorUser(): RoleUser {
  const inbox = `${INBOX}_operator`;
  return {
    user: 'operator',
    role: 'operator',
    inboxPrefix: inbox,
    permissions: perms(
      [...OPERATOR_REQUESTS, SUBJECTS.scaleAll, ...streamReaderSubjects(EVENTS_STREAM.name)],
      [SUBJECTS.eventsAll, SUBJECTS.heartbeatsAll, ownInbox(inbox)],
      false,
    ),
  };
}

/** An upstream system: publishes scale requests (JetStream acks come to its inbox) and reads events. */
export function upstreamUser(): RoleUser {
  const inbox = `${INBOX}_upstream`;
  return {
    user: 'upstream',
    role: 'upstream',
    inboxPrefix: inbox,
    permissions: perms([SUBJECTS.scaleAll, ...streamReaderSubjects(EVENTS_STREAM.name)], [SUBJECTS.eventsAll, ownInbox(inbox)], false),
  };
}

/**
 * A host agent: heartbeats on its own hosts' subjects only (NATS wildcards match whole
 * tokens, so a vmware-agent's ESXi hosts are listed one by one, not by prefix), the host and
 * instance event areas, its own hosts' command subjects (so a reply there comes from it) and
 * its own reply inbox. Replies to the commands it serves are allowed by `allow_responses`.
 */
export function agentUser(spec: AgentSpec): RoleUser {
  const bad = [spec.name, ...spec.hosts].find((h) => !new RegExp(HOST_ID_PATTERN).test(h));
  if (bad !== undefined) throw new Error(`host id '${bad}' must match ${HOST_ID_PATTERN}`);
  if (spec.hosts.length === 0) throw new Error(`agent '${spec.name}' serves no host`);
  const inbox = agentInboxPrefix(spec.name);
  return {
    user: `agent-${spec.name}`,
    role: spec.swarm ? 'swarm-agent' : 'agent',
    inboxPrefix: inbox,
    hosts: sorted(spec.hosts),
    permissions: perms(
      [
        ...spec.hosts.map((h) => SUBJECTS.heartbeat(h)),
        ...AGENT_EVENT_SUBJECTS,
        ...ensureStreamSubjects(EVENTS_STREAM.name),
        ...(spec.swarm ? SWARM_AGENT_REQUESTS : []),
      ],
      [...spec.hosts.map((h) => `orangery.agent.${h}.>`), ownInbox(inbox)],
      true,
    ),
  };
}

/** Every user of a deployment: the four services, an operator, an upstream publisher, the agents. */
export function allUsers(agents: readonly AgentSpec[]): RoleUser[] {
  const users = [serviceUser('ipam'), serviceUser('scheduler'), serviceUser('migrator'), serviceUser('console'), operatorUser(), upstreamUser()];
  users.push(...agents.map(agentUser));
  const names = new Set<string>();
  for (const u of users) {
    if (names.has(u.user)) throw new Error(`two agents named '${u.user.replace(/^agent-/, '')}'`);
    names.add(u.user);
  }
  // An agent's reply inbox is `_INBOX_<host id>`: a host named like a role's inbox
  // (`console`, `operator`, `upstream`) would read that role's replies.
  const inboxOwner = new Map<string, string>();
  for (const u of users) {
    if (u.inboxPrefix === '_INBOX') continue; // the three control-plane services share it, and only they may read it
    const other = inboxOwner.get(u.inboxPrefix);
    if (other !== undefined) throw new Error(`${u.user} would share the reply inbox ${u.inboxPrefix} with ${other}: give the host another id`);
    inboxOwner.set(u.inboxPrefix, u.user);
  }
  const hostOwner = new Map<string, string>();
  for (const u of users) {
    for (const h of u.hosts ?? []) {
      const other = hostOwner.get(h);
      if (other !== undefined) throw new Error(`host '${h}' is listed for both ${other} and ${u.user}`);
      hostOwner.set(h, u.user);
    }
  }
  return users;
}

const q = (s: string): string => JSON.stringify(s);
const list = (xs: readonly string[]): string => `[${xs.map(q).join(', ')}]`;

/**
 * The `authorization` block of a nats-server configuration. `passwordOf` gives what the
 * server stores for a user (a bcrypt hash).
 */
export function authorizationBlock(users: readonly RoleUser[], passwordOf: (user: string) => string): string {
  return `authorization {\n  users: [\n${userEntries(users, passwordOf)}\n  ]\n}\n`;
}

/** The users' entries of an `authorization { users: [...] }` list, comma separated. */
export function userEntries(users: readonly RoleUser[], passwordOf: (user: string) => string): string {
  const lines = users.map((u) => {
    const p = u.permissions;
    const responses = p.allowResponses ? ', allow_responses: { max: 1, expires: "15m" }' : '';
    return (
      `    { user: ${q(u.user)}, password: ${q(passwordOf(u.user))}, permissions: {\n` +
      `        publish: { allow: ${list(p.publish.allow)} },\n` +
      `        subscribe: { allow: ${list(p.subscribe.allow)} }${responses} } }`
    );
  });
  return lines.join(',\n');
}
