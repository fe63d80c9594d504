import { E2E_TOKEN } from '../playwright.config.ts';
import type { RoundRecord } from '../shared/api.ts';
import { expect, test, waitForRun } from './fixtures.ts';

const shots = process.env.SCREENSHOT_DIR ?? 'test-results/screenshots';

test('five tabs train with secure aggregation; a tab closed after sending its masked input does not stop the round', async ({ openDevices, admin, page }) => {
  test.setTimeout(8 * 60_000);
  // Tab 0 trains on few examples, so in round 2 its masked input is in well before the others'.
  const devices = await openDevices([0, 1, 2, 3, 4].map((client) => ({ clients: 5, client, examples: client === 0 ? 60 : 600, backend: 'wasm' as const })));
  // every text the device page's secure-aggregation line shows on tab 1, in order (the stages pass too quickly to poll)
  const tab1 = devices[1]!.page;
  await tab1.evaluate(() => {
    const line = document.getElementById('secure-line')!;
    const seen: string[] = [];
    (window as unknown as { __secureLines: string[] }).__secureLines = seen;
    // (each assignment of textContent adds a text node: reading the records keeps texts that follow each other within one task)
    new MutationObserver((records) => {
      for (const r of records) for (const n of Array.from(r.addedNodes)) if (seen.at(-1) !== n.textContent) seen.push(n.textContent ?? '');
    }).observe(line, { childList: true });
  });
  const created = await admin.post('/api/runs', { data: { model: 'cnn-small', rounds: 3, clientsPerRound: 5, overSelect: 1, minUpdates: 3, localEpochs: 2, batchSize: 10, learningRate: 0.1, clipNorm: 5, roundTimeoutMs: 240_000, seed: 1, secureAggregation: true } });
  expect(created.status(), await created.text()).toBe(201);
  const { id } = (await created.json()) as { id: number };

  await page.goto('/admin');
  await page.getByLabel('Admin token').fill(E2E_TOKEN);
  await page.getByRole('button', { name: 'Sign in' }).click();

  // Round 2: once tab 0's masked input has been taken, close the tab before anyone is asked to unmask.
  const tab0 = devices[0]!.page;
  await tab0.waitForFunction(() => window.__fl.snapshot?.history.some((h) => h.round === 2 && h.outcome === 'trained'), undefined, { timeout: 240_000, polling: 50 }); // by interval: a busy page's animation frames may come too seldom to see the state, which lasts only until round 2 ends
  const roundWhenClosed = ((await (await admin.get('/api/status')).json()) as { round: { round: number; accepted: number; selected: number } | null }).round;
  await devices[0]!.context.close();

  const run = await waitForRun(admin, id, 6 * 60_000);
  expect(run.status, run.reason ?? '').toBe('done');
  const rounds = ((await (await admin.get(`/api/runs/${id}/rounds`)).json()) as RoundRecord[]).filter((r) => r.status === 'completed');
  expect(rounds.map((r) => r.round)).toEqual([1, 2, 3]);
  console.log(`secure aggregation, test accuracy per round: ${rounds.map((r) => r.testAccuracy?.toFixed(4)).join(', ')}; when tab 0 closed, round ${roundWhenClosed?.round} had ${roundWhenClosed?.accepted} of ${roundWhenClosed?.selected} inputs`);
  expect(roundWhenClosed).toMatchObject({ round: 2, selected: 5 });
  expect(rounds[0]).toMatchObject({ completed: 5, secureAggregation: { neighbours: 4, threshold: 3, inputs: 5, revealed: 5 } });
  // the closed tab's input is in round 2's sum, unmasked from its neighbours' shares
  expect(rounds[1]).toMatchObject({ completed: 5, secureAggregation: { inputs: 5, revealed: 4 } });
  expect(rounds[2]).toMatchObject({ completed: 4, secureAggregation: { selected: 4, inputs: 4 } });
  expect(rounds.every((r) => r.devices.every((d) => d.weight === null))).toBe(true);
  expect(rounds[2]!.testAccuracy!).toBeGreaterThan(0.85);
  expect(rounds[2]!.testAccuracy!).toBeGreaterThan(rounds[0]!.testAccuracy!);

  // The dashboard shows what the protocol did; the device page, its stage.
  await page.locator('#rounds tbody button[data-round]').first().click();
  await expect(page.locator('#rounds tr.detail')).toContainText('Secure aggregation');
  await expect(page.locator('#rounds tr.detail')).toContainText('3 neighbours per device, any 2 rebuild'); // round 3, the newest: four devices left
  await page.screenshot({ path: `${shots}/admin-secure.png`, fullPage: true });
  // the device page said where its round was in the protocol: keys, shares, masking, the reveal
  const lines = await tab1.evaluate(() => (window as unknown as { __secureLines: string[] }).__secureLines);
  for (const stage of ['keys advertised', 'secrets shared', 'masking the update', 'masked update sent', 'shares revealed']) expect(lines.some((l) => l.startsWith('Secure aggregation: ') && l.includes(stage)), `"${stage}" in ${JSON.stringify(lines)}`).toBe(true);
  for (const d of devices.slice(1)) expect(d.errors, d.errors.join('\n')).toEqual([]);
});
