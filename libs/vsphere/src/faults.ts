// SOAP faults of vCenter as errors with a readable message.
import { VsphereFault, VsphereLoginError } from './errors';
import { asObject, childText, decodeValue, elements, kid, MoRef, xsiType, type VimObject, type XmlNode } from './xml';

/** Simple fields of a fault, e.g. "requestedState=poweredOn, existingState=poweredOff". */
function detailText(details: VimObject): string {
  return Object.entries(details)
    .filter(
      ([k, v]) =>
        k !== '$type' &&
        k !== 'faultMessage' &&
        (typeof v === 'string' || typeof v === 'number' || typeof v === 'boolean' || v instanceof MoRef) &&
        String(v) !== '',
    )
    .map(([k, v]) => `${k}=${String(v)}`)
    .join(', ');
}

export function faultMessage(what: string, faultName: string, message: string | undefined, details: VimObject): string {
  // vcsim's localized messages are Go type names ("*types.InvalidPowerState"): not worth showing.
  const msg = message && !message.startsWith('*types.') && message !== faultName ? `: ${message}` : '';
  const d = detailText(details);
  return `${what} failed: ${faultName}${msg}${d ? ` (${d})` : ''}`;
}

export function faultOf(method: string, fault: XmlNode, user: string): VsphereFault {
  const faultString = childText(fault, 'faultstring');
  const [detail] = elements(kid(fault, 'detail'));
  const faultName = xsiType(detail?.node)?.replace(/^.*:/, '') ?? detail?.name.replace(/Fault$/, '') ?? 'SoapFault';
  const decoded = detail ? asObject(decodeValue(detail.node)) : undefined;
  const { $type: _t, ...details } = decoded ?? {};
  if (faultName === 'InvalidLogin') {
    return new VsphereLoginError(
      faultName,
      `vCenter login failed for user ${JSON.stringify(user)}: wrong user name or password (InvalidLogin)`,
      method,
      details as VimObject,
    );
  }
  if (faultName === 'NotAuthenticated') {
    return new VsphereFault(faultName, `${method}: the vCenter session is not (or no longer) logged in (NotAuthenticated)`, method, details as VimObject);
  }
  return new VsphereFault(faultName, faultMessage(method, faultName, faultString, details as VimObject), method, details as VimObject);
}
