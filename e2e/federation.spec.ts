import { E2E_TOKEN } from '../playwright.config.ts';
import type { RoundRecord } from '../shared/api.ts';
import { expect, readState, test, waitForRun } from './fixtures.ts';

const shots = process.env.SCREENSHOT_DIR ?? 'test-results/screenshots';

type RoundRow = RoundRecord;

test('admin calls need the token', async ({ request }) => {
  expect((await request.post('/api/runs', { data: {} })).status()).toBe(401);
  expect((await request.post('/api/runs', { data: {}, headers: { authorization: 'Bearer wrong' } })).status()).toBe(401);
  expect((await request.post('/api/runs/current/stop')).status()).toBe(401);
  const bad = await request.post('/api/runs', { data: { rounds: 0 }, headers: { authorization: `Bearer ${E2E_TOKEN}` } });
  expect(bad.status()).toBe(400);
  expect(((await bad.json()) as { error: string }).error).toContain('rounds');
});

test('four tabs train cnn-small with FedAvg and the global model learns', async ({ openDevices, admin, page }) => {
  const devices = await openDevices([0, 1, 2, 3].map((client) => ({ clients: 4, client })));
  for (const d of devices) expect(await d.page.evaluate(() => window.__fl.examples)).toBe(600);

  const status = (await (await admin.get('/api/status')).json()) as { devices: number };
  expect(status.devices).toBe(4);
  const listed = (await (await admin.get('/api/devices')).json()) as { id: string; connected: boolean }[];
  expect(listed.filter((d) => d.connected).map((d) => d.id).sort()).toEqual((await Promise.all(devices.map((d) => d.page.evaluate(() => window.__fl.deviceId)))).sort());

  const created = await admin.post('/api/runs', { data: { model: 'cnn-small', rounds: 3, clientsPerRound: 4, minUpdates: 3, localEpochs: 2, batchSize: 10, learningRate: 0.1, roundTimeoutMs: 240_000, seed: 1 } });
  expect(created.status()).toBe(201);
  const { id } = (await created.json()) as { id: number };
  expect((await admin.post('/api/runs', { data: {} })).status()).toBe(409);

  // The dashboard, watched while the run goes on.
  await page.goto('/admin');
  await page.getByLabel('Admin token').fill(E2E_TOKEN);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await expect(page.locator('#devices tr[data-device]:not(.disconnected)')).toHaveCount(4);
  await expect(devices[0]!.page.locator('#state')).toHaveText(/training|evaluating|downloading|uploading|selected/, { timeout: 120_000 });
  await devices[0]!.page.screenshot({ path: `${shots}/device-training.png`, fullPage: true });

  const run = await waitForRun(admin, id, 8 * 60_000);
  expect(run.status, run.reason ?? '').toBe('done');
  const rounds = (await (await admin.get(`/api/runs/${id}/rounds`)).json()) as RoundRow[];
  const completed = rounds.filter((r) => r.status === 'completed');
  expect(completed.map((r) => r.round)).toEqual([1, 2, 3]);
  for (const r of completed) {
    expect(r.completed).toBeGreaterThanOrEqual(3);
    expect(r.bytesUp).toBeGreaterThan(0);
    expect(r.bytesDown).toBeGreaterThan(0);
    expect(r.durationMs).toBeGreaterThan(0);
  }
  const first = completed[0]!.testAccuracy as number;
  const last = completed.at(-1)!.testAccuracy as number;
  console.log(`test accuracy per round: ${completed.map((r) => r.testAccuracy?.toFixed(4)).join(', ')}`);
  expect(last).toBeGreaterThanOrEqual(0.9);
  expect(last).toBeGreaterThan(first);

  await expect(page.locator('#rounds tbody tr[data-round-row]')).toHaveCount(3);
  await page.screenshot({ path: `${shots}/admin-four-tabs.png`, fullPage: true });
  await expect(devices[0]!.page.locator('#history tbody tr').first()).toBeVisible();
  await devices[0]!.page.screenshot({ path: `${shots}/device-four-tabs.png`, fullPage: true });

  // The latest model downloads in TF.js format and loads in the browser.
  const params = await devices[0]!.page.evaluate(() => window.__fl.loadModel('/api/models/latest/model.json'));
  expect(params).toBe(5258);
  const modelJson = (await (await admin.get('/api/models/latest/model.json')).json()) as { format: string; weightsManifest: { weights: unknown[] }[] };
  expect(modelJson.format).toBe('layers-model');
  expect(modelJson.weightsManifest[0]!.weights).toHaveLength(6);

  for (const d of devices) expect(d.errors, d.errors.join('\n')).toEqual([]);
});

test('local data survives a reload and is read back from IndexedDB', async ({ openDevices }) => {
  const [device] = await openDevices([{ clients: 8, client: 5, examples: 300, seed: 7 }]);
  const page = device!.page;
  expect(await page.evaluate(() => window.__fl.source)).toBe('provisioned');
  const before = await page.evaluate(() => ({ id: window.__fl.deviceId, examples: window.__fl.examples }));
  await page.reload();
  await page.waitForFunction(() => window.__fl?.ready && window.__fl.snapshot?.connection === 'connected');
  const after = await page.evaluate(() => ({ id: window.__fl.deviceId, examples: window.__fl.examples, source: window.__fl.source }));
  expect(after).toEqual({ ...before, source: 'indexeddb' });
});

test('a tab forced onto WebGL trains a round', async ({ openDevices, admin }) => {
  const [device] = await openDevices([{ clients: 10, client: 3, examples: 200, backend: 'webgl' }]);
  expect(await device!.page.evaluate(() => window.__fl.backend?.backend)).toBe('webgl');
  const created = await admin.post('/api/runs', { data: { rounds: 1, clientsPerRound: 1, minUpdates: 1, localEpochs: 1, roundTimeoutMs: 180_000 } });
  const { id } = (await created.json()) as { id: number };
  const run = await waitForRun(admin, id, 4 * 60_000);
  expect(run.status, run.reason ?? '').toBe('done');
  const history = await device!.page.evaluate(() => window.__fl.snapshot?.history ?? []);
  expect(history.map((h) => h.outcome)).toEqual(['counted']);
  expect(history[0]!.accuracyAfter).toBeGreaterThan(history[0]!.accuracyBefore as number);
});

test('compressed downloads in real tabs: each tab builds the seeded model, applies the server\'s steps, and holds the stored version bit for bit', async ({ openDevices, admin }) => {
  const devices = await openDevices([0, 1, 2].map((client) => ({ clients: 3, client, examples: 200 })));
  // two of three tabs a round: a tab left out comes back a version or more behind and gets a chain of steps
  const created = await admin.post('/api/runs', { data: { model: 'cnn-small', rounds: 3, clientsPerRound: 2, minUpdates: 2, overSelect: 1, localEpochs: 1, batchSize: 10, learningRate: 0.1, roundTimeoutMs: 240_000, seed: 4, downlinkCodec: 'q8+deflate' } });
  expect(created.status(), await created.text()).toBe(201);
  const { id } = (await created.json()) as { id: number };
  const run = await waitForRun(admin, id, 5 * 60_000);
  expect(run.status, run.reason ?? '').toBe('done');
  const rounds = ((await (await admin.get(`/api/runs/${id}/rounds`)).json()) as RoundRow[]).filter((r) => r.status === 'completed');
  expect(rounds).toHaveLength(3);
  const float32Bytes = 5258 * 4;
  expect(rounds[0]!.bytesDown).toBeLessThan(1000); // round 1: the tabs build the seeded model themselves
  for (const r of rounds.slice(1)) expect(r.bytesDown / r.participants).toBeLessThan(float32Bytes / 2);
  // each tab's held model, read from its IndexedDB, is the stored version byte for byte
  let compared = 0;
  for (const d of devices) {
    const held = await readState(d.page, 'model');
    if (!held) continue;
    const stored = new Uint8Array(await (await admin.get(`/api/models/${held.version}/weights.bin`)).body());
    expect(stored.length).toBe(float32Bytes);
    expect(Buffer.from(held.values.buffer).equals(Buffer.from(stored)), `the tab's v${held.version} is the stored one`).toBe(true);
    compared++;
  }
  expect(compared).toBeGreaterThanOrEqual(2); // every tab that took part (round 1 alone selects two)
  for (const d of devices) expect(d.errors).toEqual([]);
});

test('a run with topk+q8 updates completes, the dashboard shows its bytes per round, and the residual survives a reload', async ({ openDevices, admin, page }) => {
  const devices = await openDevices([0, 1].map((client) => ({ clients: 4, client, examples: 300 })));
  const created = await admin.post('/api/runs', { data: { model: 'cnn-small', rounds: 2, clientsPerRound: 2, minUpdates: 2, overSelect: 1, localEpochs: 1, batchSize: 10, learningRate: 0.1, roundTimeoutMs: 240_000, seed: 3, updateCodec: 'topk+q8', topkFraction: 0.05 } });
  expect(created.status()).toBe(201);
  const { id } = (await created.json()) as { id: number };
  const run = await waitForRun(admin, id, 5 * 60_000);
  expect(run.status, run.reason ?? '').toBe('done');

  const rounds = ((await (await admin.get(`/api/runs/${id}/rounds`)).json()) as RoundRow[]).filter((r) => r.status === 'completed');
  expect(rounds).toHaveLength(2);
  const float32Bytes = 5258 * 4;
  for (const r of rounds) {
    expect(r.completed).toBe(2);
    // 5 % of the entries, 8 bits each, plus their indices: more than 20x below float32.
    expect(r.bytesUp / r.completed).toBeLessThan(float32Bytes / 20);
  }
  // Round 2's downloads are deltas against the model each device received in round 1.
  expect(rounds[1]!.bytesDown).toBeLessThan(rounds[0]!.bytesDown);

  await page.goto('/admin');
  await page.getByLabel('Admin token').fill(E2E_TOKEN);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await expect(page.locator('#rounds tbody tr[data-round-row]')).toHaveCount(2);
  const header = await page.locator('#rounds thead th').allTextContents();
  const upColumn = header.indexOf('Up / device');
  expect(upColumn).toBeGreaterThan(0);
  const shown = await page.locator(`#rounds tbody tr[data-round-row]:first-child td:nth-child(${upColumn + 1})`).textContent();
  expect(shown).toMatch(/^\d+(\.\d+)? (B|kB)$/);
  await page.screenshot({ path: `${shots}/admin-topk-q8.png`, fullPage: true });

  // The error-feedback residual is in IndexedDB and is still there after a reload.
  const readResidual = async () => {
    const r = await readState(devices[0]!.page, 'residual');
    return r ? { key: r.key, length: r.values.length, sumAbs: r.values.reduce((a, v) => a + Math.abs(v), 0) } : null;
  };
  const before = await readResidual();
  expect(before).toMatchObject({ key: `${id}:cnn-small`, length: 5258 });
  expect(before!.sumAbs).toBeGreaterThan(0);
  await devices[0]!.page.reload();
  await devices[0]!.page.waitForFunction(() => window.__fl?.ready && window.__fl.snapshot?.connection === 'connected');
  expect(await readResidual()).toEqual(before);
  for (const d of devices) expect(d.errors, d.errors.join('\n')).toEqual([]);
});
