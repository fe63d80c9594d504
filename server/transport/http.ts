/** The HTTP API (JSON), the TF.js model files and the built pages. */
import cors from 'cors';
import express, { type ErrorRequestHandler, type Express } from 'express';
import helmet from 'helmet';
import { rateLimit } from 'express-rate-limit';
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { modelTopology, type ModelName } from '../../shared/models.ts';
import { canaryRequestSchema, describeIssues, evaluationRequestSchema, publicConfig, validateRunConfig } from '../../shared/schemas.ts';
import { decodeWeights } from '../../shared/weights.ts';
import type { RoundRecord, RunSummary } from '../../shared/api.ts';
import { zipSync } from 'fflate';
import { provisioningRouter } from '../data/provision.ts';
import type { MnistSplit } from '../data/mnist.ts';
import { ConflictError, RunConfigError, type Federation } from '../federation.ts';
import type { ClusterHooks } from '../app.ts';
import type { Store } from '../store/store.ts';
import { modelCard, patchModelMeta } from '../registry.ts';
import { EvaluationConflict, EvaluationRequestError, liveVersion } from '../evaluations.ts';
import { isAdmin, requireAdmin } from './auth.ts';
import { listPresets } from '../presets.ts';

export interface HttpDeps {
  federation: Federation;
  store: Store;
  train: MnistSplit;
  adminToken: string;
  webRoot: string;
  /** cross-site origins allowed to call the API (CORS); empty = same-origin only */
  allowedOrigins: readonly string[];
  /** served over TLS: then browsers are told to keep to HTTPS (HSTS) */
  tls: boolean;
  /** API requests a minute from one address */
  apiRequestsPerMinute?: number;
  /** send COOP/COEP so the pages are cross-origin isolated (wasm threads) */
  crossOriginIsolation?: boolean;
  /** a node of a cluster: what only the coordinating node can answer is redirected to it */
  cluster?: Pick<ClusterHooks, 'coordinatorUrl' | 'describe'>;
  /** where saved presets (npm run tune's) are read from; none when unset */
  presetsDir?: string;
}

const topologies = new Map<ModelName, object>();
const topologyOf = (name: ModelName) => {
  let t = topologies.get(name);
  if (!t) topologies.set(name, (t = modelTopology(name)));
  return t;
};

/** Event-loop delay over the last full 2 s window (p50, p99, max in ms), from perf_hooks. */
function monitorEventLoop(): () => { p50Ms: number; p99Ms: number; maxMs: number } {
  const histogram = monitorEventLoopDelay({ resolution: 10 });
  histogram.enable();
  let last = { p50Ms: 0, p99Ms: 0, maxMs: 0 };
  setInterval(() => {
    last = { p50Ms: histogram.percentile(50) / 1e6, p99Ms: histogram.percentile(99) / 1e6, maxMs: histogram.max / 1e6 };
    histogram.reset();
  }, 2000).unref();
  return () => last;
}

/** CPU time this process has used (user + system, all threads), in ms: a load test reads it before and after a round. */
const cpuMs = () => {
  const c = process.cpuUsage();
  return (c.user + c.system) / 1000;
};

/** A round as anyone may see it: its counts and aggregates, without which device sent what or scored how (admin only). */
const publicRound = (r: RoundRecord): RoundRecord => ({ ...r, devices: [], ...(r.monitoring ? { monitoring: { ...r.monitoring, devices: [] } } : {}) });

export function createHttpApp({ federation, store, train, adminToken, webRoot, allowedOrigins, tls, apiRequestsPerMinute = 1200, crossOriginIsolation = false, cluster, presetsDir }: HttpDeps): Express {
  const app = express();
  app.disable('x-powered-by');
  app.use(
    helmet({
      contentSecurityPolicy: {
        directives: {
          // TF.js's wasm backend compiles WebAssembly; the pages set inline style attributes.
          // With isolation, the wasm backend's thread workers importScripts() its glue from a blob: URL.
          'script-src': ["'self'", "'wasm-unsafe-eval'", ...(crossOriginIsolation ? ['blob:'] : [])],
          'style-src': ["'self'", "'unsafe-inline'"],
          'img-src': ["'self'", 'data:', 'blob:'],
          'connect-src': ["'self'"],
          'worker-src': ["'self'", 'blob:'],
          'upgrade-insecure-requests': tls ? [] : null,
        },
      },
      strictTransportSecurity: tls ? { maxAge: 15552000 } : false,
      // With cross-origin isolation the pages get SharedArrayBuffer, and TF.js's wasm backend threads.
      crossOriginEmbedderPolicy: crossOriginIsolation ? { policy: 'require-corp' } : false,
    }),
  );
  app.use('/api', rateLimit({ windowMs: 60_000, limit: apiRequestsPerMinute, standardHeaders: 'draft-8', legacyHeaders: false, message: { error: `too many requests: at most ${apiRequestsPerMinute} a minute from one address` } }));
  app.use('/api', cors({ origin: (origin, callback) => callback(null, origin !== undefined && allowedOrigins.includes(origin)), allowedHeaders: ['authorization', 'content-type'] }));
  app.use(express.json({ limit: '64kb' }));
  const admin = requireAdmin(adminToken);

  app.get('/api/health', (_req, res) => {
    res.json({ ok: true });
  });
  const loop = monitorEventLoop();
  /**
   * In a cluster, runs are started, stopped and watched on the coordinating node: another node
   * passes those requests on to it and its answer back (a redirect would lose the admin token,
   * which browsers drop across origins); `?node=self` asks this node.
   */
  const coordinated: express.RequestHandler = async (req, res, next) => {
    if (!cluster || req.query.node === 'self') return next();
    const url = cluster.coordinatorUrl();
    if (url === undefined) return next(); // this node coordinates
    if (url === '') {
      res.status(503).json({ error: 'no server node coordinates the cluster right now (another takes over within the lease time); try again' });
      return;
    }
    try {
      const headers: Record<string, string> = { 'content-type': 'application/json' };
      if (req.headers.authorization) headers.authorization = req.headers.authorization;
      const r = await fetch(new URL(req.originalUrl, url), { method: req.method, headers, ...(req.method === 'POST' ? { body: JSON.stringify(req.body ?? {}) } : {}), signal: AbortSignal.timeout(15_000) });
      res.status(r.status).type(r.headers.get('content-type') ?? 'application/json').send(Buffer.from(await r.arrayBuffer()));
    } catch (err) {
      res.status(502).json({ error: `the coordinating node (${url}) did not answer: ${err instanceof Error ? err.message : String(err)}` });
    }
  };
  app.get('/api/cluster', async (_req, res) => {
    res.json(cluster ? await cluster.describe() : { nodes: 1, cluster: false });
  });
  /** public: phase, run, round, model version and the number of devices — no device ids, histograms or accuracies */
  app.get('/api/status', coordinated, (_req, res) => {
    const mem = process.memoryUsage();
    res.json({ ...federation.status(), server: { rssBytes: mem.rss, heapUsedBytes: mem.heapUsed, arrayBuffersBytes: mem.arrayBuffers, uptimeS: Math.round(process.uptime()), cpuMs: cpuMs(), eventLoopDelay: loop() } });
  });
  /** every known device (disconnected ones too, flagged), with what it declared and reported */
  app.get('/api/devices', admin, coordinated, (_req, res) => {
    res.json(federation.listDevices(true));
  });

  /** saved presets (npm run tune writes them) for the launch form, and the files skipped with why */
  app.get('/api/presets', (_req, res) => {
    res.json(presetsDir ? listPresets(presetsDir) : { presets: [], skipped: [] });
  });

  /** lets the admin page check a token without side effects */
  app.get('/api/admin/session', admin, (_req, res) => {
    res.json({ ok: true });
  });

  /** every run with what came of it: rounds completed, failed attempts, final accuracy and model, duration */
  app.get('/api/runs', async (_req, res) => {
    const outcomes = await store.runOutcomes();
    const now = Date.now();
    const runs: RunSummary[] = (await store.listRuns()).map((r) => ({ ...r, config: publicConfig(r.config), roundsCompleted: 0, failedAttempts: 0, finalTestAccuracy: null, finalModelVersion: null, ...outcomes.get(r.id), durationMs: (r.finishedAt ?? now) - r.createdAt }));
    res.json(runs);
  });
  app.post('/api/runs', admin, coordinated, async (req, res) => {
    const checked = validateRunConfig(req.body ?? {});
    if (!checked.ok) {
      res.status(400).json({ error: `run config: ${checked.message}`, issues: checked.issues });
      return;
    }
    try {
      const id = await federation.startRun(checked.config);
      res.status(201).json({ id, config: publicConfig(checked.config) });
    } catch (err) {
      if (err instanceof ConflictError) res.status(409).json({ error: err.message });
      else if (err instanceof RunConfigError) res.status(400).json({ error: `run config: ${err.message}` });
      else throw err;
    }
  });
  app.post('/api/runs/current/stop', admin, coordinated, (_req, res) => {
    const stopped = federation.stopRun();
    res.status(stopped ? 200 : 409).json(stopped ? { stopped: true } : { error: 'no run is active' });
  });
  const runId = (raw: string | undefined) => (raw && /^\d{1,9}$/.test(raw) ? Number(raw) : undefined);
  app.get('/api/runs/:id', async (req, res) => {
    const run = await store.getRun(runId(req.params.id) ?? -1);
    if (!run) res.status(404).json({ error: `run ${req.params.id} not found` });
    else res.json({ ...run, config: publicConfig(run.config) });
  });
  app.get('/api/runs/:id/rounds', async (req, res) => {
    const id = runId(req.params.id);
    if (id === undefined || !(await store.getRun(id))) {
      res.status(404).json({ error: `run ${req.params.id} not found` });
      return;
    }
    const rounds = await store.listRounds(id);
    res.json(isAdmin(req, adminToken) ? rounds : rounds.map(publicRound));
  });

  // ─── evaluation rounds and the canary (evaluations.ts) ───
  const evaluationError = (res: express.Response, err: unknown) => {
    if (err instanceof EvaluationConflict) res.status(409).json({ error: err.message });
    else if (err instanceof EvaluationRequestError) res.status(400).json({ error: err.message });
    else throw err;
  };
  app.get('/api/evaluations', async (_req, res) => {
    res.json(await store.listEvaluations());
  });
  app.post('/api/evaluations', admin, coordinated, async (req, res) => {
    const parsed = evaluationRequestSchema.safeParse(req.body ?? {});
    if (!parsed.success) {
      res.status(400).json({ error: `evaluation: ${describeIssues(parsed.error)}` });
      return;
    }
    try {
      res.status(201).json({ id: await federation.evaluations.start(parsed.data) });
    } catch (err) {
      evaluationError(res, err);
    }
  });
  app.get('/api/canary', coordinated, (_req, res) => {
    res.json(federation.evaluations.current());
  });
  app.post('/api/canary', admin, coordinated, async (req, res) => {
    const parsed = canaryRequestSchema.safeParse(req.body ?? {});
    if (!parsed.success) {
      res.status(400).json({ error: `canary: ${describeIssues(parsed.error)}` });
      return;
    }
    const { version, ...settings } = parsed.data;
    try {
      res.status(201).json({ evalId: await federation.evaluations.startCanary(version, settings) });
    } catch (err) {
      evaluationError(res, err);
    }
  });
  for (const [path, outcome] of [['/api/canary/promote', 'promoted'], ['/api/canary/rollback', 'rolled back']] as const) {
    app.post(path, admin, coordinated, (_req, res) => {
      try {
        res.json(federation.evaluations.decide(outcome));
      } catch (err) {
        evaluationError(res, err);
      }
    });
  }

  app.get('/api/models', async (_req, res) => {
    res.json(await store.listModels());
  });
  /** `latest` (and `live`) name the live version: the one a canary promoted or a completed run put live (evaluations.ts) */
  const modelVersion = async (raw: string | undefined) => (raw === 'latest' || raw === 'live' ? await liveVersion(store) : runId(raw));
  /** The TF.js model.json of a version; its weights file is named relative to it, so the two files work side by side offline. */
  const modelJson = async (version: number, weightsPath: string) => {
    const [model, weights] = await Promise.all([store.getModel(version), store.getModelWeights(version)]);
    if (!model || !weights) return undefined;
    const { specs } = decodeWeights(weights);
    return {
      format: 'layers-model',
      generatedBy: 'fedbrowser',
      convertedBy: null,
      modelTopology: topologyOf(model.model),
      weightsManifest: [{ paths: [weightsPath], weights: specs.map((s) => ({ name: s.name, shape: s.shape, dtype: 'float32' })) }],
      userDefinedMetadata: { modelCard: await modelCard(store, version, { model, weights }) },
    };
  };
  /** The registry's record of a version: lineage, training aggregates, metrics, the admin's metadata. */
  app.get('/api/models/:version', async (req, res) => {
    const version = await modelVersion(req.params.version);
    const card = version === undefined ? undefined : await modelCard(store, version);
    if (!card) res.status(404).json({ error: `model ${req.params.version} not found` });
    else res.json(card);
  });
  /** The admin edits a version's name, description, owner and labels (nothing that training uses). */
  app.patch('/api/models/:version', admin, async (req, res) => {
    const version = runId(String(req.params.version));
    if (version === undefined) {
      res.status(404).json({ error: `model ${req.params.version} not found` });
      return;
    }
    const r = await patchModelMeta(store, version, req.body);
    if (!r.ok) res.status(r.status).json({ error: r.error, ...(r.issues ? { issues: r.issues } : {}) });
    else res.json(await modelCard(store, version));
  });
  app.get('/api/models/:version/model.json', async (req, res) => {
    const version = await modelVersion(req.params.version);
    // "latest" names its weights by version, so a new model between the two requests cannot mix them.
    const json = version === undefined ? undefined : await modelJson(version, req.params.version === 'latest' ? `weights.bin?v=${version}` : 'weights.bin');
    if (!json) res.status(404).json({ error: `model ${req.params.version} not found` });
    else res.json(json);
  });
  app.get('/api/models/:version/weights.bin', async (req, res) => {
    const version = req.params.version === 'latest' && typeof req.query.v === 'string' ? runId(req.query.v) : await modelVersion(req.params.version);
    const weights = version === undefined ? undefined : await store.getModelWeights(version);
    if (!weights) {
      res.status(404).json({ error: `model ${req.params.version} not found` });
      return;
    }
    const { values } = decodeWeights(weights);
    res.type('application/octet-stream').send(Buffer.from(values.buffer, values.byteOffset, values.byteLength));
  });
  app.get('/api/models/:version/card.json', async (req, res) => {
    const version = await modelVersion(req.params.version);
    const card = version === undefined ? undefined : await modelCard(store, version);
    if (!card) res.status(404).json({ error: `model ${req.params.version} not found` });
    else res.json(card);
  });
  /** One archive for offline use: model.json, weights.bin and model-card.json (tf.loadLayersModel(tf.io.browserFiles([json, bin]))). */
  app.get('/api/models/:version/model.zip', async (req, res) => {
    const version = await modelVersion(req.params.version);
    const json = version === undefined ? undefined : await modelJson(version, 'weights.bin');
    const payload = version === undefined ? undefined : await store.getModelWeights(version);
    if (!json || !payload || version === undefined) {
      res.status(404).json({ error: `model ${req.params.version} not found` });
      return;
    }
    const { values } = decodeWeights(payload);
    const text = (o: unknown) => new TextEncoder().encode(JSON.stringify(o, null, 1));
    const zip = zipSync({ 'model.json': text(json), 'weights.bin': [new Uint8Array(values.buffer, values.byteOffset, values.byteLength), { level: 0 }], 'model-card.json': text(json.userDefinedMetadata.modelCard) });
    res.type('application/zip').set('Content-Disposition', `attachment; filename="fedbrowser-model-v${version}.zip"`).send(Buffer.from(zip.buffer, zip.byteOffset, zip.byteLength));
  });

  app.use(provisioningRouter(train));

  // The wasm backend's binaries, served from the package so nothing is fetched from elsewhere.
  const require = createRequire(import.meta.url);
  const wasmDir = path.join(path.dirname(require.resolve('@tensorflow/tfjs-backend-wasm/package.json')), 'dist');
  app.use('/vendor/tfjs-wasm', express.static(wasmDir, { index: false }));

  if (existsSync(webRoot)) {
    app.use(express.static(webRoot, { index: 'index.html' }));
    app.get('/admin', (_req, res) => res.sendFile(path.join(webRoot, 'admin', 'index.html')));
  }
  app.use('/api', (_req, res) => {
    res.status(404).json({ error: 'no such API route' });
  });

  const onError: ErrorRequestHandler = (err: { status?: number; type?: string; message?: string }, _req, res, _next) => {
    const status = typeof err.status === 'number' && err.status >= 400 && err.status < 500 ? err.status : 500;
    const message = err.type === 'entity.parse.failed' ? 'request body is not valid JSON' : err.type === 'entity.too.large' ? 'request body is too large' : status < 500 ? (err.message ?? 'bad request') : 'internal error';
    res.status(status).json({ error: message });
  };
  app.use(onError);
  return app;
}
