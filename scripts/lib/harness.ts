/** Shared by `simulate` and `bench`: start the real server, open N Chromium devices, drive a run over HTTP. */
import { chromium, type Browser, type BrowserContext, type Page } from '@playwright/test';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { CHROMIUM_ARGS } from '../../playwright.config.ts';
import type { RoundRecord } from '../../shared/api.ts';
import { freePort } from '../../server/cluster/services.ts';

export interface ServerHandle {
  url: string;
  token: string;
  process: ChildProcess;
  stop(): Promise<void>;
}

export async function startServer(env: Record<string, string> = {}): Promise<ServerHandle> {
  const port = await freePort();
  const dataDir = mkdtempSync(path.join(tmpdir(), 'fl-sim-'));
  const token = `sim-${Math.random().toString(36).slice(2)}`;
  // SERVER_NODE_ARGS passes flags to the server's node, e.g. "--cpu-prof --cpu-prof-dir=prof" to profile it under load
  const nodeArgs = (process.env.SERVER_NODE_ARGS ?? '').split(' ').filter(Boolean);
  const child = spawn(process.execPath, [...nodeArgs, '--import', 'tsx', 'server/main.ts'], { env: { ...process.env, ...env, PORT: String(port), HOST: '127.0.0.1', ADMIN_TOKEN: token, DATA_DIR: dataDir }, stdio: ['ignore', 'ignore', 'inherit'] });
  const url = `http://127.0.0.1:${port}`;
  const t0 = Date.now();
  for (;;) {
    if (child.exitCode !== null) throw new Error(`server exited with code ${child.exitCode}`);
    try {
      if ((await fetch(`${url}/api/health`)).ok) break;
    } catch {
      /* not up yet */
    }
    if (Date.now() - t0 > 60_000) throw new Error('server did not start within 60 s');
    await new Promise((r) => setTimeout(r, 200));
  }
  return {
    url,
    token,
    process: child,
    stop: async () => {
      child.kill('SIGTERM');
      await new Promise((r) => child.once('exit', r));
      rmSync(dataDir, { recursive: true, force: true });
    },
  };
}

export async function launchBrowser(): Promise<Browser> {
  return chromium.launch({ executablePath: process.env.CHROMIUM_PATH ?? '/usr/bin/chromium', headless: true, args: CHROMIUM_ARGS });
}

export interface Tab {
  context: BrowserContext;
  page: Page;
}

/** The page of device `client` of `n`, joining by itself. */
export function deviceUrl(baseUrl: string, n: number, client: number, query: Record<string, string | number>): string {
  const q = new URLSearchParams({ autojoin: '1', clients: String(n), client: String(client), ...Object.fromEntries(Object.entries(query).map(([k, v]) => [k, String(v)])) });
  return `${baseUrl}/?${q}`;
}

export async function openDevices(browser: Browser, baseUrl: string, n: number, query: Record<string, string | number>): Promise<Tab[]> {
  const tabs = await Promise.all(
    Array.from({ length: n }, async (_, client) => {
      const context = await browser.newContext();
      const page = await context.newPage();
      await page.goto(deviceUrl(baseUrl, n, client, query), { timeout: 120_000 }); // a busy machine loads 4 tabs slowly
      return { context, page };
    }),
  );
  for (const t of tabs) await t.page.waitForFunction(() => window.__fl?.ready && window.__fl.snapshot?.connection === 'connected', undefined, { timeout: 180_000 });
  return tabs;
}

export async function api<T>(server: ServerHandle, route: string, init: { method?: string; body?: unknown } = {}): Promise<{ status: number; body: T }> {
  const res = await fetch(`${server.url}${route}`, { method: init.method ?? 'GET', headers: { authorization: `Bearer ${server.token}`, 'content-type': 'application/json' }, ...(init.body !== undefined ? { body: JSON.stringify(init.body) } : {}) });
  return { status: res.status, body: (await res.json()) as T };
}

export type RoundRow = RoundRecord;

/** Polls the run until it ends, calling onRound once per newly recorded round. */
export async function followRun(server: ServerHandle, runId: number, onRound: (r: RoundRow) => void, onTick?: () => Promise<void>, everyMs = 500): Promise<{ status: string; reason: string | null; rounds: RoundRow[] }> {
  let seen = 0;
  for (;;) {
    const { body: rounds } = await api<RoundRow[]>(server, `/api/runs/${runId}/rounds`);
    for (const r of rounds.slice(seen)) onRound(r);
    seen = rounds.length;
    const { body: run } = await api<{ status: string; reason: string | null }>(server, `/api/runs/${runId}`);
    if (run.status !== 'running') {
      const { body: final } = await api<RoundRow[]>(server, `/api/runs/${runId}/rounds`);
      for (const r of final.slice(seen)) onRound(r);
      return { ...run, rounds: final };
    }
    await onTick?.();
    await new Promise((r) => setTimeout(r, everyMs));
  }
}

export const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length === 0 ? Number.NaN : s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
};

export function parseArgs(argv: string[], spec: Record<string, string>): Record<string, string> {
  const out: Record<string, string> = { ...spec };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (!a.startsWith('--')) throw new Error(`unexpected argument "${a}"`);
    const key = a.slice(2);
    if (!(key in spec)) throw new Error(`unknown option --${key}; known: ${Object.keys(spec).map((k) => `--${k}`).join(' ')}`);
    const value = argv[i + 1];
    if (value === undefined || value.startsWith('--')) throw new Error(`--${key} needs a value`);
    out[key] = value;
    i++;
  }
  return out;
}
