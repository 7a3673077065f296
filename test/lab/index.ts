// The lab: a small data centre on one Linux machine, for integration tests and benchmarks.
// See README.md in this directory for the topology and the rules.
export {
  cleanLabLeftovers,
  ensureLabPackages,
  isLabAddress,
  Lab,
  LAB_DIR,
  LAB_FABRIC,
  LAB_GATEWAY,
  LAB_PROBE,
  LAB_SUBNET,
  LAB_VM_NETWORK,
  type LabOptions,
  type LabServer,
  type LabSwarmTask,
  type LabVm,
} from './lab';
export { LAB_IMAGES, SVC_INDEX, SVC_PORT } from './images';
export { DOCKER_CLI, LAB_PREFIX, LAB_RUN_DIR, labResidue, labVcsimProcesses, type CleanupReport, type LabResidue, type RunResult } from './sys';
export {
  MAX_SWARM_NODES,
  SWARM_NODE_ENGINE_TEMPLATE,
  SWARM_SOCKET_DIR,
  SWARM_UPLINK,
  swarmNodeAddress,
  type LabSwarm,
  type LabSwarmNode,
  type LabSwarmOptions,
} from './swarm';
export { buildVcsim, VCSIM_MAIN, type LabVcenter, type VcenterOptions } from './vcsim';
export {
  ArpAccounting,
  ArpWatcher,
  formatReport,
  formatTimeline,
  summarize,
  type ArpIpReport,
  type ArpReport,
  type ArpSegment,
  type ArpWatcherOptions,
} from './arp-watch';
