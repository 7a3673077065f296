// The PropertyCollector's data in plain terms (specs, contents, updates, task info) and
// their SOAP encoding and decoding; the calls themselves are VsphereClient's.
import { VsphereFault } from './errors';
import {
  asNumber,
  asObject,
  asString,
  childText,
  decodeValue,
  kid,
  kids,
  MoRef,
  toMoRef,
  xsiType,
  type SoapObject,
  type VimObject,
  type VimValue,
  type XmlNode,
} from './xml';

/** One object's properties from the PropertyCollector; `props` keyed by property path. */
export interface ObjectContent {
  obj: MoRef;
  props: Record<string, VimValue | undefined>;
  /** Properties that could not be read, with the fault's name. */
  missing: { path: string; faultName: string }[];
}

/** PropertyFilterSpec in plain terms: which properties of which objects, how to traverse. */
export interface FilterSpec {
  propSet: { type: string; pathSet?: readonly string[]; all?: boolean }[];
  objectSet: { obj: MoRef; skip?: boolean; selectSet?: readonly TraversalSpec[] }[];
}

export interface TraversalSpec {
  name?: string;
  type: string;
  path: string;
  skip?: boolean;
  /** Names of other TraversalSpecs (recursion), or nested specs. */
  selectSet?: readonly (TraversalSpec | string)[];
}

export interface ObjectUpdate {
  kind: 'enter' | 'leave' | 'modify';
  obj: MoRef;
  changes: { name: string; op: 'add' | 'remove' | 'assign' | 'indirectRemove'; val: VimValue | undefined }[];
}

export interface UpdateSet {
  version: string;
  truncated: boolean;
  filterSets: { filter: MoRef; objects: ObjectUpdate[] }[];
}

export interface TaskInfo {
  key: string;
  name?: string;
  descriptionId?: string;
  entityName?: string;
  state: 'queued' | 'running' | 'success' | 'error';
  progress?: number;
  result?: VimValue;
  error?: { faultName: string; message?: string; details: VimObject };
}

/** A retrieval of `paths` (type -> property paths) from every object a container view holds. */
export function viewSpec(view: MoRef, paths: Readonly<Record<string, readonly string[]>>): FilterSpec {
  return {
    propSet: Object.entries(paths).map(([type, pathSet]) => ({ type, pathSet })),
    objectSet: [{ obj: view, skip: true, selectSet: [{ name: 'view', type: 'ContainerView', path: 'view', skip: false }] }],
  };
}

function traversal(t: TraversalSpec | string): SoapObject {
  if (typeof t === 'string') return { $type: 'SelectionSpec', name: t };
  return {
    $type: 'TraversalSpec',
    name: t.name,
    type: t.type,
    path: t.path,
    skip: t.skip ?? false,
    selectSet: t.selectSet?.map(traversal),
  };
}

export function filterSpec(spec: FilterSpec): SoapObject {
  return {
    propSet: spec.propSet.map((p) => ({ type: p.type, all: p.all ?? false, pathSet: p.pathSet })),
    objectSet: spec.objectSet.map((o) => ({ obj: o.obj, skip: o.skip ?? false, selectSet: o.selectSet?.map(traversal) })),
  };
}

export function objectContent(n: XmlNode): ObjectContent {
  const props: Record<string, VimValue | undefined> = {};
  for (const p of kids(n, 'propSet')) {
    const name = childText(p, 'name') ?? '';
    const val = kid(p, 'val');
    props[name] = val ? decodeValue(val) : undefined;
  }
  const missing = kids(n, 'missingSet').map((m) => ({
    path: childText(m, 'path') ?? '',
    faultName: xsiType(kid(kid(m, 'fault'), 'fault')) ?? 'UnknownFault',
  }));
  const obj = toMoRef(kid(n, 'obj'));
  if (!obj) throw new VsphereFault('InvalidResponse', 'ObjectContent without obj', 'RetrievePropertiesEx');
  return { obj, props, missing };
}

export function updateSet(n: XmlNode): UpdateSet {
  return {
    version: childText(n, 'version') ?? '',
    truncated: childText(n, 'truncated') === 'true',
    filterSets: kids(n, 'filterSet').map((f) => ({
      filter: toMoRef(kid(f, 'filter')) ?? new MoRef('PropertyFilter', ''),
      objects: kids(f, 'objectSet').map((o) => ({
        kind: (childText(o, 'kind') ?? 'modify') as ObjectUpdate['kind'],
        obj: toMoRef(kid(o, 'obj')) ?? new MoRef('', ''),
        changes: kids(o, 'changeSet').map((c) => {
          const val = kid(c, 'val');
          return {
            name: childText(c, 'name') ?? '',
            op: (childText(c, 'op') ?? 'assign') as ObjectUpdate['changes'][number]['op'],
            val: val ? decodeValue(val) : undefined,
          };
        }),
      })),
    })),
  };
}

export function taskInfoOf(task: MoRef, v: VimValue | undefined): TaskInfo {
  const o = asObject(v) ?? {};
  const err = asObject(o.error);
  const fault = asObject(err?.fault);
  const { $type: faultType, ...faultFields } = fault ?? {};
  return {
    key: asString(o.key) ?? task.value,
    name: asString(o.name),
    descriptionId: asString(o.descriptionId),
    entityName: asString(o.entityName),
    state: (asString(o.state) ?? 'running') as TaskInfo['state'],
    progress: asNumber(o.progress),
    result: o.result,
    error: err ? { faultName: faultType ?? 'UnknownFault', message: asString(err.localizedMessage), details: faultFields as VimObject } : undefined,
  };
}
