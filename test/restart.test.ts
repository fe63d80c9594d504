/**
 * kill -9 of the real server process in the middle of a run: on restart the run resumes from the
 * last completed round, devices reconnect by themselves, nothing completed is lost and the
 * interrupted round is redone.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ADMIN_TOKEN, testDevice, until, useWasm, type TestDevice } from './support/server.ts';

const freePort = () =>
  new Promise<number>((resolve) => {
    const s = createServer().listen(0, '127.0.0.1', () => {
      const { port } = s.address() as { port: number };
      s.close(() => resolve(port));
    });
  });

interface Round {
  round: number;
  attempt: number;
  status: string;
  modelVersion: number;
  testAccuracy: number;
  evaluationPending?: boolean;
}

describe('server restart mid-run', () => {
  const dataDir = mkdtempSync(path.join(tmpdir(), 'fl-restart-'));
  let server: ChildProcess | undefined;
  let port = 0;
  const devices: TestDevice[] = [];
  const url = () => `http://127.0.0.1:${port}`;

  async function boot(): Promise<void> {
    server = spawn(process.execPath, ['--import', 'tsx', 'server/main.ts'], { env: { ...process.env, PORT: String(port), HOST: '127.0.0.1', ADMIN_TOKEN, DATA_DIR: dataDir }, stdio: 'ignore' });
    await until(async () => (await fetch(`${url()}/api/health`).then((r) => r.ok, () => false)) || undefined, 60_000, 'the server to start');
  }
  const get = async <T>(route: string) => (await (await fetch(`${url()}${route}`)).json()) as T;

  beforeAll(async () => {
    await useWasm();
    port = await freePort();
    await boot();
  }, 90_000);
  afterAll(async () => {
    await Promise.all(devices.map((d) => d.dispose()));
    server?.kill('SIGKILL');
    rmSync(dataDir, { recursive: true, force: true });
  });

  it('resumes from the last completed round and loses nothing', async () => {
    // The browser's device client: it reconnects by itself and proves its identity again.
    for (let i = 0; i < 2; i++) {
      const device = await testDevice(url(), i, { examples: 200 });
      devices.push(device);
      await device.join();
    }
    await until(async () => (await get<{ devices: number }>('/api/status')).devices === 2 || undefined, 20_000, 'two devices');
    const created = await fetch(`${url()}/api/runs`, { method: 'POST', headers: { authorization: `Bearer ${ADMIN_TOKEN}`, 'content-type': 'application/json' }, body: JSON.stringify({ rounds: 4, clientsPerRound: 2, minUpdates: 2, localEpochs: 2, roundTimeoutMs: 20_000 }) });
    const { id } = (await created.json()) as { id: number };

    // round 1 once its model is evaluated (its record is rewritten with the metrics while round 2 runs)
    const before = await until(async () => {
      const rounds = (await get<Round[]>(`/api/runs/${id}/rounds`)).filter((r) => !r.evaluationPending);
      return rounds.length >= 1 ? rounds : undefined;
    }, 60_000, 'round 1');
    server!.kill('SIGKILL');
    await new Promise((r) => server!.once('exit', r));
    await boot();

    const run = await until(async () => {
      const r = await get<{ status: string; reason: string }>(`/api/runs/${id}`);
      return r.status !== 'running' ? r : undefined;
    }, 90_000, 'the resumed run to finish');
    expect(run.status, run.reason).toBe('done');
    const rounds = (await get<Round[]>(`/api/runs/${id}/rounds`)).filter((r) => r.status === 'completed');
    expect(rounds.map((r) => r.round)).toEqual([1, 2, 3, 4]);
    // What was completed before the kill is exactly as it was.
    for (const r of before) expect(rounds.find((x) => x.round === r.round && x.attempt === r.attempt)).toEqual(r);
    const versions = rounds.map((r) => r.modelVersion);
    expect(new Set(versions).size).toBe(4);
    const models = await get<{ version: number }[]>('/api/models');
    for (const v of versions) expect(models.some((m) => m.version === v)).toBe(true);
  }, 200_000);
});
