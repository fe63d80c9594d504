/**
 * Two server nodes (ROLE=node on a private Redis and PostgreSQL) and real Chromium tabs joined
 * through different nodes: they train together, the coordinating node's dashboard shows them all,
 * and a run started through the other node is the same run.
 */
import { startLocalCluster, type LocalCluster } from '../scripts/lib/cluster.ts';
import type { RoundRecord } from '../shared/api.ts';
import { deviceUrl, expect, test } from './fixtures.ts';

const shots = process.env.SCREENSHOT_DIR ?? 'test-results/screenshots';

let cluster: LocalCluster;

test.beforeAll(async () => {
  cluster = await startLocalCluster({ nodes: 2, env: { LEASE_MS: '2000', HEARTBEAT_MS: '300' } });
});
test.afterAll(async () => {
  await cluster?.stop();
});

test('tabs joined through different nodes of a cluster train together', async ({ browser, playwright }) => {
  const [one, two] = cluster.nodes as [LocalCluster['nodes'][number], LocalCluster['nodes'][number]];
  const tabs = await Promise.all(
    [one, two].map(async (node, client) => {
      const context = await browser.newContext();
      const page = await context.newPage();
      await page.goto(`${node.url}${deviceUrl({ clients: 2, client })}`);
      await page.waitForFunction(() => window.__fl?.ready && window.__fl.snapshot?.connection === 'connected', undefined, { timeout: 120_000 });
      return { context, page, node };
    }),
  );
  const api = await playwright.request.newContext({ extraHTTPHeaders: { authorization: `Bearer ${cluster.token}` } });
  try {
    const view = (await (await api.get(`${one.url}/api/cluster`)).json()) as { coordinator: string; devicesByNode?: Record<string, number> };
    expect(view.coordinator).toBe(one.id);
    await expect.poll(async () => ((await (await api.get(`${one.url}/api/cluster`)).json()) as typeof view).devicesByNode).toEqual({ [one.id]: 1, [two.id]: 1 });

    // started through the node that does not coordinate: it passes the request on
    const created = await api.post(`${two.url}/api/runs`, { data: { model: 'cnn-small', rounds: 2, clientsPerRound: 2, minUpdates: 2, overSelect: 1, localEpochs: 1, batchSize: 10, learningRate: 0.1, roundTimeoutMs: 240_000, seed: 1 } });
    expect(created.status()).toBe(201);
    const { id } = (await created.json()) as { id: number };

    // the dashboard on the coordinating node sees both tabs
    const dash = await browser.newPage();
    await dash.goto(`${one.url}/admin`);
    await dash.getByLabel('Admin token').fill(cluster.token);
    await dash.getByRole('button', { name: 'Sign in' }).click();
    await expect(dash.locator('#devices tr[data-device]:not(.disconnected)')).toHaveCount(2);

    await expect
      .poll(async () => ((await (await api.get(`${two.url}/api/runs/${id}`)).json()) as { status: string }).status, { timeout: 8 * 60_000, intervals: [1000] })
      .toBe('done');
    const rounds = (await (await api.get(`${two.url}/api/runs/${id}/rounds`)).json()) as RoundRecord[];
    const ids = await Promise.all(tabs.map((t) => t.page.evaluate(() => window.__fl.deviceId)));
    expect(rounds.map((r) => [r.round, r.status, r.completed])).toEqual([[1, 'completed', 2], [2, 'completed', 2]]);
    for (const r of rounds) expect(r.devices.map((d) => d.id).sort()).toEqual([...ids].sort());
    console.log(`cluster: test accuracy per round: ${rounds.map((r) => r.testAccuracy?.toFixed(4)).join(', ')}`);
    expect(rounds[1]!.testAccuracy).toBeGreaterThan(0.8);

    await expect(dash.locator('#rounds tbody tr[data-round-row]')).toHaveCount(2);
    await dash.screenshot({ path: `${shots}/cluster-dashboard.png`, fullPage: true });
    await expect(tabs[1]!.page.locator('#history tbody tr').first()).toBeVisible();
    await tabs[1]!.page.screenshot({ path: `${shots}/cluster-device-on-node-2.png`, fullPage: true });
  } finally {
    await api.dispose();
    await Promise.all(tabs.map((t) => t.context.close()));
  }
});
