/**
 * The multi-tab simulation as a command: starts the server, opens N headless Chromium devices
 * (one BrowserContext each, so each has its own IndexedDB), launches a run and prints a per-round table.
 *
 *   npm run simulate -- --tabs 4 --rounds 5 [--partition iid|shards|dirichlet] [--model cnn-small]
 *     [--examples 600] [--epochs 1] [--batch 10] [--lr 0.1] [--alpha 0.5] [--seed 1] [--backend webgl|wasm|cpu]
 *     [--k K] [--min-updates M] [--over-select 1] [--deadline MS]
 *     [--codec rand+q2+deflate] [--topk 0.01] [--rand 0.25] [--downlink delta|full]
 *     [--drop P] [--silent P] [--late P] [--rejoin] [--fault-seed S]
 *
 * Faults, as real deployments see them: --drop closes a selected tab mid-round (--rejoin reopens it
 * a few seconds later, with its identity and data), --silent keeps a selected tab connected but
 * mute for the round, --late makes it answer after the deadline. Each is drawn per tab and round.
 */
import { anyFaults, faultQuery, TabDropper, type FaultOptions } from './lib/faults.ts';
import { api, deviceUrl, followRun, launchBrowser, openDevices, startServer } from './lib/harness.ts';

const FLAGS = new Set(['rejoin']);
const spec: Record<string, string> = { tabs: '4', rounds: '5', partition: 'iid', model: 'cnn-small', examples: '600', epochs: '1', batch: '10', lr: '0.1', alpha: '0.5', seed: '1', backend: '', k: '', 'min-updates': '', 'over-select': '1', deadline: '', codec: 'float32', topk: '0.01', rand: '0.25', downlink: 'delta', drop: '0', silent: '0', late: '0', rejoin: 'false', 'fault-seed': '1' };
function parse(argv: string[]): Record<string, string> {
  const out = { ...spec };
  for (let i = 0; i < argv.length; i++) {
    const key = (argv[i] as string).replace(/^--/, '');
    if (!(argv[i] as string).startsWith('--') || !(key in spec)) throw new Error(`unknown option ${argv[i]}; known: ${Object.keys(spec).map((k) => `--${k}`).join(' ')}`);
    if (FLAGS.has(key)) out[key] = 'true';
    else {
      const value = argv[++i];
      if (value === undefined || value.startsWith('--')) throw new Error(`--${key} needs a value`);
      out[key] = value;
    }
  }
  return out;
}
const args = parse(process.argv.slice(2));
const num = (name: string, min: number, max: number, whole = false) => {
  const v = Number(args[name]);
  if (!(v >= min && v <= max) || (whole && !Number.isInteger(v))) throw new Error(`--${name} must be ${whole ? 'a whole number' : 'a number'} in ${min}..${max}, got "${args[name]}"`);
  return v;
};
const tabs = num('tabs', 1, 64, true);
const faults: FaultOptions = { drop: num('drop', 0, 1), silent: num('silent', 0, 1), late: num('late', 0, 1), rejoin: args.rejoin === 'true', seed: num('fault-seed', 0, 2 ** 31 - 1, true) };
if (faults.silent + faults.late > 1) throw new Error('--silent and --late must add up to at most 1');
const k = args.k ? num('k', 1, tabs, true) : tabs;
const faulty = anyFaults(faults);
// With faults a round must be able to close on fewer updates, and sooner: a silent device holds it until the deadline.
const minUpdates = args['min-updates'] ? num('min-updates', 1, k, true) : Math.max(1, Math.ceil(k * (faulty ? 0.5 : 0.75)));
const deadline = args.deadline ? num('deadline', 1_000, 24 * 3600_000, true) : faulty ? 30_000 : 600_000;

const server = await startServer();
const browser = await launchBrowser();
try {
  const t0 = Date.now();
  process.stdout.write(`opening ${tabs} devices (${args.partition}, ${args.examples} examples each)…\n`);
  const query = { partition: args.partition as string, examples: args.examples as string, seed: args.seed as string, alpha: args.alpha as string, ...(args.backend ? { backend: args.backend } : {}), ...faultQuery(faults) };
  const devices = await openDevices(browser, server.url, tabs, query);
  const backends = await Promise.all(devices.map((d) => d.page.evaluate(() => window.__fl.backend?.backend ?? '?')));
  process.stdout.write(`devices ready in ${((Date.now() - t0) / 1000).toFixed(1)} s; backends: ${backends.join(', ')}\n`);
  if (faulty) process.stdout.write(`faults: drop ${faults.drop}, silent ${faults.silent}, late ${faults.late}${faults.rejoin ? ', dropped tabs rejoin' : ''} (seed ${faults.seed}); K=${k}, minUpdates=${minUpdates}, deadline ${deadline / 1000} s\n`);
  const dropper = new TabDropper(faults, devices, (i) => deviceUrl(server.url, tabs, i, query));
  const config = { model: args.model, rounds: num('rounds', 1, 10_000, true), clientsPerRound: k, minUpdates, overSelect: num('over-select', 1, 10), localEpochs: Number(args.epochs), batchSize: Number(args.batch), learningRate: Number(args.lr), seed: Number(args.seed), roundTimeoutMs: deadline, maxRoundRetries: faulty ? 10 : 2, updateCodec: args.codec, ...(String(args.codec).startsWith('topk') ? { topkFraction: Number(args.topk) } : {}), ...(String(args.codec).startsWith('rand') ? { randFraction: Number(args.rand) } : {}), downlink: args.downlink };
  const created = await api<{ id?: number; error?: string }>(server, '/api/runs', { method: 'POST', body: config });
  if (created.status !== 201) throw new Error(`launch failed: ${created.body.error}`);
  const header = ['round', 'status', 'selected', 'counted', 'dropped', 'late', 'unanswered', 'test acc', 'test loss', 'local before→after', 'duration', 'train', 'up/device', 'down/device'];
  process.stdout.write(`\n${header.join(' | ')}\n`);
  const result = await followRun(
    server,
    created.body.id as number,
    (r) => {
      const cells = [
        r.attempt > 1 ? `${r.round}.${r.attempt}` : String(r.round),
        r.status,
        String(r.participants),
        String(r.completed),
        String(r.dropped),
        String(r.late),
        String(r.unanswered),
        r.testAccuracy === null ? '—' : (r.testAccuracy * 100).toFixed(2) + ' %',
        r.testLoss?.toFixed(4) ?? '—',
        r.localAccuracyBefore === null ? '—' : `${(r.localAccuracyBefore * 100).toFixed(1)} → ${((r.localAccuracyAfter ?? 0) * 100).toFixed(1)} %`,
        `${(r.durationMs / 1000).toFixed(1)} s`,
        r.timings ? `${(r.timings.trainMs / 1000).toFixed(1)} s` : '—',
        r.completed ? `${(r.bytesUp / r.completed / 1024).toFixed(1)} KiB` : '—',
        `${(r.bytesDown / r.participants / 1024).toFixed(1)} KiB`,
      ];
      process.stdout.write(`${cells.join(' | ')}${r.reason ? `  (${r.reason})` : ''}\n`);
    },
    () => dropper.tick(),
    faults.drop > 0 ? 200 : 500,
  );
  await dropper.settle();
  const injected = (await Promise.all(devices.filter((d) => !d.page.isClosed()).map((d) => d.page.evaluate(() => window.__fl.faults)))).flat();
  if (faulty) {
    const count = (f: string) => injected.filter((x) => x.fault === f).length;
    process.stdout.write(`\ninjected: ${dropper.dropped.length} tabs closed mid-round${faults.rejoin ? ` (${dropper.rejoined.length} came back)` : ''}, ${count('silent')} silent and ${count('late')} late answers (tabs open at the end)\n`);
    const completed = result.rounds.filter((r) => r.status === 'completed');
    process.stdout.write(`rounds: ${completed.length} completed, ${result.rounds.length - completed.length} failed attempts; test accuracy ${completed.map((r) => (r.testAccuracy === null ? '—' : (r.testAccuracy * 100).toFixed(1))).join(' → ')}\n`);
    // the records as they stand at the end (a round's late answers may come after the table printed its row), against the late answers the open tabs sent to those rounds
    const sentLate = injected.filter((x) => x.fault === 'late' && completed.some((r) => r.round === x.round && r.attempt === x.attempt)).length;
    process.stdout.write(`completed rounds: the open tabs sent ${sentLate} late answers, the records count ${completed.reduce((n, r) => n + r.late, 0)}; ${completed.reduce((n, r) => n + r.unanswered, 0)} selected devices never answered\n`);
  }
  process.stdout.write(`\nrun ${result.status}: ${result.reason ?? ''} in ${((Date.now() - t0) / 1000).toFixed(1)} s\n`);
  for (const d of devices) await d.context.close();
  process.exitCode = result.status === 'done' ? 0 : 1;
} finally {
  await browser.close();
  await server.stop();
}
