export const VCENTER = Symbol('VCENTER');
export const AGENT_SERVICE = Symbol('AGENT_SERVICE');
export const EVENTS = Symbol('EVENTS');
export const ESXI_HOSTS = Symbol('ESXI_HOSTS');
export const VCENTER_CHANGES = Symbol('VCENTER_CHANGES');
export const CHANGE_WATCHER = Symbol('CHANGE_WATCHER');
