/**
 * Non-IID data in real tabs: three tabs holding different labels train with FedAdam; each keeps a
 * personal model and shows its accuracy beside the global one's, and the mix its label distance
 * sets; the dashboard shows the strategy and each round's fairness figures.
 */
import type { APIRequestContext } from '@playwright/test';
import { E2E_TOKEN } from '../playwright.config.ts';
import type { RoundRecord } from '../shared/api.ts';
import { expect, test, waitForRun } from './fixtures.ts';

const shots = process.env.SCREENSHOT_DIR ?? 'test-results/screenshots';

/** Launches a run on the tabs, waits for it to finish, and returns its completed rounds. */
async function completedRounds(admin: APIRequestContext, config: Record<string, unknown>): Promise<{ id: number; rounds: RoundRecord[] }> {
  const created = await admin.post('/api/runs', { data: { clientsPerRound: 3, overSelect: 1, minUpdates: 3, localEpochs: 1, batchSize: 10, learningRate: 0.1, roundTimeoutMs: 240_000, seed: 1, ...config } });
  expect(created.status(), await created.text()).toBe(201);
  const { id } = (await created.json()) as { id: number };
  const run = await waitForRun(admin, id, 6 * 60_000);
  expect(run.status, run.reason ?? '').toBe('done');
  return { id, rounds: ((await (await admin.get(`/api/runs/${id}/rounds`)).json()) as RoundRecord[]).filter((r) => r.status === 'completed') };
}

test('three non-IID tabs train with FedAdam and show their personal models beside the global one', async ({ openDevices, admin, page }) => {
  const devices = await openDevices([0, 1, 2].map((client) => ({ clients: 3, client, partition: 'shards' as const, examples: 300 })));
  const { rounds } = await completedRounds(admin, { model: 'cnn-small', rounds: 2, strategy: 'fedadam', serverLearningRate: 0.01 });
  expect(rounds).toHaveLength(2);
  for (const r of rounds) {
    expect(r.fairness?.devices).toBe(3);
    // every tab measured its mix: the population is the sum of the three tabs' histograms
    expect(r.personalization?.mixed.devices).toBe(3);
    expect(r.personalization!.meanDistance).toBeGreaterThan(0.3); // shards: a few labels each
  }
  console.log(`fedadam: test accuracy ${rounds.map((r) => r.testAccuracy?.toFixed(4)).join(', ')}; round 2 global / personal / mixed mean ${[rounds[1]!.personalization!.global.mean, rounds[1]!.personalization!.personal.mean, rounds[1]!.personalization!.mixed.mean].map((v) => v.toFixed(3)).join(' / ')}`);

  const tab = devices[1]!.page;
  await expect(tab.locator('#personal-line')).toContainText(/Personal model .* held-out accuracy \d+\.\d % against the global model's \d+\.\d %/);
  await expect(tab.locator('#personal-line')).toContainText(/at distance 0\.\d\d from the population's/);
  await expect(tab.locator('#history thead')).toContainText('Personal');
  await tab.screenshot({ path: `${shots}/device-personalization.png`, fullPage: true });

  await page.goto('/admin');
  await page.getByLabel('Admin token').fill(E2E_TOKEN);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await expect(page.locator('#runs')).toContainText('fedadam');
  await expect(page.locator('#fairness-note')).toContainText(/Round 2, global model over 3 devices: worst 10 % .*Personal models: worst 10 %/);
  await page.screenshot({ path: `${shots}/admin-strategies.png`, fullPage: true });
});

test('SCAFFOLD in real tabs: each tab keeps its control variate in IndexedDB and sends its change with the update', async ({ openDevices, admin }) => {
  const devices = await openDevices([0, 1, 2].map((client) => ({ clients: 3, client, partition: 'shards' as const, examples: 200 })));
  const { id, rounds } = await completedRounds(admin, { model: 'mlp', rounds: 2, strategy: 'scaffold' });
  expect(rounds).toHaveLength(2);
  const modelBytes = 199_210 * 4;
  for (const r of rounds) {
    // every device sent Δy and Δc (float32: twice the model) and received c with the model (in round 2 a delta against the one it holds)
    expect(r.bytesUp / r.completed).toBeGreaterThan(2 * modelBytes);
    expect(r.bytesDown / r.participants).toBeGreaterThan(r.round === 1 ? 2 * modelBytes : modelBytes);
  }
  // each tab's c_i, as its IndexedDB holds it: the run's, of the model's size, its own (page.evaluate runs in the tab)
  const databases = await Promise.all(devices.map((d) => d.page.evaluate(() => window.__fl.database as string)));
  const controls = await Promise.all(
    devices.map((d, i) =>
      d.page.evaluate(
        (database) =>
          new Promise<{ key: string; length: number; tail: number[] } | null>((resolve, reject) => {
            const open = indexedDB.open(database);
            open.onerror = () => reject(open.error);
            open.onsuccess = () => {
              const get = open.result.transaction('state').objectStore('state').get('control');
              get.onerror = () => reject(get.error);
              get.onsuccess = () => {
                const r = get.result as { key: string; values: Float32Array } | undefined;
                open.result.close();
                resolve(r ? { key: r.key, length: r.values.length, tail: Array.from(r.values.subarray(-200)) } : null);
              };
            };
          }),
        databases[i]!,
      ),
    ),
  );
  for (const c of controls) {
    expect(c).toMatchObject({ key: `${id}:mlp`, length: 199_210 });
    expect(c!.tail.some((v) => v !== 0)).toBe(true); // the output layer's: every tab's training moved it
  }
  expect(controls[0]!.tail).not.toEqual(controls[1]!.tail);
  console.log(`scaffold: test accuracy ${rounds.map((r) => r.testAccuracy?.toFixed(4)).join(', ')}; per device ${(rounds[0]!.bytesUp / rounds[0]!.completed / 1024).toFixed(0)} KiB up, ${(rounds[0]!.bytesDown / rounds[0]!.participants / 1024).toFixed(0)} KiB down`);
});
