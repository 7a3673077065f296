export const IPAM_SERVICE = Symbol('IPAM_SERVICE');
export const IPAM_STORE = Symbol('IPAM_STORE');
export const OUTBOX = Symbol('OUTBOX');
export const IP_BLOCKS = Symbol('IP_BLOCKS');
