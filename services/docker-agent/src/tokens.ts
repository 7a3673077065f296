export const ENGINE = Symbol('ENGINE');
export const AGENT_SERVICE = Symbol('AGENT_SERVICE');
export const EVENTS = Symbol('EVENTS');
export const ENGINE_FACTS = Symbol('ENGINE_FACTS');
export const SELF_FENCE = Symbol('SELF_FENCE');
export const USAGE_METER = Symbol('USAGE_METER');
export const WIRE_PROBE = Symbol('WIRE_PROBE');
