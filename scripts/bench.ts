/**
 * `npm run bench`: prints the project's figures and writes them to bench-results/bench.json.
 * Every figure is the median of repeated runs in this one process (shared machines are noisy:
 * compare ratios measured in the same run, not absolute numbers across runs).
 *
 *   1. local training samples/s per backend and model, in Chromium: raw model.fit vs the device's step;
 *      then the page's main thread while its device trains, in a Web Worker or on the page (Long Tasks API)
 *   2. weight payload encode/decode and FedAvg aggregation throughput vs a plain Float32 add loop (Node)
 *   3. a federation of 4 tabs: time per round and its split, bytes per device, server RSS, memory per tab;
 *      then the same with compressed updates (the browser's bytes for the codec table)
 *   4. the paper's CNN end to end with 2 tabs (6.65 MB updates)
 *   5. server memory against the number of devices in a round (socket devices sending real-size updates)
 *   6. the Node simulation: training samples/s with 1 worker and with one per core
 *   7. wasm threads: a cross-origin-isolated page (CROSS_ORIGIN_ISOLATION=1) against a plain one
 *   8. secure aggregation: the protocol's CPU per stage (devices and server) and bytes per device
 *      against plain float32 updates, at 10–200 devices a round and 0–30 % dropouts (Node); then
 *      5 tabs, plain against secure
 *   9. work off the event loop: evaluating a model on the 10,000 test images and encoding a model
 *      delta, in-process against the server's threads — wall time, and the longest the event loop
 *      waited meanwhile (Node)
 *
 *  10. the non-IID strategies' cost on the device: FedProx's proximal term and personalization's mixes (Node)
 *  11. where a training step's time goes on wasm: its kernels, profiled, per model (Node)
 *  12. secure rounds with over-selection: how often the K-th input could close the round, and what the coordinator does (Node, no crypto)
 *
 *   npm run bench -- [--repeats 3] [--skip kernels,strategies,threads,simulation,training,main-thread,rounds,memory,cnn,secagg,secagg-close,secagg-tabs,evaluation]
 *                    [--only aggregation,bomb,secagg,…]   (just these sections)
 */
import { execSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { deflateSync, inflateSync } from 'fflate';
import { decodeUpdate, encodeUpdate } from '../shared/codec.ts';
import { WeightedDeltaSum } from '../shared/fedavg.ts';
import { addGaussianNoise } from '../shared/privacy/noise.ts';
import { quantizeInput, type QuantBounds } from '../shared/secagg/quantize.ts';
import { clipToNorm } from '../shared/robust.ts';
import { dpFedAvgAggregator } from '../server/fl/strategy.ts';
import { countParams, initialWeights, type ModelName } from '../shared/models.ts';
import { createRng } from '../shared/rng.ts';
import { decodeWeights, encodeWeights } from '../shared/weights.ts';
import { loadMnist } from '../server/data/mnist.ts';
import { createEvaluator, startWorkerEvaluator, type Evaluator } from '../server/ml/evaluator.ts';
import { inlineDeltaEncoder } from '../server/model-book.ts';
import { startWorkPool } from '../server/work-pool.ts';
import { runSimulation } from '../server/sim/simulation.ts';
import { measure } from './lib/load-round.ts';
import { buildModel, setFlatWeights } from '../shared/models.ts';
import { disposeData, toTensors, trainLocal } from '../shared/train.ts';
import { mixedAccuracies } from '../shared/personalize.ts';
import { registerWasmTrainingKernels } from '../shared/wasm-kernels.ts';
import { api, deviceUrl, followRun, launchBrowser, median, openDevices, parseArgs, startServer, type RoundRow, type ServerHandle } from './lib/harness.ts';

const args = parseArgs(process.argv.slice(2), { repeats: '3', skip: '', only: '' });
const repeats = Number(args.repeats);
const skipped = new Set(String(args.skip).split(',').filter(Boolean));
const only = new Set(String(args.only).split(',').filter(Boolean));
const skip = { has: (section: string): boolean => skipped.has(section) || (only.size > 0 && !only.has(section)) };
const roundResults: unknown[] = [];
const results: Record<string, unknown> = { date: new Date().toISOString(), repeats, rounds: roundResults };
const line = (s = '') => process.stdout.write(s + '\n');
const fmt = (x: number, d = 1) => (Number.isFinite(x) ? x.toFixed(d) : '—');

// ─── 2. payload and aggregation (Node, no browser) ───────────────────────────
function benchAggregation(): void {
  line('## Weight payload and aggregation (Node), the paper CNN: 1,663,370 parameters');
  const n = countParams('cnn');
  const specs = [{ name: 'all', shape: [n] }];
  const values = Float32Array.from({ length: n }, (_, i) => Math.sin(i) * 0.01);
  const bytes = n * 4;
  const time = (fn: () => void, reps = 7) => median(Array.from({ length: reps }, () => {
    const t0 = performance.now();
    fn();
    return performance.now() - t0;
  }));
  const payload = encodeWeights({ specs, values });
  const encMs = time(() => encodeWeights({ specs, values }));
  const decMs = time(() => decodeWeights(payload, specs));
  const updates = 10;
  const aggMs = time(() => {
    const acc = new WeightedDeltaSum(n);
    for (let k = 0; k < updates; k++) acc.add(values, 600);
    acc.mean();
  }, 5);
  const plainMs = time(() => {
    const sum = new Float32Array(n);
    for (let k = 0; k < updates; k++) for (let i = 0; i < n; i++) sum[i] = (sum[i] as number) + (values[i] as number);
  }, 5);
  const r = {
    payloadBytes: payload.byteLength,
    encodeMBps: bytes / 1e6 / (encMs / 1000),
    decodeMBps: bytes / 1e6 / (decMs / 1000),
    aggregateUpdatesPerS: updates / (aggMs / 1000),
    aggregateGBps: (updates * bytes) / 1e9 / (aggMs / 1000),
    plainAddGBps: (updates * bytes) / 1e9 / (plainMs / 1000),
  };
  results.aggregation = { ...r, efficiency: r.aggregateGBps / r.plainAddGBps };
  line(`encode ${fmt(r.encodeMBps, 0)} MB/s · decode+validate ${fmt(r.decodeMBps, 0)} MB/s · FedAvg ${fmt(r.aggregateUpdatesPerS, 0)} updates/s = ${fmt(r.aggregateGBps, 2)} GB/s vs plain Float32 add ${fmt(r.plainAddGBps, 2)} GB/s (ratio ${fmt(r.aggregateGBps / r.plainAddGBps, 2)})`);
  // What DP adds to a round: clipping each update, and the Gaussian noise on the sum (cryptographic randomness).
  const clipMs = time(() => clipToNorm(values, 1e-3));
  const dpMs = time(() => {
    const agg = dpFedAvgAggregator(n, 1, 10);
    for (let k = 0; k < updates; k++) agg.add(values, 1);
    agg.result(values);
  }, 5);
  const noiseMs = time(() => addGaussianNoise(new Float64Array(n), 1), 5);
  // Distributed DP: a device quantizes its update for the masked sum and adds its Skellam share (two Poisson draws per entry).
  const secure: QuantBounds = { maxInputs: 100, maxWeight: 1, clipNorm: 1 };
  const rng = createRng(1);
  const quantMs = time(() => quantizeInput(values, 1, secure, rng), 5);
  const skellamMs = time(() => quantizeInput(values, 1, { ...secure, noise: { noiseMultiplier: 1, minInputs: 80, parameters: n } }, rng), 5);
  results.dp = { clipMsPerUpdate: clipMs, noiseMsPerRound: noiseMs, dpRoundOf10Ms: dpMs, fedAvgRoundOf10Ms: aggMs, deviceQuantizeMs: quantMs, deviceQuantizeWithSkellamMs: skellamMs };
  line(`DP: clipping an update ${fmt(clipMs, 1)} ms · the noise on a round's sum ${fmt(noiseMs, 1)} ms (${fmt(n / 1e6 / (noiseMs / 1000), 0)} M Gaussians/s) · a DP round of 10 updates ${fmt(dpMs, 0)} ms against ${fmt(aggMs, 0)} ms for FedAvg's`);
  line(`distributed DP, per device: quantizing the update for the masked sum ${fmt(quantMs, 0)} ms, with its Skellam share of the noise ${fmt(skellamMs, 0)} ms (${fmt((2 * n) / 1e6 / ((skellamMs - quantMs) / 1000), 1)} M Poisson draws/s)`);
  line();
}

// ─── 8b. secure rounds with over-selection: when K inputs may close the round (the coordinator, no crypto) ──────
async function benchSecAggClose(): Promise<void> {
  const { initialState, step } = await import('../server/fl/coordinator.ts');
  const { runConfigSchema } = await import('../shared/schemas.ts');
  const { shuffleInPlace } = await import('../shared/rng.ts');
  type State = ReturnType<typeof initialState>;
  type Effects = ReturnType<typeof step>['effects'];
  const metrics = { accuracyBefore: 0.1, lossBefore: 2, accuracyAfter: 0.2, lossAfter: 1.9, downloadMs: 1, evaluateMs: 1, trainMs: 1 };
  const orders = 200;
  line(`## Secure rounds with over-selection (overSelect 1.3, default k and t, every selected device shares its keys, inputs in ${orders} random orders)`);
  line('K | selected | k, t | rounds the K-th input could have closed and unmasked | rounds unmasked as the coordinator closes them | inputs in the sum, mean');
  const rows: unknown[] = [];
  for (const K of [10, 20, 50, 100, 200]) {
    let atK = 0;
    let unmasked = 0;
    let inputs = 0;
    let shape = '';
    for (let seed = 1; seed <= orders; seed++) {
      let state: State = initialState();
      const effects: Effects = [];
      let n = 0;
      const send = (e: Parameters<typeof step>[1]) => {
        const r = step(state, e, 0);
        state = r.state;
        effects.push(...r.effects);
        return r.effects;
      };
      const ref = { runId: 1, round: 1, attempt: 1 };
      const all = Array.from({ length: Math.ceil(K * 1.3) }, (_, i) => `d${i}`);
      for (const id of all) send({ type: 'device:joined', deviceId: id, examples: 100 });
      send({ type: 'run:start', runId: 1, config: runConfigSchema.parse({ clientsPerRound: K, overSelect: 1.3, minUpdates: 3, clipNorm: 5, secureAggregation: true, selectionTimeoutMs: 0, seed }) });
      for (const what of ['keys', 'shares'] as const) for (const id of all) send({ type: 'secagg:received', what, message: ++n, deviceId: id, bytes: 1, ...ref });
      const s = state.current!.secagg!;
      shape = `${s.k}, ${s.t}`;
      const order = shuffleInPlace([...all], createRng(seed * 7));
      // closing at the K-th input: every device's secrets need t of its neighbours among the first K
      const firstK = new Set(order.slice(0, K));
      if (all.every((id) => s.neighbours[id]!.filter((m) => firstK.has(m)).length >= s.t)) atK++;
      for (const id of order) {
        if (state.phase !== 'training') break;
        const submission = ++n;
        if (send({ type: 'update:submitted', submission, deviceId: id, ...ref, numExamples: 100, bytes: 1, metrics }).some((e) => e.type === 'update:validate')) send({ type: 'update:validated', submission, norm: 1, clipped: false });
      }
      inputs += state.current!.accepted.length;
      const unmask = effects.findLast((e) => e.type === 'secagg:unmask') as { requests: object };
      if (Object.keys(unmask.requests).flatMap((id) => send({ type: 'secagg:received', what: 'reveal', message: ++n, deviceId: id, bytes: 1, ...ref })).some((e) => e.type === 'round:aggregate')) unmasked++;
    }
    rows.push({ K, selected: Math.ceil(K * 1.3), shape, closableAtK: atK / orders, unmasked: unmasked / orders, meanInputs: inputs / orders });
    line(`${K} | ${Math.ceil(K * 1.3)} | ${shape} | ${fmt((100 * atK) / orders, 0)} % | ${fmt((100 * unmasked) / orders, 0)} % | ${fmt(inputs / orders)}`);
  }
  results.secaggClose = rows;
  line();
}

// ─── 8. secure aggregation (Node, the real protocol code in one process) ──────
async function benchSecAgg(): Promise<void> {
  const { identities, secAggRound } = await import('../server/sim/secagg-round.ts');
  const { advertToWire, neighbourToWire, revealToWire, sharesToWire } = await import('../shared/secagg/wire.ts');
  const model: ModelName = 'mlp';
  const d = countParams(model);
  line(`## Secure aggregation: the 2NN (${d.toLocaleString('en')} parameters), devices dropping after sharing their keys (the server's costliest case)`);
  line('devices | dropped | k, t | device CPU ms: keys + shares + mask + reveal = total | server CPU ms: keys + shares + inputs + unmask = total | bytes up / device (× plain) | bytes down / device, protocol only');
  const rows: unknown[] = [];
  const plainUp = 4 * d + 64; // a float32 update: the values and the payload's header
  const json = (x: unknown) => JSON.stringify(x).length;
  const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / Math.max(1, xs.length);
  const warm = await identities(5);
  await secAggRound(warm, warm.map(() => new Uint32Array(d + 1))); // JIT and WebCrypto warm-up, not measured
  for (const n of [10, 50, 100, 200]) {
    const ids = await identities(n);
    const rng = createRng(n);
    const inputs = Array.from({ length: n }, () => Uint32Array.from({ length: d + 1 }, () => (rng() * 2 ** 32) >>> 0));
    for (const dropout of [0, 0.1, 0.3]) {
      const dropAt = Object.fromEntries(ids.slice(0, Math.round(n * dropout)).map((i) => [i.deviceId, 'input' as const]));
      // at 30 % dropouts a neighbourhood of about 2·log2(n) loses more than k − t too often: twice as many neighbours
      const neighbours = dropout >= 0.3 ? Math.min(2 * Math.floor((n - 1) / 2), 4 * Math.ceil(Math.log2(n))) : 0;
      let r: Awaited<ReturnType<typeof secAggRound>>;
      try {
        r = await secAggRound(ids, inputs, { dropAt, neighbours });
      } catch (err) {
        line(`${n} | ${Object.keys(dropAt).length} | — | the round fails: ${err instanceof Error ? err.message : String(err)}`);
        continue;
      }
      // what one device that goes through the whole protocol sends and receives (the socket.io envelope aside)
      const up = mean(r.captured.adverts.map((x) => json(advertToWire(x)))) + mean(r.captured.shares.map((m) => json({ shares: sharesToWire(m.shares), signature: 'x'.repeat(88) }))) + mean(r.captured.inputs.map((x) => x.payload.byteLength)) + mean(r.captured.reveals.map((x) => json(revealToWire(x))));
      const down = mean([...r.neighbours.values()].map((near) => json(near.map((id) => neighbourToWire(r.adverts.get(id)!))))) + mean(r.captured.shares.map((m) => json({ shares: sharesToWire(m.shares) })));
      const c = r.cpu.client;
      const s = r.cpu.server;
      const perDevice = { keys: c.keys / n, shares: c.shares / n, mask: c.mask / Math.max(1, r.captured.inputs.length), reveal: c.reveal / Math.max(1, r.captured.reveals.length) };
      const deviceTotal = perDevice.keys + perDevice.shares + perDevice.mask + perDevice.reveal;
      const serverTotal = s.keys + s.shares + s.inputs + s.unmask;
      rows.push({ devices: n, dropped: Object.keys(dropAt).length, k: r.shape.k, t: r.shape.t, deviceMs: { ...perDevice, total: deviceTotal }, serverMs: { ...s, total: serverTotal }, bytesUpPerDevice: up, plainBytesUp: plainUp, bytesDownProtocolPerDevice: down });
      line(`${n} | ${Object.keys(dropAt).length} | ${r.shape.k}, ${r.shape.t} | ${fmt(perDevice.keys)} + ${fmt(perDevice.shares)} + ${fmt(perDevice.mask)} + ${fmt(perDevice.reveal)} = ${fmt(deviceTotal)} | ${fmt(s.keys, 0)} + ${fmt(s.shares, 0)} + ${fmt(s.inputs, 0)} + ${fmt(s.unmask, 0)} = ${fmt(serverTotal, 0)} | ${fmt(up / 1024)} KiB (${fmt(up / plainUp, 3)}x) | ${fmt(down / 1024)} KiB`);
    }
  }
  results.secagg = rows;
  line();
}

// ─── 2b. a decompression bomb against the update decoder (Node) ─────────────
function benchBomb(): void {
  line('## A deflate bomb: a real 64 KiB DEFLATE stream that inflates to 64 MiB, behind a well-formed q8+deflate header');
  const codec = { codec: 'q8+deflate', topkFraction: 0.01, quantBlock: 256 };
  const rows: Record<string, unknown>[] = [];
  for (const model of ['cnn-small', 'cnn'] as const) {
    const w = initialWeights(model, 1);
    const good = encodeUpdate(w, codec, createRng(1));
    const stream = deflateSync(new Uint8Array(64 * 1024 * 1024), { level: 9 });
    const bomb = new Uint8Array(24 + stream.length);
    bomb.set(good.subarray(0, 24));
    bomb.set(stream, 24);
    const time = (fn: () => void) => median(Array.from({ length: 5 }, () => {
      const t0 = performance.now();
      fn();
      return performance.now() - t0;
    }));
    let reason = '';
    const refuseMs = time(() => {
      try {
        decodeUpdate(bomb, w.specs, codec);
      } catch (err) {
        reason = err instanceof Error ? err.message : String(err);
      }
    });
    const wholeMs = time(() => inflateSync(stream));
    const legitMs = time(() => decodeUpdate(good, w.specs, codec));
    rows.push({ model, bombBytes: bomb.length, refuseMs, inflateWholeMs: wholeMs, legitimateDecodeMs: legitMs, reason });
    line(`${model}: refused in ${fmt(refuseMs, 1)} ms (a legitimate q8+deflate update of this model decodes in ${fmt(legitMs, 1)} ms; inflating the stream whole takes ${fmt(wholeMs, 0)} ms) — ${reason}`);
  }
  results.bomb = rows;
  line();
}

// ─── 1. training throughput in the browser ───────────────────────────────────
async function benchTraining(server: ServerHandle): Promise<void> {
  line('## Local training, samples/s in one Chromium tab (batch 10), median of ' + repeats);
  line('backend | model | samples | raw model.fit | device step | device/raw | longest main-thread stall (ms) | device step GFLOP/s | 512² matmul GFLOP/s | device step/matmul');
  const browser = await launchBrowser();
  try {
    const context = await browser.newContext();
    const page = await context.newPage();
    await page.goto(`${server.url}/`);
    await page.waitForFunction(() => typeof window.__fl?.benchTraining === 'function');
    const rows: unknown[] = [];
    for (const backend of ['webgl', 'wasm', 'cpu']) {
      for (const model of ['mlp', 'cnn-small', 'cnn'] as ModelName[]) {
        const examples = model === 'cnn' ? (backend === 'wasm' ? 600 : backend === 'cpu' ? 40 : 100) : backend === 'cpu' ? 300 : 1000;
        const runs = [];
        for (let i = 0; i < repeats; i++) runs.push(await page.evaluate(([b, m, e]) => window.__fl.benchTraining(b as string, m as ModelName, e as number), [backend, model, examples] as const));
        const raw = median(runs.map((r) => r.rawSamplesPerS));
        const device = median(runs.map((r) => r.deviceSamplesPerS));
        const stall = median(runs.map((r) => r.maxStallMs));
        const gflops = median(runs.map((r) => r.deviceGflops));
        const matmul = median(runs.map((r) => r.matmulGflops));
        rows.push({ backend, model, samples: runs[0]?.samples, rawSamplesPerS: raw, deviceSamplesPerS: device, ratio: device / raw, maxStallMs: stall, trainingFlopsPerSample: runs[0]?.trainingFlopsPerSample, rawGflops: median(runs.map((r) => r.trainingGflops)), deviceGflops: gflops, matmulGflops: matmul, flopEfficiency: gflops / matmul });
        line(`${backend} | ${model} | ${runs[0]?.samples} | ${fmt(raw)} | ${fmt(device)} | ${fmt(device / raw, 2)} | ${fmt(stall, 0)} | ${fmt(gflops, 2)} | ${fmt(matmul, 2)} | ${fmt(gflops / matmul, 3)}`);
      }
    }
    results.training = rows;
    await context.close();
  } finally {
    await browser.close();
  }
  line();
}

// ─── 1b. the page's main thread while its device trains ─────────────────────
async function benchMainThread(server: ServerHandle): Promise<void> {
  line('## The page\'s main thread while its device works on a round (the paper CNN, E = 1, B = 10): the Long Tasks API');
  line('backend | training in | examples | round (s) | main-thread tasks > 50 ms | longest task (ms)');
  const browser = await launchBrowser();
  const rows: unknown[] = [];
  try {
    for (const backend of ['webgl', 'wasm', 'cpu']) {
      for (const where of ['worker', 'page'] as const) {
        const examples = backend === 'wasm' ? 300 : backend === 'webgl' ? 100 : 30;
        const context = await browser.newContext();
        await context.addInitScript(() => {
          const w = window as unknown as { __longTasks: number[] };
          w.__longTasks = [];
          new PerformanceObserver((list) => {
            for (const e of list.getEntries()) w.__longTasks.push(e.duration);
          }).observe({ type: 'longtask', buffered: true });
        });
        try {
          const page = await context.newPage();
          await page.goto(deviceUrl(server.url, 1, 0, { examples, backend, ...(where === 'page' ? { worker: '0' } : {}) }), { timeout: 120_000 });
          await page.waitForFunction(() => window.__fl?.ready && window.__fl.snapshot?.connection === 'connected', undefined, { timeout: 180_000 });
          const trainingIn = await page.evaluate(() => window.__fl.trainingIn);
          // from here on: the round only (joining, the backend probe and the first model build are not the device's training)
          await page.evaluate(() => ((window as unknown as { __longTasks: number[] }).__longTasks.length = 0));
          const created = await api<{ id: number; error?: string }>(server, '/api/runs', { method: 'POST', body: { model: 'cnn', rounds: 1, clientsPerRound: 1, minUpdates: 1, overSelect: 1, localEpochs: 1, batchSize: 10, learningRate: 0.05, roundTimeoutMs: 900_000 } });
          if (created.status !== 201) throw new Error(`launch failed: ${created.body.error}`);
          const result = await followRun(server, created.body.id, () => undefined);
          const tasks = await page.evaluate(() => (window as unknown as { __longTasks: number[] }).__longTasks.slice());
          const roundMs = result.rounds.find((r) => r.status === 'completed')?.durationMs ?? Number.NaN;
          const longest = Math.max(0, ...tasks);
          rows.push({ backend, trainingIn, examples, roundMs, longTasks: tasks.length, longestTaskMs: longest, status: result.status });
          line(`${backend} | ${trainingIn} | ${examples} | ${fmt(roundMs / 1000, 1)} | ${tasks.length} | ${fmt(longest, 0)}`);
        } finally {
          await context.close();
        }
      }
    }
  } finally {
    await browser.close();
  }
  results.mainThread = rows;
  line();
}

// ─── 3 & 4. whole rounds ─────────────────────────────────────────────────────
async function benchRounds(server: ServerHandle, label: string, tabs: number, config: Record<string, unknown>, examples: number): Promise<void> {
  line(`## ${label}`);
  const browser = await launchBrowser();
  try {
    const devices = await openDevices(browser, server.url, tabs, { examples });
    const backends = await Promise.all(devices.map((d) => d.page.evaluate(() => window.__fl.backend?.backend ?? '?')));
    const created = await api<{ id: number; error?: string }>(server, '/api/runs', { method: 'POST', body: { clientsPerRound: tabs, minUpdates: tabs, roundTimeoutMs: 600_000, ...config } });
    if (created.status !== 201) throw new Error(`launch failed: ${created.body.error}`);
    const rss: number[] = [];
    const tabHeap: number[] = [];
    const sessions = await Promise.all(devices.map(async (d) => {
      const cdp = await d.context.newCDPSession(d.page);
      await cdp.send('Performance.enable');
      return cdp;
    }));
    const sample = async () => {
      const { body } = await api<{ server: { rssBytes: number } }>(server, '/api/status');
      rss.push(body.server.rssBytes);
      for (const cdp of sessions) {
        const { metrics } = (await cdp.send('Performance.getMetrics')) as { metrics: { name: string; value: number }[] };
        tabHeap.push(metrics.find((m) => m.name === 'JSHeapUsedSize')?.value ?? 0);
      }
    };
    const result = await followRun(server, created.body.id, () => undefined, sample);
    const done = result.rounds.filter((r: RoundRow) => r.status === 'completed');
    const t = (k: keyof NonNullable<RoundRow['timings']>) => median(done.map((r) => r.timings?.[k] ?? Number.NaN));
    const p = (k: keyof RoundRow['phases']) => median(done.map((r) => r.phases[k]));
    const summary = {
      label,
      tabs,
      backends,
      rounds: done.length,
      status: result.status,
      roundMs: median(done.map((r) => r.durationMs)),
      waitingForDevicesMs: p('waitingForDevicesMs'),
      devicesAtWorkMs: p('devicesAtWorkMs'),
      waitingForCloseMs: p('waitingForCloseMs'),
      aggregationMs: p('aggregationMs'),
      serverEvaluationMs: p('evaluationMs'),
      downloadMs: t('downloadMs'),
      evaluateOnDeviceMs: t('evaluateMs'),
      trainMs: t('trainMs'),
      uploadMs: t('uploadMs'),
      bytesUpPerDevice: median(done.map((r) => r.bytesUp / Math.max(1, r.completed))),
      bytesDownPerDevice: median(done.map((r) => r.bytesDown / Math.max(1, r.participants))),
      serverRssMaxMB: Math.max(...rss) / 1e6,
      tabJsHeapMedianMB: median(tabHeap) / 1e6,
      finalTestAccuracy: done.at(-1)?.testAccuracy ?? null,
    };
    const serverShare = (summary.aggregationMs + summary.serverEvaluationMs) / summary.roundMs;
    line(`run ${result.status}, ${done.length} rounds on ${backends.join('/')} · round ${fmt(summary.roundMs / 1000, 2)} s (median) = waiting for devices ${fmt(summary.waitingForDevicesMs, 0)} ms + devices at work ${fmt(summary.devicesAtWorkMs, 0)} ms + waiting for the close ${fmt(summary.waitingForCloseMs, 0)} ms + aggregation ${fmt(summary.aggregationMs, 0)} ms + server evaluation ${fmt(summary.serverEvaluationMs, 0)} ms (medians of each phase)`);
    line(`devices at work, as the devices report it (medians): download ${fmt(summary.downloadMs, 0)} ms + evaluation ${fmt(summary.evaluateOnDeviceMs, 0)} ms + training ${fmt(summary.trainMs, 0)} ms + upload ${fmt(summary.uploadMs, 0)} ms`);
    line(`server share of the round (aggregate + evaluate): ${fmt(serverShare * 100)} % · bytes per device per round: up ${fmt(summary.bytesUpPerDevice / 1024)} KiB, down ${fmt(summary.bytesDownPerDevice / 1024)} KiB`);
    line(`server RSS max ${fmt(summary.serverRssMaxMB)} MB · tab JS heap (median) ${fmt(summary.tabJsHeapMedianMB)} MB · final test accuracy ${summary.finalTestAccuracy === null ? '—' : fmt(summary.finalTestAccuracy * 100, 2) + ' %'}`);
    // a secure run: what the protocol cost each tab, step by step (secagg/session.ts)
    const costs = (await Promise.all(devices.map((d) => d.page.evaluate(() => window.__fl.snapshot?.secureCosts ?? [])))).flat();
    const secureMs = costs.length ? { keys: median(costs.map((c) => c.keys)), shares: median(costs.map((c) => c.shares)), mask: median(costs.map((c) => c.mask)), reveal: median(costs.map((c) => c.reveal)) } : null;
    if (secureMs) line(`secure aggregation in the tab (medians over ${costs.length} device-rounds): keys ${fmt(secureMs.keys)} + shares ${fmt(secureMs.shares)} + mask ${fmt(secureMs.mask)} + reveal ${fmt(secureMs.reveal)} ms`);
    roundResults.push({ ...summary, serverShare, secureMs });
    for (const cdp of sessions) await cdp.detach();
    for (const d of devices) await d.context.close();
  } finally {
    await browser.close();
  }
  line();
}

// ─── 5. server memory against devices in the round ──────────────────────────
async function benchServerMemory(server: ServerHandle): Promise<void> {
  line('## Server memory against the number of devices in one round (cnn-small updates, no training)');
  line('devices | server RSS idle → max (MB) | updates/s | event loop max (ms)');
  const rows: unknown[] = [];
  for (const n of [10, 50, 100, 200]) {
    const r = await measure([server], 'cnn-small', n);
    const s = r.nodes[0]!;
    rows.push({ ...r, ...s });
    line(`${n} | ${fmt(s.rssIdleMB, 0)} → ${fmt(s.rssMaxMB, 0)} | ${fmt(r.updatesPerS, 0)} | ${fmt(s.loopMaxMs, 0)}`);
  }
  results.serverMemory = rows;
  line();
}

// ─── 6. the Node simulation ──────────────────────────────────────────────────
async function benchSimulation(): Promise<void> {
  line('## Node simulation (simulate:node): training samples/s per model, 20 clients, C = 0.5, E = 1, B = 10, 3 rounds');
  line('model | examples per client | workers | round (s, median of rounds 2–3) | training samples/s');
  const mnist = loadMnist();
  const rows: { model: ModelName; workers: number; trainSamplesPerS: number; roundMs: number }[] = [];
  const runs: [ModelName, number, number][] = [['mlp', 600, 2], ['cnn-small', 300, 1], ['cnn-small', 300, 2], ['cnn', 100, 2]];
  for (const [model, examples, workers] of runs) {
    const r = await runSimulation({ clients: 20, fraction: 0.5, rounds: 3, epochs: 1, batch: 10, lr: 0.1, partition: 'iid', alpha: 0.5, model, seed: 1, examples, workers }, mnist);
    // Rounds after the first (which pays for the workers' warm-up); each model is evaluated on the
    // 10,000 test images in the same workers, alongside the next round or, for the last, after it.
    const steady = r.rounds.slice(1);
    const roundMs = median(steady.map((x) => x.durationMs));
    rows.push({ model, workers, trainSamplesPerS: (10 * examples) / (roundMs / 1000), roundMs });
    line(`${model} | ${examples} | ${workers} | ${fmt(roundMs / 1000, 2)} | ${fmt((10 * examples) / (roundMs / 1000), 0)}`);
  }
  const small = rows.filter((x) => x.model === 'cnn-small');
  const speedup = (small[1]?.trainSamplesPerS ?? NaN) / (small[0]?.trainSamplesPerS ?? NaN);
  line(`cnn-small, speed-up with 2 workers: ${fmt(speedup, 2)}x`);
  results.simulation = { rows, speedup };
  line();
}

// ─── 7. wasm threads ─────────────────────────────────────────────────────────
async function benchWasmThreads(): Promise<void> {
  line('## wasm threads: the page cross-origin isolated (COOP/COEP, CROSS_ORIGIN_ISOLATION=1) or not');
  line('page | crossOriginIsolated | wasm threads | cnn-small samples/s | cnn samples/s');
  const rows: unknown[] = [];
  // The isolated page needs its own (unminified) build: see vite.config.ts.
  execSync('npx vite build --outDir ../dist/web-isolated --emptyOutDir', { env: { ...process.env, CROSS_ORIGIN_ISOLATION: '1' }, stdio: 'ignore' });
  for (const isolated of [false, true]) {
    const server = await startServer(isolated ? { CROSS_ORIGIN_ISOLATION: '1', WEB_ROOT: 'dist/web-isolated' } : {});
    const browser = await launchBrowser();
    try {
      const page = await (await browser.newContext()).newPage();
      await page.goto(`${server.url}/?autojoin=1&backend=wasm&clients=10&client=0&examples=200`);
      // A hung backend (seen with threads) must not hang the bench: each step has a deadline.
      const ready = await page.waitForFunction(() => window.__fl?.ready === true, undefined, { timeout: 120_000 }).then(() => true, () => false);
      const facts = await page.evaluate(() => ({ isolated: globalThis.crossOriginIsolated, threads: window.__fl.backend?.wasmThreads ?? null }));
      const speed = async (model: ModelName, examples: number) => {
        if (!ready) return Number.NaN;
        const runs: number[] = [];
        for (let i = 0; i < repeats; i++) runs.push((await page.evaluate(([m, e]) => window.__fl.benchTraining('wasm', m as ModelName, e as number), [model, examples] as const)).rawSamplesPerS);
        return median(runs);
      };
      const small = await speed('cnn-small', 600);
      const cnn = await speed('cnn', 200);
      rows.push({ isolated, ready, crossOriginIsolated: facts.isolated, threads: facts.threads, cnnSmall: small, cnn });
      line(`${isolated ? 'isolated' : 'plain'}${ready ? '' : ' (did not get ready in 120 s)'} | ${facts.isolated} | ${facts.threads ?? '—'} | ${fmt(small)} | ${fmt(cnn)}`);
    } finally {
      await browser.close();
      await server.stop();
    }
  }
  results.wasmThreads = rows;
  line();
}

// ─── 9. work off the event loop (Node) ───────────────────────────────────────
/** Runs `job` `repeats` times with a 10 ms timer probing the event loop: wall time, the longest wait, and the p99 of the waits. */
async function withLoopProbe(job: () => Promise<unknown>): Promise<{ wallMs: number; longestWaitMs: number; tickP99Ms: number }> {
  const walls: number[] = [];
  const longest: number[] = [];
  const ticks: number[] = [];
  for (let r = 0; r < Number(args.repeats); r++) {
    let last = performance.now();
    let worst = 0;
    const probe = setInterval(() => {
      const now = performance.now();
      ticks.push(now - last);
      worst = Math.max(worst, now - last);
      last = now;
    }, 10);
    const t0 = performance.now();
    await job();
    walls.push(performance.now() - t0);
    await new Promise((r) => setTimeout(r, 15)); // a job that held the loop shows in the tick that was due meanwhile
    clearInterval(probe);
    longest.push(worst);
  }
  ticks.sort((x, y) => x - y);
  return { wallMs: median(walls), longestWaitMs: median(longest), tickP99Ms: ticks[Math.min(ticks.length - 1, Math.floor(ticks.length * 0.99))] ?? Number.NaN };
}

async function benchOffLoop(): Promise<void> {
  line('## Work off the event loop (Node): in-process vs the server\'s threads');
  line('job | where | wall ms (median) | event loop: longest wait ms (median) | p99 of 10 ms ticks');
  const tf = await import('@tensorflow/tfjs');
  await import('@tensorflow/tfjs-backend-wasm');
  await tf.setBackend('wasm');
  await tf.ready();
  const { test } = loadMnist();
  const evaluator = await startWorkerEvaluator(test);
  const work = await startWorkPool(1);
  const rows: Record<string, unknown>[] = [];
  const row = (job: string, where: string, r: { wallMs: number; longestWaitMs: number; tickP99Ms: number }) => {
    rows.push({ job, where, ...r });
    line(`${job} | ${where} | ${fmt(r.wallMs, 0)} | ${fmt(r.longestWaitMs, 0)} | ${fmt(r.tickP99Ms, 0)}`);
  };
  try {
    for (const model of ['cnn-small', 'cnn'] as const) {
      for (const [where, e] of [['in-process', createEvaluator(test)], ['worker thread', evaluator]] as [string, Evaluator][]) {
        const weights = initialWeights(model, 1);
        await e.evaluate(model, weights); // warm-up: tensors, kernels
        row(`evaluate ${model} on 10,000 images`, where, await withLoopProbe(() => e.evaluate(model, weights)));
      }
    }
    // a download delta of the paper's CNN between two versions
    const base = initialWeights('cnn', 1).values;
    const target = base.map((x, i) => x + ((i % 13) - 6) * 1e-4);
    row('model delta, paper CNN', 'in-process', await withLoopProbe(() => inlineDeltaEncoder(base, target, 1, 2)));
    row('model delta, paper CNN', 'work thread', await withLoopProbe(() => work.encodeDelta(base.slice(), target, 1, 2)));
  } finally {
    await Promise.all([evaluator.close(), work.close()]);
  }
  results.offLoop = rows;
  line();
}

// ─── 10. the non-IID strategies' cost on the device ─────────────────────────
/** TF.js on wasm with the project's training kernels, as the devices and the simulation train. */
async function wasmTf(): Promise<typeof import('@tensorflow/tfjs')> {
  const tf = await import('@tensorflow/tfjs');
  await import('@tensorflow/tfjs-backend-wasm');
  registerWasmTrainingKernels();
  await tf.setBackend('wasm');
  await tf.ready();
  return tf;
}

/**
 * What FedProx's proximal term and personalization (the two mixes, scored on held-out data) add to
 * a device's round: local training of the 2NN and cnn-small on 600 examples (E = 1, B = 10) with
 * μ = 0 and μ = 0.01, and the mixes on 150 held-out examples — in-process, on wasm, medians. The
 * server optimizers and q-FFL cost the device nothing: they are server-side.
 */
async function benchStrategies(): Promise<void> {
  line('## The strategies\' cost on the device (Node, wasm, median of repeats)');
  line('model | local training, FedAvg (ms) | with FedProx μ = 0.01 (ms) | ratio | with SCAFFOLD\'s correction (ms) | ratio | personalization: two mixes on 150 held-out (ms)');
  const tf = await wasmTf();
  const { train } = loadMnist();
  const data = toTensors({ pixels: train.images.slice(0, 600 * 784), labels: train.labels.slice(0, 600) });
  const heldOut = toTensors({ pixels: train.images.slice(600 * 784, 750 * 784), labels: train.labels.slice(600, 750) });
  const rows: unknown[] = [];
  try {
    for (const name of ['mlp', 'cnn-small'] as const) {
      const model = buildModel(name);
      const global = initialWeights(name, 1);
      const correction = global.values.map((_, i) => 1e-3 * Math.cos(i));
      const time = async (mu: number, scaffold = false) => {
        setFlatWeights(model, global);
        const t0 = performance.now();
        await trainLocal(model, data, { localEpochs: 1, batchSize: 10, learningRate: 0.1, seed: 1, ...(mu ? { mu } : {}) }, {}, scaffold ? correction : undefined);
        return performance.now() - t0;
      };
      await time(0); // warm-up: kernels
      await time(0, true);
      const plain: number[] = [];
      const prox: number[] = [];
      const corrected: number[] = [];
      for (let i = 0; i < repeats; i++) {
        plain.push(await time(0));
        prox.push(await time(0.01));
        corrected.push(await time(0, true));
      }
      const personal = { specs: global.specs, values: global.values.map((w, i) => w + 1e-3 * Math.sin(i)) };
      const mixes: number[] = [];
      for (let i = 0; i < repeats; i++) {
        const t0 = performance.now();
        await mixedAccuracies(model, global, personal, heldOut, [0.7, 0.5]);
        mixes.push(performance.now() - t0);
      }
      const r = { model: name, plainMs: median(plain), proxMs: median(prox), scaffoldMs: median(corrected), mixMs: median(mixes) };
      rows.push(r);
      line(`${name} | ${fmt(r.plainMs, 0)} | ${fmt(r.proxMs, 0)} | ${fmt(r.proxMs / r.plainMs, 2)} | ${fmt(r.scaffoldMs, 0)} | ${fmt(r.scaffoldMs / r.plainMs, 2)} | ${fmt(r.mixMs, 0)}`);
      model.dispose();
    }
  } finally {
    disposeData(data);
    disposeData(heldOut);
  }
  results.strategies = rows;
  line();
}

/**
 * 11. Where a training step's time goes on wasm (Node): tf.profile of 10 steps (batch 10) per model,
 * after a warm-up, kernel time per step by kernel (a kernel's time includes kernels it runs
 * inside, e.g. the Conv2D inside Conv2DBackpropFilter), against the step's wall time.
 */
async function benchKernels(): Promise<void> {
  line('## A training step\'s kernels on wasm (Node, tf.profile of 10 steps, batch 10): ms per step');
  const tf = await wasmTf();
  const { train } = loadMnist();
  const rows: unknown[] = [];
  for (const name of ['mlp', 'cnn-small', 'cnn'] as ModelName[]) {
    const data = toTensors({ pixels: train.images.subarray(0, 300 * 784), labels: train.labels.subarray(0, 300) });
    const model = buildModel(name);
    const plan = { localEpochs: 1, batchSize: 10, learningRate: 0.05, seed: 1 };
    try {
      await trainLocal(model, data, { ...plan, localEpochs: 4 }); // warm-up, 120 steps: the JIT and XNNPACK's first operators (the 2NN's first ~100 steps run at half speed)
      const t0 = performance.now();
      await trainLocal(model, data, plan);
      const wallMs = (performance.now() - t0) / 30;
      const profile = await tf.profile(() => trainLocal(model, { ...data, count: 100 }, plan).then(() => undefined));
      const byKernel = new Map<string, { ms: number; calls: number }>();
      for (const k of profile.kernels) {
        const e = byKernel.get(k.name) ?? { ms: 0, calls: 0 };
        e.ms += Number(k.kernelTimeMs) || 0;
        e.calls++;
        byKernel.set(k.name, e);
      }
      const top = [...byKernel.entries()].sort((a, b) => b[1].ms - a[1].ms).map(([kernel, e]) => ({ kernel, msPerStep: e.ms / 10, callsPerStep: e.calls / 10 }));
      rows.push({ model: name, wallMsPerStep: wallMs, kernelCallsPerStep: profile.kernels.length / 10, kernels: top });
      line(`${name}: ${fmt(wallMs, 2)} ms a step (wall, 30 steps), ${fmt(profile.kernels.length / 10, 0)} kernel calls a step; ${top.slice(0, 8).map((k) => `${k.kernel} ${fmt(k.msPerStep, 2)} (${fmt(k.callsPerStep, 0)}×)`).join(' · ')}`);
    } finally {
      model.dispose();
      disposeData(data);
    }
  }
  results.kernels = rows;
  line();
}

if (!skip.has('aggregation')) benchAggregation();
if (!skip.has('bomb')) benchBomb();
if (!skip.has('secagg')) await benchSecAgg();
if (!skip.has('secagg-close')) await benchSecAggClose();
if (!skip.has('strategies')) await benchStrategies();
if (!skip.has('evaluation')) await benchOffLoop();
if (!skip.has('kernels')) await benchKernels();
if (!skip.has('threads')) await benchWasmThreads();
if (!skip.has('simulation')) await benchSimulation();
const server = await startServer();
try {
  if (!skip.has('training')) await benchTraining(server);
  if (!skip.has('main-thread')) await benchMainThread(server);
  if (!skip.has('rounds')) await benchRounds(server, 'Federation: 4 tabs, cnn-small, 600 examples each, E=1, B=10, 3 rounds', 4, { model: 'cnn-small', rounds: 3, localEpochs: 1, batchSize: 10, learningRate: 0.1 }, 600);
  if (!skip.has('rounds')) await benchRounds(server, 'The same with compressed updates (rand+q2+deflate, 25 %) and delta downloads', 4, { model: 'cnn-small', rounds: 3, localEpochs: 1, batchSize: 10, learningRate: 0.1, updateCodec: 'rand+q2+deflate', randFraction: 0.25, downlink: 'delta' }, 600);
  if (!skip.has('memory')) await benchServerMemory(server);
  if (!skip.has('secagg-tabs')) {
    const five = { model: 'cnn-small', rounds: 3, localEpochs: 1, batchSize: 10, learningRate: 0.1, overSelect: 1, clipNorm: 5, seed: 1 };
    await benchRounds(server, 'Federation: 5 tabs, cnn-small, 600 examples each, E=1, B=10, 3 rounds, clipNorm 5 — plain', 5, five, 600);
    await benchRounds(server, 'The same with secure aggregation (k = 4, t = 3)', 5, { ...five, secureAggregation: true }, 600);
  }
  if (!skip.has('cnn')) await benchRounds(server, 'Federation: 2 tabs, the paper CNN (6.65 MB updates), 300 examples each, E=1, B=10, 1 round', 2, { model: 'cnn', rounds: 1, localEpochs: 1, batchSize: 10, learningRate: 0.05 }, 300);
} finally {
  await server.stop();
}
mkdirSync('bench-results', { recursive: true });
writeFileSync('bench-results/bench.json', JSON.stringify(results, null, 2));
line('written: bench-results/bench.json');
