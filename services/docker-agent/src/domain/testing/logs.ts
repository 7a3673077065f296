import type { DomainLog } from '../ports';

export const silentDomainLog: DomainLog = { debug: () => undefined, info: () => undefined, warn: () => undefined };
