import type { APIRequestContext, Page } from '@playwright/test';
import { E2E_TOKEN } from '../playwright.config.ts';
import type { RoundRecord } from '../shared/api.ts';
import { expect, test, waitForRun } from './fixtures.ts';

const shots = process.env.SCREENSHOT_DIR ?? 'test-results/screenshots';

/** Launches a run with the dashboard signed in, waits for it to finish, and returns its completed rounds. */
async function runWatched(admin: APIRequestContext, page: Page, config: Record<string, unknown>): Promise<RoundRecord[]> {
  const created = await admin.post('/api/runs', { data: config });
  expect(created.status(), await created.text()).toBe(201);
  const { id } = (await created.json()) as { id: number };
  await page.goto('/admin');
  await page.getByLabel('Admin token').fill(E2E_TOKEN);
  await page.getByRole('button', { name: 'Sign in' }).click();
  const run = await waitForRun(admin, id, 5 * 60_000);
  expect(run.status, run.reason ?? '').toBe('done');
  return ((await (await admin.get(`/api/runs/${id}/rounds`)).json()) as RoundRecord[]).filter((r) => r.status === 'completed');
}

test('a differentially private run completes in real tabs, and the dashboard shows ε rising round by round', async ({ openDevices, admin, page }) => {
  test.setTimeout(6 * 60_000);
  await openDevices([0, 1, 2, 3].map((client) => ({ clients: 4, client, examples: 300, backend: 'wasm' as const })));
  // 4 devices, 2 expected a round: each is sampled with q = 0.5
  const rounds = await runWatched(admin, page, { model: 'cnn-small', rounds: 3, clientsPerRound: 2, minUpdates: 1, localEpochs: 1, batchSize: 10, learningRate: 0.1, selectionTimeoutMs: 0, roundTimeoutMs: 120_000, dp: { noiseMultiplier: 1, clipNorm: 2, targetDelta: 1e-5 } });
  expect(rounds.map((r) => r.round)).toEqual([1, 2, 3]);
  const eps = rounds.map((r) => r.privacy!.epsilon);
  console.log(`dp: ε after each round ${eps.map((e) => e.toFixed(3)).join(', ')}; test accuracy ${rounds.map((r) => r.testAccuracy?.toFixed(4)).join(', ')}`);
  expect(eps[1]).toBeGreaterThan(eps[0]!);
  expect(eps[2]).toBeGreaterThan(eps[1]!);
  expect(rounds[0]!.privacy).toMatchObject({ noiseMultiplier: 1, clipNorm: 2, samplingRate: 0.5, expectedDevices: 2, delta: 1e-5 });

  // the dashboard: ε beside the accuracy, and in the round's details; the model card carries it
  await expect(page.locator('#acc-epsilon')).toHaveText(`ε = ${eps[2]!.toFixed(2)} after round 3 (δ = 0.00001)`);
  expect(await page.evaluate(() => window.__dash.epsilonSeries())).toEqual(eps.map((e) => Number(e.toFixed(6))));
  await page.locator('#rounds tbody button[data-round]').first().click();
  await expect(page.locator('#rounds tr.detail')).toContainText(`ε = ${eps[2]!.toFixed(3)} at δ = 0.00001`);
  await page.screenshot({ path: `${shots}/admin-privacy.png`, fullPage: true });
  // the launch form sets DP too, with the API's messages next to its fields
  await page.getByRole('button', { name: 'New run' }).click();
  await page.getByLabel('DP noise multiplier z').fill('1');
  await page.getByRole('button', { name: 'Launch' }).click();
  await expect(page.locator('[id="e-dp.clipNorm"]')).toHaveText('Must be a number > 0, or "adaptive"');
  await page.getByLabel('DP clip bound S').fill('-1');
  await page.getByRole('button', { name: 'Launch' }).click();
  await expect(page.locator('[id="e-dp.clipNorm"]')).toHaveText('Must be greater than 0');
  const card = (await (await admin.get(`/api/models/${rounds[2]!.modelVersion}/card.json`)).json()) as { privacy: { epsilon: number } | null };
  expect(card.privacy?.epsilon).toBeCloseTo(eps[2]!, 9);
});

test('with secure aggregation the tabs add the noise themselves (distributed DP), and the dashboard says so', async ({ openDevices, admin, page }) => {
  test.setTimeout(6 * 60_000);
  const devices = await openDevices([0, 1, 2, 3].map((client) => ({ clients: 4, client, examples: 200, backend: 'wasm' as const })));
  // four present, K = 4: q = 1; the noise is calibrated for ⌈0.8 × 4⌉ = 4 inputs
  const rounds = await runWatched(admin, page, { model: 'cnn-small', rounds: 2, clientsPerRound: 4, overSelect: 1, minUpdates: 3, localEpochs: 1, batchSize: 10, learningRate: 0.1, selectionTimeoutMs: 0, roundTimeoutMs: 120_000, secureAggregation: true, dp: { noiseMultiplier: 0.02, clipNorm: 2 } });
  expect(rounds.map((r) => r.round)).toEqual([1, 2]);
  console.log(`distributed dp: ε after each round ${rounds.map((r) => r.privacy!.epsilon.toFixed(3)).join(', ')}; test accuracy ${rounds.map((r) => r.testAccuracy?.toFixed(4)).join(', ')}`);
  for (const r of rounds) {
    expect(r).toMatchObject({ completed: 4, secureAggregation: { inputs: 4, revealed: 4 }, privacy: { samplingRate: 1, clipNorm: 2, distributed: { minInputs: 4, inputs: 4 } } });
    expect(r.devices.every((d) => d.weight === null)).toBe(true);
  }
  expect(rounds[1]!.privacy!.epsilon).toBeGreaterThan(rounds[0]!.privacy!.epsilon);
  // the noise is z·S per entry of the sum: with four devices only a tiny z lets the model learn (it shows the devices' noise is at the right scale, not that 4 devices make a useful private federation)
  expect(rounds[1]!.testAccuracy!).toBeGreaterThan(rounds[0]!.testAccuracy!);
  expect(rounds[1]!.testAccuracy!).toBeGreaterThan(0.25);

  await expect(page.locator('#phase')).toHaveText('done'); // the live snapshot (pushed every 250 ms) has caught up
  await page.locator('#rounds tbody button[data-round]').first().click();
  await expect(page.locator('#rounds tr.detail')).toContainText('Distributed noise');
  await expect(page.locator('#rounds tr.detail')).toContainText('added by the devices (Skellam), calibrated for 4 inputs, 4 in the sum');
  await page.screenshot({ path: `${shots}/admin-distributed-dp.png`, fullPage: true });
  for (const d of devices) expect(d.errors, d.errors.join('\n')).toEqual([]);
});
