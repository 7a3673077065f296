import { existsSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { chromium, type Browser, type Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { REPO_ROOT, waitFor } from '@orangery/testing';
import { ensureLabPackages } from '../lab';
import { startConsoleStack, type ConsoleStack } from './fixtures/console-stack';

// The dashboard end to end in headless Chromium (Debian's `chromium`, driven by
// playwright-core): sign-in by URL, the fleet, pools and events as the console serves
// them, and a scale and a migration driven from the page until they complete. Screenshots
// are kept in .run/artifacts/console-dashboard/.
const CHROMIUM = '/usr/bin/chromium';
const OPERATOR = 'dash-operator-token-0123456789';
const VIEWER = 'dash-viewer-token-0123456789';
const SHOTS = join(REPO_ROOT, '.run', 'artifacts', 'console-dashboard');
let stack: ConsoleStack;
let browser: Browser;
let page: Page;

const shot = (name: string) => page.screenshot({ path: join(SHOTS, `${name}.png`), fullPage: true });

// eslint-disable-next-line @typescript-eslint/no-explicit-any
async function apiGet(path: string): Promise<any> {
  const r = await fetch(`${stack.base}${path}`, { headers: { Authorization: `Bearer ${VIEWER}` } });
  expect(r.status).toBe(200);
  return r.json();
}

beforeAll(async () => {
  // Debian's chromium, installed as the lab installs its packages (npm test runs as root).
  if (!existsSync(CHROMIUM)) await ensureLabPackages(['chromium']);
  mkdirSync(SHOTS, { recursive: true });
  stack = await startConsoleStack('console-dash', { hosts: 3, tokens: `ops:${OPERATOR}:operator,watcher:${VIEWER}:viewer` });
  const pool = await stack.client.request('orangery.ipam.pool.create', { name: 'sim', cidr: '198.19.0.0/16', gateway: '198.19.0.1', cooldownSeconds: 0 });
  expect(pool.ok, JSON.stringify(pool)).toBe(true);
  // Running as root (the lab needs it) requires --no-sandbox.
  browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage'] });
  page = await browser.newPage({ viewport: { width: 1366, height: 900 } });
}, 900_000);

afterAll(async () => {
  await browser?.close();
  await stack?.close();
});

describe('dashboard in headless Chromium', () => {
  it('signs in from /?token=, keeps the token out of the address bar, and shows hosts, pools and events', async () => {
    await page.goto(`${stack.base}/?token=${OPERATOR}`);
    await page.waitForSelector('#hosts .card[data-host]');
    expect(page.url()).toBe(`${stack.base}/`);
    expect(await page.locator('#hosts .card').count()).toBe(3);
    expect(await page.locator('#hosts .card').first().textContent()).toContain('docker, ready');
    await page.waitForSelector('#pools .card[data-pool="sim"]');
    expect(await page.locator('#pools .card[data-pool="sim"]').textContent()).toContain('198.19.0.0/16');
    await page.waitForSelector('#feed div[data-seq]');
    await shot('01-signed-in');
  });

  it('scales an app from the page, with confirmation, until it completes', async () => {
    const form = page.locator('#scale-form');
    await form.locator('input[name=env]').fill('test');
    await form.locator('input[name=app]').fill('web');
    await form.locator('input[name=replicas]').fill('3');
    await form.locator('input[name=pool]').fill('sim');
    await form.locator('select[name=backend]').selectOption('docker');
    await form.locator('input[name=image]').fill('svc:1');
    await form.locator('input[name=memory]').fill('256');
    await form.locator('button').click();
    await page.waitForSelector('#confirm[open]');
    expect(await page.locator('#confirm-text').textContent()).toContain('Scale test/web to 3 replicas');
    await shot('02-scale-confirm');
    await page.keyboard.press('Enter'); // the Confirm button has the focus: keyboard-usable
    await page.waitForSelector('#inflight li[data-kind="scale"][data-state="completed"]', { timeout: 60_000 });
    expect(await page.locator('#inflight li[data-kind="scale"]').textContent()).toContain('scale test/web: 3/3 slots running, completed');
    await expect.poll(() => page.locator('#instances tr[data-instance^="test:web:"]').count(), { timeout: 15_000 }).toBe(3);
    await shot('03-scaled');
    const inst = await apiGet('/api/v1/instances?env=test&app=web');
    expect(inst.instances.map((i: { state: string }) => i.state)).toEqual(['running', 'running', 'running']);
  });

  it('a cancelled confirmation sends nothing', async () => {
    const before = (await apiGet('/api/v1/instances?env=test')).instances.length;
    await page.locator('#scale-form input[name=app]').fill('never');
    await page.locator('#scale-form button').click();
    await page.waitForSelector('#confirm[open]');
    await page.keyboard.press('Escape');
    await page.waitForSelector('#confirm[open]', { state: 'detached' });
    expect(await page.locator('#inflight li[data-kind="scale"]').count()).toBe(1);
    expect((await apiGet('/api/v1/instances?env=test')).instances.length).toBe(before);
  });

  it('migrates an instance from the page until it completes, keeping its IP and MAC', async () => {
    const before = (await apiGet('/api/v1/instances?env=test&app=web')).instances[0];
    await page.locator(`#instances tr[data-instance="${before.id}"] button`).click();
    await expect.poll(() => page.locator('#confirm-text').textContent()).toContain(`Migrate ${before.id}`);
    await page.locator('#confirm-ok').click();
    await page.waitForSelector('#inflight li[data-kind="migration"][data-state="completed"]', { timeout: 60_000 });
    expect(await page.locator('#inflight li[data-kind="migration"]').first().textContent()).toContain(`migrate ${before.id}: completed`);
    const after = (await apiGet('/api/v1/instances?env=test&app=web')).instances[0];
    expect([after.ip, after.mac]).toEqual([before.ip, before.mac]);
    expect(after.host).not.toBe(before.host);
    await waitFor(
      'the page to show the new host',
      async () => (await page.locator(`#instances tr[data-instance="${before.id}"]`).textContent())?.includes(after.host),
      15_000,
    );
    await shot('04-migrated');
  });

  it('lists the environments and saves one from the page, with confirmation', async () => {
    const form = page.locator('#env-form');
    await form.locator('input[name=name]').fill('dash-env');
    await form.locator('input[name=backends]').fill('docker, vmware');
    await form.locator('input[name=pools]').fill('sim');
    await form.locator('input[name=labels]').fill('tier=gold,zone=a');
    await form.locator('select[name=defaultSpread]').selectOption('none');
    await form.locator('button').click();
    await expect.poll(() => page.locator('#confirm-text').textContent()).toContain('Save env dash-env (backends docker, vmware)');
    await page.locator('#confirm-ok').click();
    await page.waitForSelector('#envs tr[data-env="dash-env"]', { timeout: 15_000 });
    expect(await page.locator('#envs tr[data-env="dash-env"]').textContent()).toContain('tier=gold, zone=a');
    expect(await apiGet('/api/v1/envs/dash-env')).toMatchObject({
      name: 'dash-env',
      backends: ['docker', 'vmware'],
      pools: ['sim'],
      hostLabels: { tier: 'gold', zone: 'a' },
      defaults: { spread: 'none' },
    });
    await shot('04b-env-saved');
  });

  it('a viewer token sees the fleet but its commands are refused on the page', async () => {
    await page.goto(`${stack.base}/?token=${VIEWER}`);
    await page.waitForSelector('#hosts .card[data-host]');
    const readyHost = page.locator('#hosts .card button').first();
    await readyHost.click();
    await page.locator('#confirm-ok').click();
    await page.waitForSelector('#status.err');
    expect(await page.locator('#status').textContent()).toContain('FORBIDDEN');
    await shot('05-viewer-refused');
  });

  it('the /docs page lists every operation of /openapi.json and its "Try it" calls the API with the token', async () => {
    await page.goto(`${stack.base}/docs`);
    await page.waitForSelector('form.op');
    const doc = (await (await fetch(`${stack.base}/openapi.json`)).json()) as { paths: Record<string, object> };
    const operations = Object.values(doc.paths).reduce((n, item) => n + Object.keys(item).length, 0);
    expect(await page.locator('form.op').count()).toBe(operations);
    await page.fill('#token', VIEWER);
    await page.dispatchEvent('#token', 'change');
    const hosts = page.locator('form.op', { hasText: 'List the hosts' });
    await hosts.locator('button').click();
    await expect.poll(() => hosts.locator('pre').textContent(), { timeout: 15_000 }).toMatch(/^200 OK\n/);
    expect(await hosts.locator('pre').textContent()).toContain('"con-0001"');
    const create = page.locator('form.op', { hasText: 'Create an address pool' });
    await create.locator('button').click();
    await expect.poll(() => create.locator('pre').textContent(), { timeout: 15_000 }).toMatch(/^403 Forbidden\n/);
    await shot('06-docs');
  });

  it('a wrong token shows the refusal', async () => {
    await page.goto(`${stack.base}/`);
    await page.waitForSelector('#hosts .card[data-host]');
    await page.fill('#token', 'wrong-token');
    await page.click('#signin button');
    await expect.poll(() => page.locator('#status').textContent(), { timeout: 15_000 }).toContain('UNAUTHORIZED');
    await shot('07-wrong-token');
  });
});
