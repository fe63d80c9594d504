import { E2E_TOKEN } from '../playwright.config.ts';
import { expect, test, waitForRun } from './fixtures.ts';

const shots = process.env.SCREENSHOT_DIR ?? 'test-results/screenshots';

test('the dashboard follows devices and a run launched from its form, live', async ({ openDevices, page, admin }) => {
  const consoleErrors: string[] = [];
  page.on('console', (m) => m.type() === 'error' && consoleErrors.push(m.text()));
  page.on('pageerror', (e) => consoleErrors.push(e.message));

  // Sign in: a wrong token gets a clear message, the right one opens the live channel.
  await page.goto('/admin');
  await page.screenshot({ path: `${shots}/admin-signin.png` });
  await page.getByLabel('Admin token').fill('not-the-token');
  await page.getByRole('button', { name: 'Sign in' }).click();
  await expect(page.locator('#signin-error')).toHaveText('That token is not the admin token.');
  // Chromium logs the deliberate 401 as a console error; only errors after this point count.
  consoleErrors.length = 0;
  await page.getByLabel('Admin token').fill(E2E_TOKEN);
  await page.keyboard.press('Enter');
  await expect(page.locator('#live')).toHaveText('live');

  // Devices appear without a reload.
  const devices = await openDevices([0, 1].map((client) => ({ clients: 2, client, examples: 300 })));
  await expect(page.locator('#devices tbody tr[data-device]')).toHaveCount(2);
  await expect(page.locator('#log li').first()).toContainText('joined');

  const field = (label: string) => page.locator('#launch').getByLabel(label, { exact: true });

  // Field errors for bad values, with the API's rules, next to the fields.
  await field('Rounds').fill('0');
  await field('Batch size (B)').fill('2.5');
  await field('Min updates').fill('9');
  await page.getByRole('button', { name: 'Launch' }).click();
  await expect(page.locator('#e-rounds')).toHaveText('must be at least 1');
  await expect(page.locator('#e-batchSize')).toHaveText('must be a whole number');
  await expect(page.locator('#e-minUpdates')).toContainText('minUpdates must not exceed clientsPerRound');
  expect(((await (await admin.get('/api/runs')).json()) as unknown[]).length).toBe(0);
  await page.screenshot({ path: `${shots}/admin-field-errors.png`, fullPage: true });

  // A run from the form: the quick preset, adjusted to the two tabs here.
  await page.getByLabel('Preset').selectOption('quick');
  await field('Rounds').fill('2');
  await field('Clients per round (K)').fill('2');
  await field('Min updates').fill('2');
  await field('Local epochs (E)').fill('2');
  await page.getByRole('button', { name: 'Launch' }).click();
  await expect(page.locator('#launch-error')).toHaveText(/Run \d+ launched\./);
  const runId = Number((await page.locator('#launch-error').textContent())?.match(/\d+/)?.[0]);

  // The dashboard shows the devices at work, live.
  await expect(page.locator('#devices [data-state="training"], #devices [data-state="evaluating"], #devices [data-state="downloading"], #devices [data-state="uploading"], #devices [data-state="selected"]').first()).toBeVisible({ timeout: 60_000 });
  // The live version is listed without a reload (v1, or v2 if round 1 already finished).
  await expect(page.locator('#models tbody')).toContainText(/\d+ \(live\)/);
  await page.screenshot({ path: `${shots}/admin-during-run.png`, fullPage: true });

  const run = await waitForRun(admin, runId, 4 * 60_000);
  expect(run.status, run.reason ?? '').toBe('done');
  await expect(page.locator('#rounds tbody tr')).toHaveCount(2);
  await expect(page.locator('#phase')).toHaveText('done');
  await expect(page.locator('#log')).toContainText(`run ${runId} done`);
  await expect(page.locator('#timeline .evaluation')).toBeVisible();
  await page.screenshot({ path: `${shots}/admin-after-run.png`, fullPage: true });
  await devices[0]!.page.screenshot({ path: `${shots}/device-after-run.png`, fullPage: true });

  // The download link of the live model returns a loadable TF.js model.
  const href = await page.locator('#models a').first().getAttribute('href');
  expect(href).toMatch(/^\/api\/models\/\d+\/model\.json$/);
  expect(await devices[0]!.page.evaluate((url) => window.__fl.loadModel(url), href as string)).toBe(5258);

  // A device that leaves shows as disconnected, not as a silent removal.
  await devices[1]!.context.close();
  await expect(page.locator('#devices [data-state="disconnected"]')).toHaveCount(1);
  await expect(page.locator('#log')).toContainText('left');

  // Narrow screens: the page stays usable at 400 px.
  await page.setViewportSize({ width: 400, height: 800 });
  await page.screenshot({ path: `${shots}/admin-400px.png`, fullPage: true });
  expect(await page.evaluate(() => document.documentElement.scrollWidth)).toBeLessThanOrEqual(400);
  await devices[0]!.page.setViewportSize({ width: 400, height: 800 });
  await devices[0]!.page.screenshot({ path: `${shots}/device-400px.png`, fullPage: true });
  expect(await devices[0]!.page.evaluate(() => document.documentElement.scrollWidth)).toBeLessThanOrEqual(400);

  expect(consoleErrors).toEqual([]);
  expect(devices[0]!.errors).toEqual([]);
});
