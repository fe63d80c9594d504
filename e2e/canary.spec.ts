/**
 * Operating a model in real tabs: a person draws a digit and the tab's model predicts it; a fine-
 * tuned version is tried as a canary on the tabs (each compares it with the live model on its held-
 * out data), promoted by the test, and served as latest; the dashboard shows the comparison.
 */
import type { Page } from '@playwright/test';
import { E2E_TOKEN } from '../playwright.config.ts';
import type { Deployment } from '../shared/api.ts';
import { expect, test, waitForRun } from './fixtures.ts';

const shots = process.env.SCREENSHOT_DIR ?? 'test-results/screenshots';

/** Draws a "1" (a slanted stroke) and a "7"-like hook on the tab's pad with the mouse. */
async function draw(page: Page, strokes: [number, number][][]): Promise<void> {
  const pad = page.locator('#pad');
  await pad.scrollIntoViewIfNeeded();
  const box = (await pad.boundingBox())!;
  for (const stroke of strokes) {
    await page.mouse.move(box.x + stroke[0]![0] * box.width, box.y + stroke[0]![1] * box.height);
    await page.mouse.down();
    for (const [x, y] of stroke.slice(1)) await page.mouse.move(box.x + x * box.width, box.y + y * box.height, { steps: 8 });
    await page.mouse.up();
  }
}

test('a drawn digit is predicted by the tab\'s model; a canary tries a fine-tuned version on the tabs and promotes it', async ({ openDevices, admin, page }) => {
  const devices = await openDevices([0, 1, 2].map((client) => ({ clients: 3, client, examples: 400 })));
  const config = { model: 'mlp', rounds: 1, clientsPerRound: 3, overSelect: 1, minUpdates: 3, localEpochs: 1, batchSize: 10, learningRate: 0.1, roundTimeoutMs: 120_000 };
  const first = (await (await admin.post('/api/runs', { data: config })).json()) as { id: number };
  expect((await waitForRun(admin, first.id, 3 * 60_000)).status).toBe('done');
  const live = ((await (await admin.get('/api/canary')).json()) as Deployment).live!;
  expect(live).toBeGreaterThan(0);

  // the drawing pad: the tab predicts with the live model (the run's final version, fetched once: the tab holds the one it trained from)
  const tab = devices[0]!.page;
  await expect(tab.locator('#probabilities-wrap')).toBeHidden(); // no empty axis before a drawing
  await draw(tab, [[[0.55, 0.15], [0.5, 0.5], [0.45, 0.85]]]);
  await expect(tab.locator('#prediction')).toContainText(new RegExp(`It is a \\d: \\d+\\.\\d % sure, says model v${live}\\.`));
  await expect(tab.locator('#serving-line')).toContainText(`Predictions come from model v${live}, the live model.`);
  const prediction = (await tab.evaluate(() => window.__fl.prediction))!;
  expect(prediction.probabilities.reduce((a, b) => a + b, 0)).toBeCloseTo(1, 4);
  await expect(tab.locator('#probabilities-wrap')).toBeVisible();
  await tab.locator('section[aria-labelledby="h-draw"]').screenshot({ path: `${shots}/device-draw.png` });
  await tab.getByRole('button', { name: 'Clear the pad' }).click();
  await expect(tab.locator('#prediction')).toContainText('Draw a digit');
  await expect(tab.locator('#probabilities-wrap')).toBeHidden();

  // a fine-tuning run from the live version, whose result is tried as a canary on every tab
  const second = await admin.post('/api/runs', { data: { ...config, rounds: 3, initialVersion: live, canary: { share: 1, margin: 0.05, timeoutMs: 120_000 } } });
  expect(second.status(), await second.text()).toBe(201);
  const { id } = (await second.json()) as { id: number };
  expect((await waitForRun(admin, id, 4 * 60_000)).status).toBe('done');
  let deployment: Deployment | undefined;
  await expect
    .poll(async () => {
      deployment = (await (await admin.get('/api/canary')).json()) as Deployment;
      return deployment.last?.canary?.outcome ?? 'pending';
    }, { timeout: 120_000 })
    .toBe('promoted');
  const c = deployment!.last!.canary!;
  expect(c.live).toBe(live);
  expect(deployment!.live).toBe(c.candidate);
  expect(deployment!.last!.reported).toBe(3);
  console.log(`canary: live v${c.live} ${(deployment!.last!.results[0]!.accuracy! * 100).toFixed(2)} %, candidate v${c.candidate} ${(deployment!.last!.results[1]!.accuracy! * 100).toFixed(2)} % over ${c.n} held-out examples; difference ${(c.difference * 100).toFixed(2)} pp, lower bound ${(c.lowerBound * 100).toFixed(2)} pp`);
  // latest serves the promoted version; each tab serves it too
  const latest = (await (await admin.get('/api/models/latest/card.json')).json()) as { version: number };
  expect(latest.version).toBe(c.candidate);
  await expect(tab.locator('#serving-line')).toContainText(`Predictions come from model v${c.candidate}, the live model.`);
  await expect(tab.locator('#serving-line')).toContainText(/Evaluation \d+ \(canary\): v\d+ \d+\.\d %, v\d+ \d+\.\d % on held-out data, reported/);
  await draw(tab, [[[0.3, 0.2], [0.7, 0.2], [0.45, 0.85]]]);
  await expect(tab.locator('#prediction')).toContainText(`says model v${c.candidate}.`);

  await page.goto('/admin');
  await page.getByLabel('Admin token').fill(E2E_TOKEN);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await expect(page.locator('#deployment-line')).toContainText(`Live: v${c.candidate}`);
  await expect(page.locator('#canary-table tr[data-row="outcome"]')).toContainText('promoted');
  await expect(page.locator('#evaluations tbody tr').first()).toContainText('canary');
  await page.locator('section[aria-labelledby="h-canary"]').screenshot({ path: `${shots}/admin-canary.png` });
});
