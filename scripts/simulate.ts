/**
 * The multi-tab simulation as a command: starts the server, opens N headless Chromium devices
 * (one BrowserContext each, so each has its own IndexedDB), launches a run and prints a per-round table.
 *
 *   npm run simulate -- --tabs 4 --rounds 5 [--partition iid|shards|dirichlet] [--model cnn-small]
 *     [--examples 600] [--epochs 1] [--batch 10] [--lr 0.1] [--alpha 0.5] [--seed 1] [--backend webgl|wasm|cpu]
 *     [--codec rand+q2+deflate] [--topk 0.01] [--rand 0.25] [--downlink delta|full]
 */
import { api, followRun, launchBrowser, openDevices, parseArgs, startServer } from './lib/harness.ts';

const args = parseArgs(process.argv.slice(2), { tabs: '4', rounds: '5', partition: 'iid', model: 'cnn-small', examples: '600', epochs: '1', batch: '10', lr: '0.1', alpha: '0.5', seed: '1', backend: '', k: '', codec: 'float32', topk: '0.01', rand: '0.25', downlink: 'delta' });
const tabs = Number(args.tabs);
if (!Number.isInteger(tabs) || tabs < 1 || tabs > 64) throw new Error(`--tabs must be an integer in 1..64, got ${args.tabs}`);

const server = await startServer();
const browser = await launchBrowser();
try {
  const t0 = Date.now();
  process.stdout.write(`opening ${tabs} devices (${args.partition}, ${args.examples} examples each)…\n`);
  const devices = await openDevices(browser, server.url, tabs, { partition: args.partition as string, examples: args.examples as string, seed: args.seed as string, alpha: args.alpha as string, ...(args.backend ? { backend: args.backend } : {}) });
  const backends = await Promise.all(devices.map((d) => d.page.evaluate(() => window.__fl.backend?.backend ?? '?')));
  process.stdout.write(`devices ready in ${((Date.now() - t0) / 1000).toFixed(1)} s; backends: ${backends.join(', ')}\n`);
  const k = args.k ? Number(args.k) : tabs;
  const config = { model: args.model, rounds: Number(args.rounds), clientsPerRound: k, minUpdates: Math.max(1, Math.ceil(k * 0.75)), localEpochs: Number(args.epochs), batchSize: Number(args.batch), learningRate: Number(args.lr), seed: Number(args.seed), roundTimeoutMs: 600_000, updateCodec: args.codec, topkFraction: Number(args.topk), randFraction: Number(args.rand), downlink: args.downlink };
  const created = await api<{ id?: number; error?: string }>(server, '/api/runs', { method: 'POST', body: config });
  if (created.status !== 201) throw new Error(`launch failed: ${created.body.error}`);
  const header = ['round', 'status', 'counted', 'test acc', 'test loss', 'local before→after', 'duration', 'train', 'up/device', 'down/device'];
  process.stdout.write(`\n${header.join(' | ')}\n`);
  const result = await followRun(server, created.body.id as number, (r) => {
    const cells = [
      String(r.round),
      r.status,
      `${r.completed}/${r.participants}`,
      r.testAccuracy === null ? '—' : (r.testAccuracy * 100).toFixed(2) + ' %',
      r.testLoss?.toFixed(4) ?? '—',
      r.localAccuracyBefore === null ? '—' : `${(r.localAccuracyBefore * 100).toFixed(1)} → ${((r.localAccuracyAfter ?? 0) * 100).toFixed(1)} %`,
      `${(r.durationMs / 1000).toFixed(1)} s`,
      r.timings ? `${(r.timings.trainMs / 1000).toFixed(1)} s` : '—',
      r.completed ? `${(r.bytesUp / r.completed / 1024).toFixed(1)} KiB` : '—',
      `${(r.bytesDown / r.participants / 1024).toFixed(1)} KiB`,
    ];
    process.stdout.write(`${cells.join(' | ')}${r.reason ? `  (${r.reason})` : ''}\n`);
  });
  process.stdout.write(`\nrun ${result.status}: ${result.reason ?? ''} in ${((Date.now() - t0) / 1000).toFixed(1)} s\n`);
  for (const d of devices) await d.context.close();
  process.exitCode = result.status === 'done' ? 0 : 1;
} finally {
  await browser.close();
  await server.stop();
}
