// SOAP envelopes for vim25: a small escaping serializer for requests (every name checked,
// every text and attribute escaped) and fast-xml-parser for responses. Nothing here
// parses XML by hand.
import { XMLParser } from 'fast-xml-parser';

/** A managed object reference: `<x type="VirtualMachine">vm-42</x>`. */
export class MoRef {
  constructor(
    readonly type: string,
    readonly value: string,
  ) {}

  toString(): string {
    return `${this.type}:${this.value}`;
  }

  equals(other: MoRef | undefined): boolean {
    return other !== undefined && other.type === this.type && other.value === this.value;
  }
}

export const moRef = (type: string, value: string) => new MoRef(type, value);

/**
 * A request value. Objects are data objects whose fields are written in insertion order
 * (vim25 types are XML Schema sequences: build them in WSDL order); `$type` becomes
 * `xsi:type` (needed wherever the declared type is a base type); `$value` with a `$type`
 * is a typed primitive for `xsd:anyType` slots, e.g. `{ $type: 'xsd:string', $value: 'x' }`.
 */
export type SoapValue = string | number | boolean | bigint | MoRef | SoapObject | readonly SoapValue[] | undefined | null;
export interface SoapObject {
  readonly $type?: string;
  readonly $value?: string | number | boolean;
  readonly [field: string]: SoapValue;
}

const NAME = /^[A-Za-z_][A-Za-z0-9_.-]*$/;
const TYPE_NAME = /^(xsd:)?[A-Za-z_][A-Za-z0-9_]*$/;
// XML 1.0 forbids these characters outright; fail loudly rather than send a request the
// server would reject with a parse error that hides which value was wrong.
// eslint-disable-next-line no-control-regex
const FORBIDDEN = /[\u0000-\u0008\u000B\u000C\u000E-\u001F\uFFFE\uFFFF]/;

export function escapeXml(text: string): string {
  if (FORBIDDEN.test(text)) throw new Error('value holds a character that XML 1.0 cannot carry');
  return text
    .replace(/&/g, '&amp;')
    .replace(/</g, '&lt;')
    .replace(/>/g, '&gt;')
    .replace(/"/g, '&quot;')
    .replace(/'/g, '&apos;')
    .replace(/\r/g, '&#xD;')
    .replace(/\n/g, '&#xA;')
    .replace(/\t/g, '&#x9;');
}

function checkName(name: string): string {
  if (!NAME.test(name)) throw new Error(`invalid XML element name ${JSON.stringify(name)}`);
  return name;
}

function typeAttr(t: string | undefined): string {
  if (t === undefined) return '';
  if (!TYPE_NAME.test(t)) throw new Error(`invalid xsi:type ${JSON.stringify(t)}`);
  return ` xsi:type="${t}"`;
}

/** One element (or several, for an array) named `name` holding `value`. */
export function serialize(name: string, value: SoapValue): string {
  if (value === undefined || value === null) return '';
  checkName(name);
  if (Array.isArray(value)) return (value as readonly SoapValue[]).map((v) => serialize(name, v)).join('');
  if (value instanceof MoRef) return `<${name} type="${escapeXml(value.type)}">${escapeXml(value.value)}</${name}>`;
  switch (typeof value) {
    case 'string':
      return `<${name}>${escapeXml(value)}</${name}>`;
    case 'number':
      if (!Number.isFinite(value)) throw new Error(`${name}: not a finite number`);
      return `<${name}>${String(value)}</${name}>`;
    case 'bigint':
    case 'boolean':
      return `<${name}>${String(value)}</${name}>`;
    default: {
      const obj = value as SoapObject;
      const open = `<${name}${typeAttr(obj.$type)}>`;
      if (obj.$value !== undefined) return `${open}${escapeXml(String(obj.$value))}</${name}>`;
      let inner = '';
      for (const [k, v] of Object.entries(obj)) if (k !== '$type' && k !== '$value') inner += serialize(k, v);
      return `${open}${inner}</${name}>`;
    }
  }
}

/** The SOAP envelope of one vim25 method call. */
export function envelope(method: string, thisRef: MoRef, args: Readonly<Record<string, SoapValue>> = {}): string {
  checkName(method);
  let body = serialize('_this', thisRef);
  for (const [k, v] of Object.entries(args)) body += serialize(k, v);
  return (
    '<?xml version="1.0" encoding="UTF-8"?>' +
    '<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" ' +
    'xmlns:xsd="http://www.w3.org/2001/XMLSchema" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">' +
    `<soapenv:Body><${method} xmlns="urn:vim25">${body}</${method}></soapenv:Body></soapenv:Envelope>`
  );
}

// ---------------------------------------------------------------- parsing

/** A parsed element: children by (prefixed) name, always arrays; `#text`; `@_attr`. */
export interface XmlNode {
  [key: string]: XmlNode[] | string | undefined;
}

const parser = new XMLParser({
  ignoreAttributes: false,
  attributeNamePrefix: '@_',
  // Keep prefixes: a MoRef inside anyType carries both `type` and `xsi:type`.
  removeNSPrefix: false,
  parseTagValue: false,
  parseAttributeValue: false,
  trimValues: false,
  alwaysCreateTextNode: true,
  // Go's encoder (vcsim) writes &#34; &#xA; and friends.
  htmlEntities: true,
  isArray: (_name: string, _path: unknown, _leaf: boolean, isAttribute: boolean) => !isAttribute,
});

export function parseXml(text: string): XmlNode {
  return parser.parse(text) as XmlNode;
}

const localName = (key: string) => key.slice(key.indexOf(':') + 1);
const isElementKey = (key: string) => !key.startsWith('@_') && key !== '#text' && key !== '?xml';

/** Child elements with this local name (namespace prefix ignored). */
export function kids(node: XmlNode | undefined, name: string): XmlNode[] {
  if (!node) return [];
  const out: XmlNode[] = [];
  for (const [k, v] of Object.entries(node)) if (isElementKey(k) && localName(k) === name && Array.isArray(v)) out.push(...v);
  return out;
}

export const kid = (node: XmlNode | undefined, name: string): XmlNode | undefined => kids(node, name)[0];

/** Every child element in document order within a name (names in first-seen order). */
export function elements(node: XmlNode | undefined): { name: string; node: XmlNode }[] {
  if (!node) return [];
  const out: { name: string; node: XmlNode }[] = [];
  for (const [k, v] of Object.entries(node)) {
    if (!isElementKey(k) || !Array.isArray(v)) continue;
    for (const n of v) out.push({ name: localName(k), node: n });
  }
  return out;
}

export const text = (node: XmlNode | undefined): string => (node && typeof node['#text'] === 'string' ? node['#text'] : '');
export const attr = (node: XmlNode | undefined, name: string): string | undefined => {
  const v = node?.[`@_${name}`];
  return typeof v === 'string' ? v : undefined;
};
export const xsiType = (node: XmlNode | undefined): string | undefined => {
  if (!node) return undefined;
  for (const [k, v] of Object.entries(node)) if (k.startsWith('@_') && localName(k.slice(2)) === 'type' && k.includes(':')) return v as string;
  return undefined;
};
const stripXsd = (t: string) => t.slice(t.indexOf(':') + 1);

export const childText = (node: XmlNode | undefined, name: string): string | undefined => {
  const k = kid(node, name);
  return k ? text(k) : undefined;
};

export function toMoRef(node: XmlNode | undefined): MoRef | undefined {
  const t = attr(node, 'type');
  return node && t !== undefined ? new MoRef(t, text(node)) : undefined;
}

/** A decoded vim25 value: primitives, MoRefs, arrays, and data objects tagged with `$type`. */
export type VimValue = string | number | boolean | MoRef | VimValue[] | VimObject;
export interface VimObject {
  $type?: string;
  [field: string]: VimValue | undefined;
}

const NUMERIC = new Set(['int', 'long', 'short', 'byte', 'float', 'double']);

function decodePrimitive(t: string, s: string): VimValue | undefined {
  if (t === 'string' || t === 'dateTime' || t === 'anyURI' || t === 'base64Binary') return s;
  if (NUMERIC.has(t)) return Number(s);
  if (t === 'boolean') return s === 'true' || s === '1';
  return undefined;
}

/**
 * Decodes an element without a schema. `xsi:type` drives the shape where present
 * (xsd primitives, ManagedObjectReference, ArrayOfX are always arrays); otherwise a leaf
 * with a `type` attribute is a MoRef, other leaves are strings, and a field that repeats
 * becomes an array (a field that may repeat but occurs once stays single: use `asArray`).
 */
export function decodeValue(node: XmlNode, elementName?: string): VimValue {
  const declared = xsiType(node);
  const t = declared ? stripXsd(declared) : elementName;
  if (t !== undefined) {
    const prim = decodePrimitive(t, text(node));
    if (prim !== undefined) return prim;
    if (t === 'ManagedObjectReference') return toMoRef(node) ?? text(node);
    if (declared && t.startsWith('ArrayOf')) return elements(node).map((e) => decodeValue(e.node, e.name));
  }
  const fields = elements(node);
  if (fields.length === 0) {
    const ref = toMoRef(node);
    if (ref) return ref;
    // A typed leaf with text is an enum value (xsi:type="VirtualMachinePowerState").
    return declared && text(node) === '' ? { $type: stripXsd(declared) } : text(node);
  }
  const obj: VimObject = declared ? { $type: stripXsd(declared) } : {};
  const counts = new Map<string, number>();
  for (const { name } of fields) counts.set(name, (counts.get(name) ?? 0) + 1);
  for (const { name, node: child } of fields) {
    const v = decodeValue(child);
    if ((counts.get(name) ?? 0) > 1) ((obj[name] ??= []) as VimValue[]).push(v);
    else obj[name] = v;
  }
  return obj;
}

// ---------------------------------------------------------------- typed access to decoded values

export const asArray = <T = VimValue>(v: VimValue | undefined): T[] => (v === undefined ? [] : Array.isArray(v) ? (v as T[]) : [v as T]);
export const asObject = (v: VimValue | undefined): VimObject | undefined =>
  v !== undefined && typeof v === 'object' && !Array.isArray(v) && !(v instanceof MoRef) ? v : undefined;
export const asString = (v: VimValue | undefined): string | undefined =>
  typeof v === 'string' ? v : typeof v === 'number' || typeof v === 'boolean' ? String(v) : undefined;
export const asNumber = (v: VimValue | undefined): number | undefined => {
  if (typeof v === 'number') return v;
  if (typeof v === 'string' && v.trim() !== '' && Number.isFinite(Number(v))) return Number(v);
  return undefined;
};
export const asBoolean = (v: VimValue | undefined): boolean | undefined =>
  typeof v === 'boolean' ? v : v === 'true' ? true : v === 'false' ? false : undefined;
export const asMoRef = (v: VimValue | undefined): MoRef | undefined => (v instanceof MoRef ? v : undefined);

/** Follows a dotted path through decoded objects (`summary.hardware.numCpuCores`). */
export function pick(v: VimValue | undefined, path: string): VimValue | undefined {
  let cur = v;
  for (const part of path.split('.')) {
    const o = asObject(cur);
    if (!o) return undefined;
    cur = o[part];
  }
  return cur;
}
