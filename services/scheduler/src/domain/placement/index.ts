export * from './types';
export { Inventory, RACK_LABEL, needOf, toMillicores, type Need } from './inventory';
export { FEASIBILITY, ELIGIBILITY, CAPACITY, STATIC, type HostFilter } from './filters';
export { SPREAD_PENALTY } from './scoring';
export { place, placeMany } from './place';
