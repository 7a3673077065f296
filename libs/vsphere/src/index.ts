// A small typed vSphere Web Services (SOAP, vim25) client. See README.md.
export {
  VsphereClient,
  taskInfoOf,
  type FilterSpec,
  type ObjectContent,
  type ObjectUpdate,
  type ServiceContent,
  type TaskInfo,
  type TraversalSpec,
  type UpdateSet,
  type UserSession,
  type VsphereClientOptions,
  type VsphereLogger,
  type WaitTaskOptions,
} from './client';
export { VsphereFault, VsphereLoginError, VsphereTaskError, VsphereTimeoutError, VsphereTransportError } from './errors';
export { InventoryApi, type ClusterInfo, type DatacenterInfo, type DatastoreInfo, type HostInfo, type HostState, type NetworkInfo } from './inventory';
export { httpTransport, type HttpTransportOptions, type SoapRequest, type SoapResponse, type SoapTransport } from './transport';
export {
  customizationSpec,
  extraConfigOf,
  nicsOf,
  VmApi,
  type CloneOptions,
  type ConfigChange,
  type CustomizationInput,
  type NicChange,
  type NicDevice,
  type PowerState,
  type VmInfo,
} from './vms';
export {
  asArray,
  asBoolean,
  asMoRef,
  asNumber,
  asObject,
  asString,
  MoRef,
  moRef,
  pick,
  type SoapObject,
  type SoapValue,
  type VimObject,
  type VimValue,
} from './xml';
