import type { Page } from '@playwright/test';
import { unzipSync } from 'fflate';
import { E2E_TOKEN } from '../playwright.config.ts';
import { expect, test, waitForRun } from './fixtures.ts';

const shots = process.env.SCREENSHOT_DIR ?? 'test-results/screenshots';

/** Elements wider than the card they are in (or than the page), measured in the page; the launch drawer (fixed, so without an offsetParent) counts as a card. */
async function overflowing(page: Page): Promise<string[]> {
  return page.evaluate(() => {
    const out: string[] = [];
    if (document.documentElement.scrollWidth > window.innerWidth) out.push(`the page: ${document.documentElement.scrollWidth} px in ${window.innerWidth}`);
    for (const card of Array.from(document.querySelectorAll<HTMLElement>('section.card, .drawer'))) {
      if (card.hidden || card.getClientRects().length === 0) continue; // not rendered
      const box = card.getBoundingClientRect();
      for (const node of Array.from(card.querySelectorAll<HTMLElement>('*'))) {
        const r = node.getBoundingClientRect();
        if (r.width === 0 || node.closest('[hidden]')) continue;
        if (r.right > box.right + 1 || r.left < box.left - 1) out.push(`${node.tagName.toLowerCase()}${node.id ? '#' + node.id : ''} in ${card.querySelector('h2')?.textContent ?? card.id}: ${Math.round(r.width)} px wide in ${Math.round(box.width)}`);
      }
    }
    return out.slice(0, 10);
  });
}

test('the dashboard follows devices and a run launched from its form, live', async ({ openDevices, page, admin }) => {
  const consoleErrors: string[] = [];
  page.on('console', (m) => m.type() === 'error' && consoleErrors.push(m.text()));
  page.on('pageerror', (e) => consoleErrors.push(e.message));

  // Sign in: a wrong token gets a clear message, the right one opens the live channel.
  await page.goto('/admin');
  // Nothing loaded yet: the charts show their notes, not empty axes.
  await expect(page.locator('#acc-empty')).toBeVisible();
  await expect(page.locator('#accuracy-wrap')).toBeHidden();
  for (const chart of ['#spread-chart', '#bytes-chart', '#time-chart']) await expect(page.locator(chart)).toHaveCSS('visibility', 'hidden');
  await expect(page.locator('#monitor-chart-wrap')).toBeHidden();
  await page.screenshot({ path: `${shots}/admin-signin.png` });
  // Launch before sign-in could only meet a 401: it waits for the token, and says so.
  await expect(page.locator('#launch-button')).toBeDisabled();
  await expect(page.locator('#launch-button')).toHaveAttribute('title', /sign in first/);
  await page.getByLabel('Admin token').fill('not-the-token');
  await page.getByRole('button', { name: 'Sign in' }).click();
  await expect(page.locator('#signin-error')).toHaveText('That token is not the admin token.');
  // Chromium logs the deliberate 401 as a console error; only errors after this point count.
  consoleErrors.length = 0;
  await page.getByLabel('Admin token').fill(E2E_TOKEN);
  await page.keyboard.press('Enter');
  await expect(page.locator('#live')).toHaveText('live');
  await expect(page.locator('#stop')).toBeDisabled();

  // Devices appear without a reload.
  const devices = await openDevices([0, 1].map((client) => ({ clients: 2, client, examples: 300 })));
  // (the list keeps earlier tests' devices for 10 minutes, as disconnected: these two are the connected ones)
  await expect(page.locator('#devices tbody tr[data-device]:not(.disconnected)')).toHaveCount(2);
  await expect(page.locator('#devices tbody')).toContainText('connected · active');
  await expect(page.locator('#log li').first()).toContainText('joined');

  // The launch form opens in a drawer; an empty field shows the default it takes.
  const runsBefore = ((await (await admin.get('/api/runs')).json()) as unknown[]).length;
  await page.getByRole('button', { name: 'New run' }).click();
  const field = (label: string) => page.locator('#launch').getByLabel(label, { exact: true });
  await expect(field('Rounds')).toHaveAttribute('placeholder', '5 (default)');
  await expect(page.locator('#launch-button')).toBeEnabled(); // signed in, no run active

  // Field errors for bad values, with the API's rules, in the form's words, next to the fields.
  await field('Rounds').fill('0');
  await field('Batch size (B)').fill('2.5');
  await field('Min updates').fill('9');
  await page.getByRole('button', { name: 'Launch' }).click();
  await expect(page.locator('#e-rounds')).toHaveText('Must be at least 1');
  await expect(page.locator('#e-batchSize')).toHaveText('Must be a whole number');
  await expect(page.locator('#e-minUpdates')).toHaveText('Min updates must not exceed Clients per round (K)');
  expect(((await (await admin.get('/api/runs')).json()) as unknown[]).length).toBe(runsBefore); // nothing was launched
  // the picture shows the messages beside their fields: the drawer scrolled back to its top (Launch, at its foot, scrolled it down)
  await page.locator('#launch-drawer').evaluate((d) => d.scrollTo(0, 0));
  await expect(page.locator('#e-minUpdates')).toBeInViewport();
  await page.screenshot({ path: `${shots}/admin-field-errors.png` });

  // A preset saved by npm run tune (presets/ in the repository): offered in the form, it fills the fields with its config.
  const { presets } = (await (await admin.get('/api/presets')).json()) as { presets: { name: string; label: string; hint: string; config: Record<string, unknown> }[] };
  expect(presets.length, 'the tuned preset in presets/').toBeGreaterThan(0);
  const tuned = presets[0]!;
  await expect(page.locator(`#preset optgroup[label="Saved by npm run tune"] option[value="saved:${tuned.name}"]`)).toHaveText(tuned.label);
  await page.getByLabel('Preset').selectOption(`saved:${tuned.name}`);
  await expect(page.locator('#preset-hint')).toHaveText(tuned.hint);
  // (by id: a label's accessible name takes in the value of the field it wraps)
  await expect(page.locator('#f-strategy')).toHaveValue(String(tuned.config.strategy));
  await expect(page.locator('#f-learningRate')).toHaveValue(String(tuned.config.learningRate));
  await expect(page.locator('#f-rounds')).toHaveValue(String(tuned.config.rounds));
  await expect(page.locator('#f-localEpochs')).toHaveValue(String(tuned.config.localEpochs));
  await expect(page.locator('#launch-error')).toHaveText(''); // the earlier "fix the fields" is gone with the errors
  await page.locator('#launch-drawer').evaluate((d) => d.scrollTo(0, 0));
  await page.screenshot({ path: `${shots}/admin-tuned-preset.png` });
  // the drawer's content fits it at 1280 px (the preset select with its long options included)
  expect(await overflowing(page)).toEqual([]);

  // A run from the form: the quick preset, adjusted to the two tabs here (the preset becomes "custom").
  await page.getByLabel('Preset').selectOption('quick');
  await field('Rounds').fill('2');
  await expect(page.getByLabel('Preset')).toHaveValue('custom');
  await field('Clients per round (K)').fill('2');
  await field('Min updates').fill('2');
  await field('Local epochs (E)').fill('4'); // rounds long enough for the dashboard to see the devices at work
  await page.getByRole('button', { name: 'Launch' }).click();
  await expect(page.locator('#action-line')).toHaveText(/Run \d+ launched\./);
  await expect(page.locator('#action-line')).toHaveClass(/ok/);
  await expect(page.locator('#launch-drawer')).toBeHidden();
  const runId = Number((await page.locator('#action-line').textContent())?.match(/\d+/)?.[0]);

  // The dashboard shows the devices at work, live; the first screen holds what is live.
  await expect(page.locator('#devices [data-state="training"], #devices [data-state="evaluating"], #devices [data-state="downloading"], #devices [data-state="uploading"], #devices [data-state="selected"]').first()).toBeVisible({ timeout: 60_000 });
  await expect(page.locator('#stop')).toBeEnabled();
  await expect(page.locator('#launch-button')).toBeDisabled(); // a second run would get a 409
  await expect(page.locator('#launch-button')).toHaveAttribute('title', 'a run is active: stop it first');
  await expect(page.locator('#models tbody')).toContainText(/v\d+ \(live\)/);
  // Once round 1 is evaluated, the accuracy chart itself (not its "not evaluated yet" note) is on the first screen.
  await expect(page.locator('#accuracy-chart')).toBeVisible({ timeout: 4 * 60_000 });
  await expect(page.locator('#acc-empty')).toBeHidden();
  await page.screenshot({ path: `${shots}/admin-during-run.png` });
  for (const id of ['#round-card', '#devices']) {
    const box = await page.locator(id).first().boundingBox();
    expect(box, id).not.toBeNull();
    expect(box!.y + Math.min(box!.height, 120), `${id} on the first screen`).toBeLessThanOrEqual(800);
  }
  // (a history refresh may redraw the chart: measure it once it stands)
  await expect.poll(async () => (await page.locator('#accuracy-chart').boundingBox())?.height ?? 0, { message: 'the accuracy chart is drawn' }).toBeGreaterThan(100);
  const chartBox = (await page.locator('#accuracy-chart').boundingBox())!;
  expect(chartBox.y + chartBox.height, 'the whole accuracy chart on the first screen').toBeLessThanOrEqual(800);

  const run = await waitForRun(admin, runId, 4 * 60_000);
  expect(run.status, run.reason ?? '').toBe('done');
  await expect(page.locator('#rounds tbody tr[data-round-row]')).toHaveCount(2);
  await expect(page.locator('#phase')).toHaveText('done');
  await expect(page.locator('#stop')).toBeDisabled();
  await expect(page.locator('#log')).toContainText(`run ${runId} done`);
  await expect(page.locator('#timeline [data-phase="evaluation"]')).toBeVisible();
  // The outcome stays in view: the final accuracy in the header, the reason, the run in the runs list.
  await expect(page.locator('#run-line')).toContainText(/final test accuracy \d+\.\d+ %/);
  const finalLine = (await page.locator('#run-line').textContent())!;
  await expect(page.locator('#status')).toContainText('completed 2 rounds');
  await expect(page.locator(`#runs tr[data-run-row="${runId}"]`)).toContainText('2 of 2');
  expect(run.reason, 'a completed run says why it ended').toBeTruthy();
  await expect(page.locator(`#runs tr[data-run-row="${runId}"]`)).toContainText(run.reason!);
  await expect(page.locator('#launch-button')).toBeEnabled(); // the run is over: a new one may start
  // The rounds table and the phase chart tell the same duration (the phases add up to it).
  const table = await page.locator('#rounds tbody tr[data-round-row]').evaluateAll((rows) => rows.map((r) => ({ key: r.getAttribute('data-round-row') ?? '', ms: Number(r.getAttribute('data-duration-ms')) })));
  // (both rounds in the chart first: an empty chart would agree with anything)
  await expect.poll(() => page.evaluate(() => window.__dash.phaseChartTotals().length)).toBe(2);
  const chart = await page.evaluate(() => window.__dash.phaseChartTotals());
  expect(chart.map((c) => c.round)).toEqual(['1', '2']);
  for (const c of chart) {
    const row = table.find((t) => t.key.endsWith(`:${c.round}:1`));
    expect(row, `round ${c.round} in the table`).toBeDefined();
    expect(Math.abs(c.totalMs - row!.ms) / row!.ms, `round ${c.round}: chart ${c.totalMs} ms, table ${row!.ms} ms`).toBeLessThanOrEqual(0.05);
  }
  // A round's details open on demand.
  await page.locator('#rounds tbody button[data-round]').first().click();
  await expect(page.locator('#rounds tr.detail')).toContainText('devices at work');
  await page.screenshot({ path: `${shots}/admin-after-run.png`, fullPage: true });
  expect(await overflowing(page)).toEqual([]);
  await expect.poll(() => overflowing(devices[0]!.page)).toEqual([]); // the device page fits at 1280 px too
  await devices[0]!.page.screenshot({ path: `${shots}/device-after-run.png`, fullPage: true });

  // The live model downloads as one archive, or as the TF.js files, which load.
  const zip = await admin.get((await page.locator('#models a[href$="model.zip"]').first().getAttribute('href')) as string);
  expect(zip.headers()['content-type']).toBe('application/zip');
  const files = unzipSync(new Uint8Array(await zip.body()));
  expect(Object.keys(files).sort()).toEqual(['model-card.json', 'model.json', 'weights.bin']);
  const modelJson = JSON.parse(new TextDecoder().decode(files['model.json'])) as { weightsManifest: { paths: string[]; weights: { shape: number[] }[] }[] };
  // model.json names the weights file beside it in the archive, and that file holds every weight it lists
  expect(modelJson.weightsManifest.flatMap((g) => g.paths)).toEqual(['weights.bin']);
  const listed = modelJson.weightsManifest.flatMap((g) => g.weights).reduce((n, w) => n + w.shape.reduce((a, b) => a * b, 1), 0);
  expect(files['weights.bin']!.byteLength).toBe(listed * 4);
  expect(listed).toBe(5258);
  expect(JSON.parse(new TextDecoder().decode(files['model-card.json']))).toMatchObject({ version: expect.any(Number) });
  const href = await page.locator('#models a[href$="model.json"]').first().getAttribute('href');
  expect(href).toMatch(/^\/api\/models\/\d+\/model\.json$/);
  expect(await devices[0]!.page.evaluate((url) => window.__fl.loadModel(url), href as string)).toBe(5258);

  // A device that leaves shows as disconnected, not as a silent removal.
  const leaving = (await devices[1]!.page.evaluate(() => window.__fl.deviceId))!;
  await devices[1]!.context.close();
  await expect(page.locator(`#devices tr[data-device="${leaving}"] [data-state="disconnected"]`)).toHaveCount(1);
  await expect(page.locator('#devices tbody tr[data-device]:not(.disconnected)')).toHaveCount(1);
  await expect(page.locator('#log')).toContainText('left');

  // Narrow screens: every card's content fits in it at 400 px, drawer included.
  await page.setViewportSize({ width: 400, height: 800 });
  // the charts follow the new width a frame later: measure once they have, then take the picture
  await expect.poll(() => overflowing(page)).toEqual([]);
  await page.screenshot({ path: `${shots}/admin-400px.png`, fullPage: true });
  await page.getByRole('button', { name: 'New run' }).click();
  await expect(page.locator('#launch-drawer')).toBeVisible();
  await expect.poll(() => overflowing(page)).toEqual([]);
  await page.screenshot({ path: `${shots}/admin-400px-launch.png` });
  await devices[0]!.page.setViewportSize({ width: 400, height: 800 });
  await expect.poll(() => overflowing(devices[0]!.page)).toEqual([]);
  await devices[0]!.page.screenshot({ path: `${shots}/device-400px.png`, fullPage: true });

  // The run's outcome is still in the header after the later snapshots (a device left, the dashboard resized).
  await expect(page.locator('#run-line')).toHaveText(finalLine);

  expect(consoleErrors).toEqual([]);
  expect(devices[0]!.errors).toEqual([]);
});

test('a stopped run keeps its round and its outcome visible', async ({ openDevices, page, admin }) => {
  // Two devices; the second is silent (it trains, then never answers), so the round waits for its deadline.
  await openDevices([{ clients: 2, client: 0, examples: 300 }, { clients: 2, client: 1, examples: 300, query: { faultSilent: '1', faultSeed: '1' } }]);
  const created = await admin.post('/api/runs', { data: { rounds: 3, clientsPerRound: 2, minUpdates: 1, roundTimeoutMs: 600_000, selectionTimeoutMs: 0 } });
  const { id } = (await created.json()) as { id: number };
  await page.goto('/admin');
  await page.getByLabel('Admin token').fill(E2E_TOKEN);
  await page.keyboard.press('Enter');
  // The round waits for the deadline with its one device done, and says so.
  await expect(page.locator('#phase')).toHaveText('waiting for the deadline', { timeout: 60_000 });
  await expect(page.locator('#status')).toContainText('waiting for the deadline: 1 of 2 selected answered');
  await expect(page.locator('#timeline [data-phase="waiting for the close"]')).toBeVisible();
  await page.getByRole('button', { name: 'Stop' }).click();
  await expect(page.locator('#action-line')).toHaveText('Run stopped.');
  await expect(page.locator('#action-line')).toHaveClass(/ok/);
  await expect(page.locator('#phase')).toHaveText('stopped');
  const widths = await page.locator('#timeline > div').evaluateAll((d) => d.map((x) => x.getBoundingClientRect().width));
  await page.waitForTimeout(2_000); // a stopped round's timeline must stand still
  expect(await page.locator('#timeline > div').evaluateAll((d) => d.map((x) => x.getBoundingClientRect().width))).toEqual(widths);
  await expect(page.locator('#rounds tbody tr[data-round-row]')).toHaveCount(1);
  await expect(page.locator('#rounds tbody')).toContainText('stopped');
  await expect(page.locator(`#runs tr[data-run-row="${id}"]`)).toContainText('stopped');
  await expect(page.locator('#log')).toContainText('round 1 stopped: stopped by admin');
  await expect(page.locator(`#runs tr[data-run-row="${id}"]`)).toContainText('stopped by admin'); // why it ended
  // charts with no completed round show their note, not an empty axis
  await expect(page.locator('#time-chart')).toHaveCSS('visibility', 'hidden');
  await expect(page.locator('#monitor-line')).toHaveText('No monitored round yet.');
  await expect(page.locator('#monitor-chart-wrap')).toBeHidden();
  await page.screenshot({ path: `${shots}/admin-stopped.png`, fullPage: true });

  // More runs than the list shows at once: the rest are one click away, not cut off silently.
  // (older runs padded into the list the page reads, rather than made: real ones would each add a model version to every later screenshot)
  const real = (await (await admin.get('/api/runs')).json()) as { id: number }[];
  const older = Array.from({ length: 12 }, (_, i) => ({ ...real[0]!, id: 1000 + i }));
  await page.route('**/api/runs', async (route) => (route.request().method() === 'GET' ? route.fulfill({ json: [...older, ...((await (await route.fetch()).json()) as unknown[])] }) : route.continue()));
  await page.reload();
  const total = older.length + real.length;
  const more = page.locator('#runs-more');
  await expect(more).toHaveText(`Show all ${total} runs`);
  await expect(page.locator('#runs tbody tr[data-run-row]')).toHaveCount(10);
  await expect(page.locator('#runs tr[data-run-row="1000"]')).toHaveCount(0);
  await more.click();
  await expect(page.locator('#runs tbody tr[data-run-row]')).toHaveCount(total);
  await expect(page.locator('#runs tr[data-run-row="1000"]')).toBeVisible();
  await more.click();
  await expect(more).toHaveText(`Show all ${total} runs`);
  await expect(page.locator('#runs tbody tr[data-run-row]')).toHaveCount(10);
});

test('the model registry: a lineage tree across runs, two versions side by side, and the admin names and labels one', async ({ openDevices, page, admin }) => {
  await openDevices([0, 1].map((client) => ({ clients: 2, client, examples: 200 })));
  const config = { model: 'mlp', rounds: 2, clientsPerRound: 2, overSelect: 1, minUpdates: 2, localEpochs: 1, batchSize: 20, learningRate: 0.1, roundTimeoutMs: 120_000 };
  const first = (await (await admin.post('/api/runs', { data: config })).json()) as { id: number };
  expect((await waitForRun(admin, first.id, 3 * 60_000)).status).toBe('done');
  const models = (await (await admin.get('/api/models')).json()) as { version: number; runId: number; round: number }[];
  const tip = models.filter((m) => m.runId === first.id).at(-1)!;
  // a second run fine-tunes the first one's last version: the lineage branches across runs
  const second = await admin.post('/api/runs', { data: { ...config, rounds: 1, learningRate: 0.05, initialVersion: tip.version, labels: { purpose: 'fine-tune' } } });
  expect(second.status(), await second.text()).toBe(201);
  const { id } = (await second.json()) as { id: number };
  expect((await waitForRun(admin, id, 3 * 60_000)).status).toBe('done');
  const child = ((await (await admin.get('/api/models')).json()) as { version: number; runId: number; round: number }[]).filter((m) => m.runId === id).at(-1)!;

  await page.goto('/admin');
  await page.getByLabel('Admin token').fill(E2E_TOKEN);
  await page.getByRole('button', { name: 'Sign in' }).click();
  // The dashboard shows the newest run; "Show" on an older one brings its rounds and versions instead.
  await expect(page.locator('#rounds-run')).toHaveText(`· run ${id}`);
  await page.locator(`#runs button[data-run="${first.id}"]`).click();
  await expect(page.locator('#rounds-run')).toHaveText(`· run ${first.id}`);
  await expect(page.locator(`#runs tr[data-run-row="${first.id}"]`)).toHaveClass(/selected/);
  await expect(page.locator('#rounds tbody tr[data-round-row]')).toHaveCount(2);
  await expect(page.locator(`#rounds tbody tr[data-round-row^="${first.id}:"]`)).toHaveCount(2);
  await expect(page.locator(`#models tbody tr[data-version="${tip.version}"]`)).toBeVisible();
  await expect(page.locator(`#models tbody tr[data-version="${child.version}"]`)).toHaveCount(0);
  await expect(page.locator('#accuracy-chart')).toBeVisible();

  const tree = page.locator('#lineage');
  await expect(tree.locator(`button[data-version="${child.version}"]`)).toBeVisible();
  // the second run's versions hang under the first run's tip
  await expect(tree.locator(`li:has(> .node button[data-version="${tip.version}"]) button[data-version="${child.version}"]`)).toBeVisible();

  await tree.locator(`button[data-version="${tip.version}"]`).click();
  await tree.locator(`button[data-version="${child.version}"]`).click();
  const compare = page.locator('#compare table.compare');
  await expect(compare.locator('thead')).toContainText(`v${tip.version}`);
  await expect(compare.locator('thead')).toContainText(`v${child.version}`);
  await expect(compare.locator('tr.differs[data-row="η · E · B · K"]')).toContainText('0.05');
  await expect(compare.locator('tr[data-row="Labels"]')).toContainText('purpose=fine-tune');
  await expect(compare.locator('tr[data-row="Lineage"]')).toContainText('3 rounds');

  // the admin names and labels the version being edited (the last selected); a bad label key is refused with the reason
  await page.locator('#meta-labels').fill('bad key!=1');
  await page.getByRole('button', { name: 'Save' }).click();
  await expect(page.locator('#meta-error')).toContainText('label keys are');
  await page.locator('#meta-name').fill('digits, fine-tuned');
  await page.locator('#meta-labels').fill('stage=candidate, team=vision');
  await page.getByRole('button', { name: 'Save' }).click();
  await expect(page.locator('#meta-error')).toHaveText('Saved.');
  await expect(tree.locator('li', { hasText: 'digits, fine-tuned' }).first()).toContainText('stage=candidate');
  await expect(compare.locator('tr[data-row="Name"]')).toContainText('digits, fine-tuned');
  const record = (await (await admin.get(`/api/models/${child.version}`)).json()) as { name: string; labels: Record<string, string>; parentVersion: number };
  expect(record).toMatchObject({ name: 'digits, fine-tuned', labels: { purpose: 'fine-tune', stage: 'candidate', team: 'vision' } });
  await page.locator('section[aria-labelledby="h-registry"]').screenshot({ path: `${shots}/admin-registry.png` });
});

test('a tab whose data is corrupted measures it, and the dashboard flags it, then leaves it out of a run that excludes such devices', async ({ openDevices, page, admin }) => {
  const devices = await openDevices([
    { clients: 3, client: 0, examples: 300 },
    { clients: 3, client: 1, examples: 300 },
    { clients: 3, client: 2, examples: 300, query: { corrupt: 'labels:0.6' } },
  ]);
  const bad = devices[2]!.page;
  await expect(bad.locator('dd[data-fact="Slice"]')).toContainText('corrupted (labels:0.6)');
  await expect(bad.locator('dd[data-fact="Data quality"]')).toContainText(/coherence 0\.[0-4]\d/);
  const badId = (await bad.evaluate(() => window.__fl.deviceId))!;

  await page.goto('/admin');
  await page.getByLabel('Admin token').fill(E2E_TOKEN);
  await page.getByRole('button', { name: 'Sign in' }).click();
  const row = page.locator(`#devices tr[data-device="${badId}"]`);
  await expect(row.locator('[data-quality="flag"]')).toContainText(/flagged: coherence 0\.\d\d < 0\.55/);
  for (const d of devices.slice(0, 2)) await expect(page.locator(`#devices tr[data-device="${(await d.page.evaluate(() => window.__fl.deviceId))!}"] [data-quality="ok"]`)).toHaveText('ok');
  await page.locator('section:has(#devices)').screenshot({ path: `${shots}/admin-data-quality.png` });

  // a run that excludes such devices trains on the two others only
  const created = await admin.post('/api/runs', { data: { model: 'mlp', rounds: 1, clientsPerRound: 2, overSelect: 1, minUpdates: 2, batchSize: 20, roundTimeoutMs: 120_000, dataQuality: { action: 'exclude' } } });
  expect(created.status(), await created.text()).toBe(201);
  const { id } = (await created.json()) as { id: number };
  await expect(row.locator('[data-quality="exclude"]')).toContainText('excluded: coherence');
  expect((await waitForRun(admin, id, 3 * 60_000)).status).toBe('done');
  const [round] = (await (await admin.get(`/api/runs/${id}/rounds`)).json()) as { devices: { id: string }[] }[];
  expect(round!.devices.map((d) => d.id)).not.toContain(badId);
  expect(round!.devices).toHaveLength(2);
});
