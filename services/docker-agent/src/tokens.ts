export const ENGINE = Symbol('ENGINE');
export const AGENT_SERVICE = Symbol('AGENT_SERVICE');
export const EVENTS = Symbol('EVENTS');
export const ENGINE_FACTS = Symbol('ENGINE_FACTS');
