// The vSphere Web Services (SOAP, vim25) session: login, calls with transparent re-login,
// keep-alive, the PropertyCollector and task waiting. VM and inventory calls live in
// vms.ts and inventory.ts on top of this.
import { VsphereFault, VsphereTaskError, VsphereTimeoutError, VsphereTransportError } from './errors';
import { faultMessage, faultOf } from './faults';
import {
  filterSpec,
  objectContent,
  taskInfoOf,
  updateSet,
  viewSpec,
  type FilterSpec,
  type ObjectContent,
  type TaskInfo,
  type UpdateSet,
} from './property-collector';
import { InventoryApi } from './inventory';
import { httpTransport, type SoapTransport } from './transport';
import { VmApi } from './vms';
import { asMoRef, childText, decodeValue, envelope, kid, kids, MoRef, parseXml, text, toMoRef, type SoapValue, type VimValue, type XmlNode } from './xml';

export interface VsphereLogger {
  debug?(obj: object, msg: string): void;
  info?(obj: object, msg: string): void;
  warn?(obj: object, msg: string): void;
}

export interface VsphereClientOptions {
  /** `https://vcenter/sdk`; plain `http://` for simulators. */
  url: string;
  username: string;
  password: string;
  /** Accept a self-signed certificate. */
  insecure?: boolean;
  /** Per SOAP call (default 60 s). */
  callTimeoutMs?: number;
  /** Keep the session alive with a cheap call this often (default 5 min; 0 = off). */
  keepAliveMs?: number;
  /** Replaces HTTP (unit tests replay recorded responses). */
  transport?: SoapTransport;
  logger?: VsphereLogger;
}

export interface ServiceContent {
  rootFolder: MoRef;
  propertyCollector: MoRef;
  viewManager: MoRef;
  sessionManager: MoRef;
  searchIndex: MoRef;
  customizationSpecManager?: MoRef;
  eventManager?: MoRef;
  taskManager?: MoRef;
  about: { name: string; fullName: string; version: string; apiVersion: string; apiType: string; instanceUuid: string };
}

export interface UserSession {
  key: string;
  userName: string;
}

export interface WaitTaskOptions {
  /** Default 30 min. */
  timeoutMs?: number;
  onProgress?: (percent: number, info: TaskInfo) => void;
  signal?: AbortSignal;
}

const SERVICE_INSTANCE = new MoRef('ServiceInstance', 'ServiceInstance');
const NO_RELOGIN = new Set(['Login', 'Logout', 'RetrieveServiceContent']);

export class VsphereClient {
  readonly url: URL;
  readonly username: string;
  readonly vms: VmApi;
  readonly inventory: InventoryApi;
  /** Increments on every (re-)login: property filters of an older session are gone. */
  sessionGeneration = 0;
  session: UserSession | undefined;
  #password: string;
  #cookie: string | undefined;
  #content: ServiceContent | undefined;
  #apiVersion = '6.5';
  #relogin: Promise<void> | undefined;
  #keepAlive: NodeJS.Timeout | undefined;
  readonly #transport: SoapTransport;
  readonly #closeTransport: () => void;
  readonly #callTimeoutMs: number;
  readonly #keepAliveMs: number;
  readonly #log: VsphereLogger;
  #closed = false;

  constructor(opts: VsphereClientOptions) {
    this.url = new URL(opts.url);
    if (this.url.username || this.url.password) throw new Error('put credentials in username/password, not in the vCenter URL');
    if (!opts.username || !opts.password) throw new Error('vCenter username and password are required');
    this.username = opts.username;
    this.#password = opts.password;
    this.#callTimeoutMs = opts.callTimeoutMs ?? 60_000;
    this.#keepAliveMs = opts.keepAliveMs ?? 300_000;
    this.#log = opts.logger ?? {};
    if (opts.transport) {
      this.#transport = opts.transport;
      this.#closeTransport = () => undefined;
    } else {
      const t = httpTransport(this.url, { insecure: opts.insecure });
      this.#transport = t;
      this.#closeTransport = t.close;
    }
    this.vms = new VmApi(this);
    this.inventory = new InventoryApi(this);
  }

  /** Connects and logs in: RetrieveServiceContent, then SessionManager.Login. */
  static async connect(opts: VsphereClientOptions): Promise<VsphereClient> {
    const client = new VsphereClient(opts);
    try {
      await client.login();
    } catch (e) {
      client.close();
      throw e;
    }
    return client;
  }

  get serviceContent(): ServiceContent {
    if (!this.#content) throw new Error('not connected: call login() first');
    return this.#content;
  }

  async retrieveServiceContent(): Promise<ServiceContent> {
    const res = await this.call('RetrieveServiceContent', SERVICE_INSTANCE);
    const rv = kid(res, 'returnval');
    const ref = (name: string) => toMoRef(kid(rv, name));
    const about = kid(rv, 'about');
    const need = (name: string) => {
      const r = ref(name);
      if (!r) throw new VsphereFault('InvalidResponse', `RetrieveServiceContent: no ${name} in the answer`, 'RetrieveServiceContent');
      return r;
    };
    const content: ServiceContent = {
      rootFolder: need('rootFolder'),
      propertyCollector: need('propertyCollector'),
      viewManager: need('viewManager'),
      sessionManager: need('sessionManager'),
      searchIndex: need('searchIndex'),
      customizationSpecManager: ref('customizationSpecManager'),
      eventManager: ref('eventManager'),
      taskManager: ref('taskManager'),
      about: {
        name: childText(about, 'name') ?? '',
        fullName: childText(about, 'fullName') ?? '',
        version: childText(about, 'version') ?? '',
        apiVersion: childText(about, 'apiVersion') ?? '',
        apiType: childText(about, 'apiType') ?? '',
        instanceUuid: childText(about, 'instanceUuid') ?? '',
      },
    };
    if (/^\d+\.\d+(\.\d+)*$/.test(content.about.apiVersion)) this.#apiVersion = content.about.apiVersion;
    this.#content = content;
    return content;
  }

  async login(): Promise<UserSession> {
    if (this.#closed) throw new Error('client closed');
    if (!this.#content) await this.retrieveServiceContent();
    this.#cookie = undefined;
    const res = await this.call('Login', this.serviceContent.sessionManager, { userName: this.username, password: this.#password });
    const rv = kid(res, 'returnval');
    this.session = { key: childText(rv, 'key') ?? '', userName: childText(rv, 'userName') ?? this.username };
    this.sessionGeneration++;
    this.#log.info?.({ user: this.username, vcenter: this.url.host }, 'vCenter session opened');
    this.#startKeepAlive();
    return this.session;
  }

  /** Ends the session (best effort) and releases connections. */
  async logout(): Promise<void> {
    this.#stopKeepAlive();
    try {
      if (this.session && this.#content) await this.call('Logout', this.#content.sessionManager, {}, { timeoutMs: 10_000 });
    } catch {
      /* the session may already be gone; logging out is best effort */
    } finally {
      this.session = undefined;
      this.close();
    }
  }

  /** Stops the keep-alive and closes connections without a Logout call. */
  close(): void {
    this.#closed = true;
    this.#stopKeepAlive();
    this.#closeTransport();
  }

  /** ServiceInstance.CurrentTime: the keep-alive call (also proves the session works). */
  async currentTime(): Promise<string> {
    return text(kid(await this.call('CurrentTime', SERVICE_INSTANCE), 'returnval'));
  }

  #startKeepAlive(): void {
    this.#stopKeepAlive();
    if (this.#keepAliveMs <= 0) return;
    this.#keepAlive = setInterval(() => {
      this.currentTime().catch((e: unknown) => this.#log.warn?.({ err: errorText(e) }, 'vCenter keep-alive failed'));
    }, this.#keepAliveMs);
    this.#keepAlive.unref();
  }

  #stopKeepAlive(): void {
    if (this.#keepAlive) clearInterval(this.#keepAlive);
    this.#keepAlive = undefined;
  }

  /**
   * One SOAP call. Returns the `<MethodResponse>` element. A NotAuthenticated fault on a
   * logged-in client logs in again once (shared by concurrent callers) and repeats the
   * call: the server did not run it, so repeating it is safe.
   */
  async call(method: string, thisRef: MoRef, args: Readonly<Record<string, SoapValue>> = {}, opts: { timeoutMs?: number } = {}): Promise<XmlNode> {
    try {
      return await this.#callOnce(method, thisRef, args, opts.timeoutMs);
    } catch (e) {
      if (!(e instanceof VsphereFault) || e.faultName !== 'NotAuthenticated' || NO_RELOGIN.has(method) || !this.session || this.#closed) throw e;
      this.#log.warn?.({ method, user: this.username }, 'vCenter session lost; logging in again');
      this.#relogin ??= this.login()
        .then(() => undefined)
        .finally(() => (this.#relogin = undefined));
      await this.#relogin;
      return this.#callOnce(method, thisRef, args, opts.timeoutMs);
    }
  }

  async #callOnce(method: string, thisRef: MoRef, args: Readonly<Record<string, SoapValue>>, timeoutMs?: number): Promise<XmlNode> {
    if (this.#closed) throw new Error(`${method}: client closed`);
    const headers: Record<string, string> = {
      'Content-Type': 'text/xml; charset=utf-8',
      SOAPAction: `"urn:vim25/${this.#apiVersion}"`,
    };
    if (this.#cookie) headers.Cookie = this.#cookie;
    this.#log.debug?.({ method, this: thisRef.toString() }, 'vSphere call');
    const res = await this.#transport({ method, body: envelope(method, thisRef, args), headers, timeoutMs: timeoutMs ?? this.#callTimeoutMs });
    for (const c of res.setCookie) {
      const m = /^(vmware_soap_session=[^;]*)/.exec(c);
      if (m) this.#cookie = m[1];
    }
    let doc: XmlNode;
    try {
      doc = parseXml(res.body);
    } catch (e) {
      throw new VsphereTransportError(`${method}: vCenter answered HTTP ${res.status} with malformed XML`, method, `HTTP_${res.status}`, { cause: e });
    }
    const body = kid(kid(doc, 'Envelope'), 'Body');
    const fault = kid(body, 'Fault');
    if (fault) throw faultOf(method, fault, this.username);
    const answer = kid(body, `${method}Response`);
    if (res.status !== 200 || !answer) {
      throw new VsphereTransportError(`${method}: vCenter answered HTTP ${res.status} without a SOAP response`, method, `HTTP_${res.status}`);
    }
    return answer;
  }

  /** `returnval` of a call, decoded (undefined when the method returned nothing). */
  async callValue(
    method: string,
    thisRef: MoRef,
    args: Readonly<Record<string, SoapValue>> = {},
    opts: { timeoutMs?: number } = {},
  ): Promise<VimValue | undefined> {
    const rv = kids(await this.call(method, thisRef, args, opts), 'returnval');
    if (rv.length === 0) return undefined;
    if (rv.length > 1) return rv.map((n) => decodeValue(n));
    return decodeValue(rv[0]!);
  }

  // ------------------------------------------------------------ PropertyCollector

  /**
   * RetrievePropertiesEx, following ContinueRetrievePropertiesEx tokens to the end.
   * `timeoutMs` bounds the whole retrieval (every page), not each call.
   */
  async retrieve(specs: readonly FilterSpec[], opts: { maxObjects?: number; timeoutMs?: number } = {}): Promise<ObjectContent[]> {
    const pc = this.serviceContent.propertyCollector;
    const left = deadlineOf(opts.timeoutMs, 'RetrievePropertiesEx');
    const out: ObjectContent[] = [];
    let res = await this.call('RetrievePropertiesEx', pc, { specSet: specs.map(filterSpec), options: { maxObjects: opts.maxObjects } }, { timeoutMs: left() });
    for (;;) {
      const rv = kid(res, 'returnval');
      if (!rv) break;
      out.push(...kids(rv, 'objects').map(objectContent));
      const token = childText(rv, 'token');
      if (!token) break;
      res = await this.call('ContinueRetrievePropertiesEx', pc, { token }, { timeoutMs: left() });
    }
    return out;
  }

  /** Some properties of one object; a missing object is a ManagedObjectNotFound fault. */
  async retrieveOne(obj: MoRef, pathSet: readonly string[]): Promise<Record<string, VimValue | undefined>> {
    const [found] = await this.retrieve([{ propSet: [{ type: obj.type, pathSet }], objectSet: [{ obj }] }]);
    if (!found) throw new VsphereFault('ManagedObjectNotFound', `${obj.toString()} does not exist (any more)`, 'RetrievePropertiesEx');
    return found.props;
  }

  /**
   * Every object of `type` below `root` (default: the root folder), with `pathSet`.
   * `timeoutMs` bounds the view and the retrieval together.
   */
  async listObjects(type: string, pathSet: readonly string[], root?: MoRef, opts: { timeoutMs?: number } = {}): Promise<ObjectContent[]> {
    const left = deadlineOf(opts.timeoutMs, `listing ${type}`);
    const view = await this.containerView(root ?? this.serviceContent.rootFolder, [type], left());
    try {
      return await this.retrieve([viewSpec(view, { [type]: pathSet })], { timeoutMs: left() });
    } finally {
      await this.call('DestroyView', view).catch(() => undefined);
    }
  }

  /** ViewManager.CreateContainerView: every object of `types` below `root`, recursively. */
  async containerView(root: MoRef, types: readonly string[], timeoutMs?: number): Promise<MoRef> {
    const view = asMoRef(
      await this.callValue('CreateContainerView', this.serviceContent.viewManager, { container: root, type: [...types], recursive: true }, { timeoutMs }),
    );
    if (!view) throw new VsphereFault('InvalidResponse', 'CreateContainerView returned no view', 'CreateContainerView');
    return view;
  }

  /** PropertyCollector.CreateFilter for WaitForUpdatesEx (filters belong to the session). */
  async createFilter(spec: FilterSpec, partialUpdates = true): Promise<MoRef> {
    const ref = asMoRef(await this.callValue('CreateFilter', this.serviceContent.propertyCollector, { spec: filterSpec(spec), partialUpdates }));
    if (!ref) throw new VsphereFault('InvalidResponse', 'CreateFilter returned no filter', 'CreateFilter');
    return ref;
  }

  async destroyFilter(filter: MoRef): Promise<void> {
    await this.call('DestroyPropertyFilter', filter);
  }

  /**
   * WaitForUpdatesEx: changes since `version` ('' = everything, as the first update set).
   * Returns undefined when nothing changed within `maxWaitSeconds`.
   */
  async waitForUpdates(version: string, opts: { maxWaitSeconds?: number; maxObjectUpdates?: number } = {}): Promise<UpdateSet | undefined> {
    const wait = opts.maxWaitSeconds ?? 30;
    const res = await this.call(
      'WaitForUpdatesEx',
      this.serviceContent.propertyCollector,
      { version, options: { maxWaitSeconds: wait, maxObjectUpdates: opts.maxObjectUpdates } },
      { timeoutMs: wait * 1000 + this.#callTimeoutMs },
    );
    const rv = kid(res, 'returnval');
    return rv ? updateSet(rv) : undefined;
  }

  // ------------------------------------------------------------ tasks

  async taskInfo(task: MoRef): Promise<TaskInfo> {
    return taskInfoOf(task, (await this.retrieveOne(task, ['info'])).info);
  }

  /**
   * Waits for a task to end: its result on success, a VsphereTaskError naming the fault
   * on error. Polls with backoff (100 ms to 1 s); a lost vCenter surfaces as the call's
   * VsphereTransportError, never as a hang.
   */
  async waitForTask(task: MoRef, opts: WaitTaskOptions = {}): Promise<VimValue | undefined> {
    const deadline = Date.now() + (opts.timeoutMs ?? 30 * 60_000);
    let pause = 100;
    let lastProgress = -1;
    for (;;) {
      opts.signal?.throwIfAborted();
      const info = await this.taskInfo(task);
      if (info.state === 'success') return info.result;
      if (info.state === 'error') {
        const err = info.error ?? { faultName: 'UnknownFault', details: {} };
        const what = info.name ?? info.descriptionId ?? 'task';
        throw new VsphereTaskError(
          err.faultName,
          faultMessage(`${what} on ${info.entityName ?? task.value}`, err.faultName, err.message, err.details),
          what,
          err.details,
          task.value,
          info.entityName,
        );
      }
      if (info.progress !== undefined && info.progress !== lastProgress) {
        lastProgress = info.progress;
        opts.onProgress?.(info.progress, info);
      }
      if (Date.now() + pause > deadline) {
        throw new VsphereTimeoutError(
          `${info.name ?? 'task'} ${task.value} on ${info.entityName ?? '?'} still ${info.state} after ${opts.timeoutMs ?? 1_800_000} ms`,
          info.name ?? 'task',
        );
      }
      await new Promise((r) => setTimeout(r, pause));
      pause = Math.min(1000, pause * 2);
    }
  }

  /** Starts a `*_Task` method and waits for it. */
  async runTask(method: string, thisRef: MoRef, args: Readonly<Record<string, SoapValue>> = {}, opts: WaitTaskOptions = {}): Promise<VimValue | undefined> {
    const task = asMoRef(await this.callValue(method, thisRef, args));
    if (!task) throw new VsphereFault('InvalidResponse', `${method} returned no task`, method);
    return this.waitForTask(task, opts);
  }
}

/**
 * The time left of an overall budget, for each call in turn: undefined without a budget
 * (each call gets the client's own timeout); a spent budget is a VsphereTimeoutError before
 * any call leaves.
 */
function deadlineOf(timeoutMs: number | undefined, what: string): () => number | undefined {
  if (timeoutMs === undefined) return () => undefined;
  const deadline = Date.now() + timeoutMs;
  return () => {
    const left = deadline - Date.now();
    if (left > 0) return left;
    throw new VsphereTimeoutError(`${what}: no answer from vCenter within ${timeoutMs} ms`, what);
  };
}

function errorText(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

export {
  taskInfoOf,
  viewSpec,
  type FilterSpec,
  type ObjectContent,
  type ObjectUpdate,
  type TaskInfo,
  type TraversalSpec,
  type UpdateSet,
} from './property-collector';
