/** Fixtures that open N devices, each in its own BrowserContext (so each has its own IndexedDB). */
import { test as base, expect, type APIRequestContext, type BrowserContext, type Page } from '@playwright/test';
import { E2E_TOKEN } from '../playwright.config.ts';

export interface Device {
  context: BrowserContext;
  page: Page;
  errors: string[];
}

export interface DeviceOptions {
  partition?: 'iid' | 'shards' | 'dirichlet';
  clients: number;
  client: number;
  examples?: number;
  seed?: number;
  backend?: 'webgl' | 'wasm' | 'cpu';
  /** more query parameters (e.g. the simulation's faults: faultSilent=1) */
  query?: Record<string, string>;
}

export const deviceUrl = (o: DeviceOptions) => {
  const q = new URLSearchParams({ autojoin: '1', partition: o.partition ?? 'iid', clients: String(o.clients), client: String(o.client), examples: String(o.examples ?? 600), seed: String(o.seed ?? 1) });
  if (o.backend) q.set('backend', o.backend);
  for (const [k, v] of Object.entries(o.query ?? {})) q.set(k, v);
  return `/?${q}`;
};

export const test = base.extend<{ openDevices: (options: DeviceOptions[]) => Promise<Device[]>; admin: APIRequestContext }>({
  openDevices: async ({ browser }, use) => {
    const opened: Device[] = [];
    await use(async (options) => {
      const devices = await Promise.all(
        options.map(async (o) => {
          const context = await browser.newContext();
          const page = await context.newPage();
          const errors: string[] = [];
          page.on('console', (m) => m.type() === 'error' && errors.push(m.text()));
          page.on('pageerror', (e) => errors.push(e.message));
          await page.goto(deviceUrl(o));
          return { context, page, errors };
        }),
      );
      for (const d of devices) await d.page.waitForFunction(() => window.__fl?.ready && window.__fl.snapshot?.connection === 'connected', undefined, { timeout: 120_000 });
      opened.push(...devices);
      return devices;
    });
    await Promise.all(opened.map((d) => d.context.close()));
  },
  admin: async ({ playwright, baseURL }, use) => {
    const ctx = await playwright.request.newContext({ baseURL, extraHTTPHeaders: { authorization: `Bearer ${E2E_TOKEN}` } });
    await use(ctx);
    await ctx.dispose();
  },
});

export { expect };

/** A slot of the tab's IndexedDB 'state' store (the held model, the codec's residual…): its key and version, and its values as float32. */
export async function readState(page: Page, slot: 'model' | 'residual' | 'control'): Promise<{ key?: string; version?: number; values: Float32Array } | null> {
  const raw = await page.evaluate(
    (slot) =>
      new Promise<{ key?: string; version?: number; bytes: number[] } | null>((resolve, reject) => {
        const open = indexedDB.open(window.__fl.database as string);
        open.onerror = () => reject(open.error);
        open.onsuccess = () => {
          const get = open.result.transaction('state').objectStore('state').get(slot);
          get.onsuccess = () => {
            const r = get.result as { key?: string; version?: number; values: Float32Array } | undefined;
            open.result.close();
            resolve(r ? { ...(r.key !== undefined ? { key: r.key } : {}), ...(r.version !== undefined ? { version: r.version } : {}), bytes: Array.from(new Uint8Array(r.values.buffer, r.values.byteOffset, r.values.byteLength)) } : null);
          };
        };
      }),
    slot,
  );
  if (!raw) return null;
  const { bytes, ...rest } = raw;
  return { ...rest, values: new Float32Array(Uint8Array.from(bytes).buffer) };
}

/** Waits (polling the API, no sleeps in the test) until the run is no longer active. */
export async function waitForRun(admin: APIRequestContext, runId: number, timeoutMs: number): Promise<{ status: string; reason: string | null }> {
  let run: { status: string; reason: string | null } = { status: 'running', reason: null };
  await expect
    .poll(
      async () => {
        run = (await (await admin.get(`/api/runs/${runId}`)).json()) as typeof run;
        return run.status;
      },
      { timeout: timeoutMs, intervals: [1000] },
    )
    .not.toBe('running');
  return run;
}
