/**
 * The console's own pages, served by itself (no CDN is reachable from a bank's network,
 * and no framework build): /docs lists the operations of /openapi.json with "try it" forms;
 * / is the dashboard. Scripts are separate files so the Content-Security-Policy can forbid
 * inline script. Tokens are kept in the browser's localStorage, sent only as a bearer header.
 */

export const PAGE_CSS = `
:root { font-family: system-ui, sans-serif; color: #1d2a1f; background: #f6f8f4; }
body { margin: 0 auto; max-width: 1200px; padding: 1rem; }
header { display: flex; gap: 1rem; align-items: center; flex-wrap: wrap; }
h1 { font-size: 1.3rem; margin: 0.5rem 0; } h2 { font-size: 1.1rem; margin: 1.2rem 0 0.4rem; }
input, textarea, select, button { font: inherit; padding: 0.25rem 0.4rem; }
button { cursor: pointer; } button:focus, input:focus, textarea:focus { outline: 2px solid #e07b00; }
.op { border: 1px solid #cdd6c8; border-radius: 6px; margin: 0.5rem 0; padding: 0.5rem; background: #fff; }
.m { font-weight: bold; display: inline-block; min-width: 3.5rem; }
.GET { color: #1d6b2f; } .POST { color: #8a4b00; } .PUT { color: #2b4f9e; }
pre { background: #eef2ea; padding: 0.5rem; overflow: auto; max-height: 24rem; }
.cards { display: grid; grid-template-columns: repeat(auto-fill, minmax(260px, 1fr)); gap: 0.6rem; }
.card { background: #fff; border: 1px solid #cdd6c8; border-radius: 6px; padding: 0.5rem; }
.bar { background: #e4e9e0; height: 0.6rem; border-radius: 3px; overflow: hidden; margin: 0.15rem 0 0.35rem; }
.bar > span { display: block; height: 100%; background: #3c8d4f; }
.chip { display: inline-block; font-size: 0.8rem; border-radius: 3px; padding: 0 0.3rem; margin: 0.1rem; color: #fff; background: #3c8d4f; }
.chip.vmware { background: #2b4f9e; } .chip.swarm { background: #7a3ea1; }
.chip.failed, .chip.stopped { background: #b3261e; } .chip.placed, .chip.starting { background: #a07000; }
.state-lost, .state-unknown { color: #b3261e; } .state-draining { color: #a07000; }
table { border-collapse: collapse; width: 100%; background: #fff; } td, th { border-bottom: 1px solid #e4e9e0; padding: 0.2rem 0.4rem; text-align: left; font-size: 0.9rem; }
#feed { max-height: 16rem; overflow: auto; font-family: ui-monospace, monospace; font-size: 0.8rem; background: #fff; }
.err { color: #b3261e; }
.actions label { margin-right: 0.5rem; white-space: nowrap; } .actions input[type='number'] { width: 5rem; }
#inflight li[data-state='completed'] { color: #1d6b2f; } #inflight li[data-state='rejected'], #inflight li[data-state='failed'] { color: #b3261e; }
dialog { border: 1px solid #cdd6c8; border-radius: 6px; }
`;

export const DOCS_HTML = `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Orangery console API</title>
<meta name="viewport" content="width=device-width, initial-scale=1"><link rel="stylesheet" href="/console.css"></head>
<body><header><h1>Orangery console API</h1>
<label>Token <input id="token" type="password" autocomplete="off" size="32"></label>
<a href="/openapi.json">openapi.json</a> <a href="/">dashboard</a></header>
<p id="intro"></p><main id="ops">loading /openapi.json…</main>
<script src="/docs.js"></script></body></html>`;

export const DOCS_JS = `
'use strict';
const tokenInput = document.getElementById('token');
tokenInput.value = localStorage.getItem('orangery-token') || '';
tokenInput.addEventListener('change', () => localStorage.setItem('orangery-token', tokenInput.value));
const el = (tag, attrs = {}, ...kids) => { const e = document.createElement(tag); for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v); for (const c of kids) e.append(c); return e; };
function skeleton(schema) {
  if (!schema) return {};
  if (schema.type === 'object') { const o = {}; for (const k of schema.required || []) o[k] = skeleton(schema.properties[k]); return o; }
  if (schema.type === 'integer' || schema.type === 'number') return schema.minimum || 1;
  if (schema.type === 'array') return [];
  if (schema.anyOf) return skeleton(schema.anyOf[0]);
  if (schema.const !== undefined) return schema.const;
  return '';
}
fetch('/openapi.json').then((r) => r.json()).then((doc) => {
  document.getElementById('intro').textContent = doc.info.description;
  const main = document.getElementById('ops'); main.textContent = '';
  for (const [path, item] of Object.entries(doc.paths)) for (const [method, op] of Object.entries(item)) {
    const M = method.toUpperCase();
    const form = el('form', { class: 'op' });
    form.append(el('div', {}, el('span', { class: 'm ' + M }, M), ' ', el('code', {}, path), ' — ', op.summary, ' ', el('small', {}, '(' + op['x-orangery-role'] + ')')));
    const inputs = {};
    for (const p of op.parameters || []) {
      const i = el('input', { name: p.name, placeholder: p.in + (p.required ? ', required' : '') });
      inputs[p.name] = [p, i]; form.append(' ', el('label', {}, p.name + ' ', i));
    }
    let body;
    if (op.requestBody) { body = el('textarea', { rows: '5', cols: '70', 'aria-label': 'JSON body' }); body.value = JSON.stringify(skeleton(op.requestBody.content['application/json'].schema), null, 2); form.append(el('div', {}, body)); }
    const out = el('pre', { hidden: '' });
    form.append(el('div', {}, el('button', { type: 'submit' }, 'Try it')), out);
    form.addEventListener('submit', async (ev) => {
      ev.preventDefault();
      let url = path; const qs = new URLSearchParams(); const headers = { Authorization: 'Bearer ' + tokenInput.value };
      for (const [name, [p, i]] of Object.entries(inputs)) {
        if (!i.value) continue;
        if (p.in === 'path') url = url.replace('{' + name + '}', encodeURIComponent(i.value));
        else if (p.in === 'query') qs.set(name, i.value); else headers[name] = i.value;
      }
      if (M === 'GET' && path.endsWith('/events') && !qs.has('follow')) qs.set('follow', 'false');
      if (qs.toString()) url += '?' + qs;
      out.hidden = false; out.textContent = M + ' ' + url + ' …';
      try {
        const r = await fetch(url, { method: M, headers: body ? { ...headers, 'Content-Type': 'application/json' } : headers, body: body ? body.value : undefined });
        const text = await r.text(); let shown = text; try { shown = JSON.stringify(JSON.parse(text), null, 2); } catch {}
        out.textContent = r.status + ' ' + r.statusText + '\\n' + shown;
      } catch (e) { out.textContent = String(e); }
    });
    main.append(form);
  }
});
`;

export const DASHBOARD_HTML = `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Orangery</title>
<meta name="viewport" content="width=device-width, initial-scale=1"><link rel="stylesheet" href="/console.css"></head>
<body><header><h1>Orangery</h1>
<form id="signin"><label>Token <input id="token" type="password" autocomplete="off" size="32"></label> <button>Sign in</button></form>
<a href="/docs">API docs</a></header>
<p id="status" role="status"></p>
<h2>Scale an app</h2>
<form id="scale-form" class="actions">
<label>env <input name="env" required pattern="[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?" size="10"></label>
<label>app <input name="app" required pattern="[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?" size="12"></label>
<label>replicas <input name="replicas" type="number" min="0" max="10000" required size="4"></label>
<label>pool <input name="pool" required size="10"></label>
<label>backend <select name="backend"><option>auto</option><option>docker</option><option>vmware</option><option>swarm</option></select></label>
<label>image <input name="image" size="14"></label>
<label>template <input name="template" size="12"></label>
<label>CPU <input name="cpu" type="number" min="0.1" step="0.1" value="1" size="3"></label>
<label>memory MB <input name="memory" type="number" min="16" value="512" size="5"></label>
<button>Scale…</button></form>
<h2>In flight</h2><ul id="inflight"></ul>
<h2>Hosts</h2><div id="hosts" class="cards"></div>
<h2>Pools</h2><div id="pools" class="cards"></div>
<h2>Instances</h2><table><thead><tr><th>id</th><th>state</th><th>backend</th><th>host</th><th>ip</th><th>mac</th><th></th></tr></thead><tbody id="instances"></tbody></table>
<h2>Environments</h2>
<table><thead><tr><th>name</th><th>backends</th><th>pools</th><th>host labels</th><th>defaults</th><th>updated</th></tr></thead><tbody id="envs"></tbody></table>
<form id="env-form" class="actions">
<label>name <input name="name" required pattern="[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?" size="10"></label>
<label>backends <input name="backends" required placeholder="docker,vmware" size="14"></label>
<label>pools <input name="pools" placeholder="any" size="12"></label>
<label>host labels <input name="labels" placeholder="tier=gold,zone=a" size="16"></label>
<label>default backend <select name="defaultBackend"><option value="">-</option><option>auto</option><option>docker</option><option>vmware</option><option>swarm</option></select></label>
<label>default spread <select name="defaultSpread"><option value="">-</option><option>host</option><option>none</option></select></label>
<button>Save env…</button></form>
<h2>Events</h2><div id="feed" aria-live="polite"></div>
<dialog id="confirm"><form method="dialog"><p id="confirm-text"></p><button value="cancel">Cancel</button> <button value="ok" id="confirm-ok">Confirm</button></form></dialog>
<script src="/dashboard.js"></script></body></html>`;

export const DASHBOARD_JS = `
'use strict';
const params = new URLSearchParams(location.search);
if (params.get('token')) { localStorage.setItem('orangery-token', params.get('token')); history.replaceState(null, '', '/'); }
let token = localStorage.getItem('orangery-token') || '';
const $ = (id) => document.getElementById(id);
$('token').value = token;
$('signin').addEventListener('submit', (e) => { e.preventDefault(); token = $('token').value; localStorage.setItem('orangery-token', token); refresh(); restartFeed(); });
const el = (tag, attrs = {}, ...kids) => { const e = document.createElement(tag); for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v); for (const c of kids) e.append(c); return e; };
const bar = (label, used, total) => { const pct = total > 0 ? Math.min(100, Math.round((100 * used) / total)) : 0; const s = el('span'); s.style.width = pct + '%'; return [el('div', {}, label + ': ' + used + ' / ' + total + ' (' + pct + '%)'), el('div', { class: 'bar', role: 'meter', 'aria-valuenow': String(pct), 'aria-valuemin': '0', 'aria-valuemax': '100', 'aria-label': label }, s)]; };
const showError = (e) => { $('status').textContent = String(e.message || e); $('status').className = 'err'; };
async function api(method, path, body) {
  const headers = { Authorization: 'Bearer ' + token };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  const r = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  const data = await r.json();
  if (!r.ok) throw new Error(data.error ? data.error.code + ': ' + data.error.message : r.statusText);
  return data;
}
function confirmAction(text) {
  return new Promise((resolve) => {
    const d = $('confirm'); $('confirm-text').textContent = text;
    d.addEventListener('close', () => resolve(d.returnValue === 'ok'), { once: true });
    d.returnValue = ''; d.showModal(); $('confirm-ok').focus();
  });
}
// Work in flight: scale requests and migrations, followed until they end.
const inflight = [];
function renderInflight() {
  $('inflight').replaceChildren(...inflight.map((w) => el('li', { 'data-kind': w.kind, 'data-id': w.id, 'data-state': w.state }, w.text)));
}
async function follow(w) {
  for (;;) {
    try {
      if (w.kind === 'scale') {
        const s = await api('GET', '/api/v1/requests/' + encodeURIComponent(w.id)).catch((e) => (String(e.message).startsWith('NOT_FOUND') ? { state: 'pending' } : Promise.reject(e)));
        const inst = await api('GET', '/api/v1/instances?env=' + w.env + '&app=' + w.app);
        const running = inst.instances.filter((i) => i.slot < w.replicas && i.state === 'running').length;
        w.state = s.state;
        w.text = 'scale ' + w.env + '/' + w.app + ': ' + running + '/' + w.replicas + ' slots running, ' + s.state + (s.reason ? ' (' + s.reason.code + ': ' + s.reason.message + ')' : '');
      } else {
        const m = await api('GET', '/api/v1/migrations/' + w.id);
        w.state = m.state;
        w.text = 'migrate ' + m.instanceId + ': ' + m.state + (m.state === 'running' ? ', step ' + (m.step || (m.steps.length ? m.steps[m.steps.length - 1].name : 'starting')) : '') + (m.error ? ' (' + m.error.code + ': ' + m.error.message + ')' : '');
      }
    } catch (e) { w.text = w.kind + ' ' + w.id + ': ' + e.message; }
    renderInflight();
    if (w.state !== 'pending' && w.state !== 'running') { scheduleRefresh(); return; }
    await new Promise((r) => setTimeout(r, 1000));
  }
}
function track(w) { inflight.unshift(w); while (inflight.length > 20) inflight.pop(); renderInflight(); follow(w); }
$('scale-form').addEventListener('submit', async (e) => {
  e.preventDefault();
  const f = new FormData(e.target); const v = (k) => String(f.get(k) || '').trim();
  const body = { replicas: Number(v('replicas')), pool: v('pool'), backend: v('backend'), resources: { cpu: Number(v('cpu')), memoryMb: Number(v('memory')) } };
  if (v('image')) body.image = v('image'); if (v('template')) body.template = v('template');
  if (!(await confirmAction('Scale ' + v('env') + '/' + v('app') + ' to ' + body.replicas + ' replicas in pool ' + body.pool + '?'))) return;
  try {
    const r = await api('POST', '/api/v1/apps/' + encodeURIComponent(v('env')) + '/' + encodeURIComponent(v('app')) + '/scale', body);
    track({ kind: 'scale', id: r.requestId, env: v('env'), app: v('app'), replicas: body.replicas, state: 'pending', text: 'scale ' + v('env') + '/' + v('app') + ': accepted' });
  } catch (err) { showError(err); }
});
// An env's record: the whole record is replaced (what the form leaves empty is removed); containerSecurity only through the API or CLI.
$('env-form').addEventListener('submit', async (e) => {
  e.preventDefault();
  const f = new FormData(e.target); const v = (k) => String(f.get(k) || '').trim();
  const items = (k) => v(k).split(',').map((x) => x.trim()).filter((x) => x !== '');
  const body = { backends: items('backends') };
  if (v('pools')) body.pools = items('pools');
  if (v('labels')) body.hostLabels = Object.fromEntries(items('labels').map((kv) => [kv.slice(0, kv.indexOf('=') < 0 ? kv.length : kv.indexOf('=')), kv.indexOf('=') < 0 ? '' : kv.slice(kv.indexOf('=') + 1)]));
  const defaults = {}; if (v('defaultBackend')) defaults.backend = v('defaultBackend'); if (v('defaultSpread')) defaults.spread = v('defaultSpread');
  if (Object.keys(defaults).length > 0) body.defaults = defaults;
  if (!(await confirmAction('Save env ' + v('name') + ' (backends ' + body.backends.join(', ') + ')? Running instances stay; its next scale requests follow it.'))) return;
  try { await api('PUT', '/api/v1/envs/' + encodeURIComponent(v('name')), body); $('status').textContent = 'env ' + v('name') + ' saved'; $('status').className = ''; refreshEnvs(); }
  catch (err) { showError(err); }
});
async function refreshEnvs() {
  try {
    const r = await api('GET', '/api/v1/envs');
    const text = (o) => Object.entries(o || {}).map(([k, x]) => k + '=' + x).join(', ');
    $('envs').replaceChildren(...r.envs.map((x) => el('tr', { 'data-env': x.name }, ...[x.name, x.backends.join(', '), (x.pools || []).join(', ') || 'any', text(x.hostLabels), text(x.defaults), x.updatedAt].map((c) => el('td', {}, c)))));
  } catch (e) { showError(e); }
}
async function migrate(instanceId) {
  if (!(await confirmAction('Migrate ' + instanceId + ' to another host (same IP and MAC)?'))) return;
  try { const r = await api('POST', '/api/v1/instances/' + encodeURIComponent(instanceId) + '/migrate', {}); track({ kind: 'migration', id: r.migrationId, state: 'running', text: 'migrate ' + instanceId + ': started' }); }
  catch (err) { showError(err); }
}
async function drain(hostId) {
  if (!(await confirmAction('Drain ' + hostId + '? Every instance on it moves to other hosts.'))) return;
  try { const r = await api('POST', '/api/v1/hosts/' + encodeURIComponent(hostId) + '/drain', {}); for (const id of r.migrationIds) track({ kind: 'migration', id, state: 'running', text: 'migration ' + id + ': started' }); }
  catch (err) { showError(err); }
}
const button = (text, label, onclick) => { const b = el('button', { type: 'button', 'aria-label': label }, text); b.addEventListener('click', onclick); return b; };
async function refresh() {
  try {
    const [hosts, pools, inst] = await Promise.all([api('GET', '/api/v1/hosts'), api('GET', '/api/v1/pools'), api('GET', '/api/v1/instances')]);
    $('status').textContent = ''; $('status').className = '';
    const byHost = {};
    for (const i of inst.instances) (byHost[i.host] = byHost[i.host] || []).push(i);
    $('hosts').replaceChildren(...hosts.hosts.map((h) => el('div', { class: 'card', 'data-host': h.id },
      el('strong', {}, h.id), ' ', el('span', { class: 'state-' + h.state }, h.backend + ', ' + h.state), ' ',
      ...(h.state === 'ready' ? [button('Drain…', 'drain ' + h.id, () => drain(h.id))] : []),
      ...bar('CPU', h.allocated.cpu, h.capacity.cpu), ...bar('memory MB', h.allocated.memoryMb, h.capacity.memoryMb),
      el('div', {}, ...(byHost[h.id] || []).map((i) => el('span', { class: 'chip ' + (i.backend || '') + ' ' + i.state, tabindex: '0', title: i.id + ' ' + i.state + ' ' + (i.ip || '') + ' ' + (i.mac || '') }, i.app + ':' + i.slot))))));
    $('pools').replaceChildren(...pools.pools.map((p) => el('div', { class: 'card', 'data-pool': p.name }, el('strong', {}, p.name), ' ' + p.cidr + ' vlan ' + p.vlan, ...bar('used', p.used, p.size))));
    $('instances').replaceChildren(...inst.instances.map((i) => el('tr', { 'data-instance': i.id }, ...[i.id, i.state, i.backend, i.host, i.ip, i.mac].map((v) => el('td', {}, v == null ? '' : String(v))),
      el('td', {}, ...(i.state === 'running' ? [button('Migrate…', 'migrate ' + i.id, () => migrate(i.id))] : [])))));
  } catch (e) { showError(e); }
  refreshEnvs();
}
let lastId; let feedAbort;
async function followEvents(signal) {
  while (!signal.aborted) {
    try {
      const headers = { Authorization: 'Bearer ' + token };
      if (lastId !== undefined) headers['Last-Event-ID'] = String(lastId);
      const r = await fetch('/api/v1/events' + (lastId === undefined ? '?history=50' : ''), { headers, signal });
      if (!r.ok) throw new Error('events: ' + r.status);
      const reader = r.body.pipeThrough(new TextDecoderStream()).getReader();
      let buf = '';
      for (;;) {
        const { value, done } = await reader.read(); if (done) break;
        buf += value; let i;
        while ((i = buf.indexOf('\\n\\n')) >= 0) {
          const block = buf.slice(0, i); buf = buf.slice(i + 2);
          let id, data = '';
          for (const line of block.split('\\n')) { if (line.startsWith('id: ')) id = Number(line.slice(4)); else if (line.startsWith('data: ')) data += line.slice(6); }
          if (id === undefined || !data) continue;
          lastId = id; const ev = JSON.parse(data);
          $('feed').prepend(el('div', { 'data-seq': String(id) }, '#' + id + ' ' + ev.time + ' ' + ev.type.replace('io.orangery.', '') + ' ' + ev.subject));
          while ($('feed').childElementCount > 200) $('feed').lastChild.remove();
          scheduleRefresh();
        }
      }
    } catch (e) { /* reconnect below, resuming after lastId */ }
    await new Promise((r) => setTimeout(r, 3000));
  }
}
function restartFeed() { if (feedAbort) feedAbort.abort(); feedAbort = new AbortController(); followEvents(feedAbort.signal); }
let pending;
function scheduleRefresh() { if (!pending) pending = setTimeout(() => { pending = undefined; refresh(); }, 500); }
refresh(); restartFeed(); setInterval(refresh, 10000);
`;
