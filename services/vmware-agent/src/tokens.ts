export const VCENTER = Symbol('VCENTER');
export const AGENT_SERVICE = Symbol('AGENT_SERVICE');
export const EVENTS = Symbol('EVENTS');
