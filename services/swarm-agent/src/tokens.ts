export const SWARM = Symbol('SWARM');
export const NODE_ENGINES = Symbol('NODE_ENGINES');
export const IPAM_BLOCKS = Symbol('IPAM_BLOCKS');
export const EVENTS = Symbol('EVENTS');
export const SWARM_AGENT = Symbol('SWARM_AGENT');
export const SWARM_NODES = Symbol('SWARM_NODES');
export const TASK_WATCH = Symbol('TASK_WATCH');
