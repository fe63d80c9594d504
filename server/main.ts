/** Entry point: read the environment, build the app, listen, shut down gracefully. */
import * as tf from '@tensorflow/tfjs';
import '@tensorflow/tfjs-backend-wasm';
import { randomBytes } from 'node:crypto';
import { mkdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { registerWasmTrainingKernels } from '../shared/wasm-kernels.ts';
import { createApp } from './app.ts';
import { loadMnist } from './data/mnist.ts';
import { createLogger } from './log.ts';
import { startWorkPool } from './work-pool.ts';
import { startWorkerEvaluator } from './ml/evaluator.ts';
import { openSqliteStore } from './store/sqlite.ts';
import { DEFAULT_HEARTBEAT_MS, DEFAULT_LEASE_MS, startClusterNode } from './cluster/start.ts';
import { hostname } from 'node:os';
import { openPostgresStore, redact } from './store/postgres.ts';

const log = createLogger('fl');
const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

function envInt(name: string, fallback: number): number {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return fallback;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < 0) throw new Error(`${name} must be a non-negative integer, got "${raw}"`);
  return n;
}

async function main(): Promise<void> {
  const port = envInt('PORT', 3000);
  const host = process.env.HOST ?? '0.0.0.0';
  const dataDir = path.resolve(process.env.DATA_DIR ?? './data');
  let adminToken = process.env.ADMIN_TOKEN ?? '';
  if (!adminToken) {
    adminToken = randomBytes(18).toString('base64url');
    // Printed once so the operator can sign in; never logged again.
    process.stdout.write(`\nADMIN_TOKEN was not set; generated one for this run:\n  ${adminToken}\n\n`);
  }

  // ROLE=all (default): one process, SQLite embedded. ROLE=node: one node of a cluster sharing Redis (REDIS_URL) and PostgreSQL (DATABASE_URL).
  const role = process.env.ROLE ?? 'all';
  if (role !== 'all' && role !== 'node') throw new Error(`ROLE must be "all" or "node", got "${role}"`);
  const redisUrl = process.env.REDIS_URL;
  if (role === 'node' && (!redisUrl || !process.env.DATABASE_URL)) throw new Error('ROLE=node needs REDIS_URL and DATABASE_URL (the nodes of a cluster share both)');
  if (role === 'all' && redisUrl) throw new Error('REDIS_URL is set but ROLE is "all": set ROLE=node to run this process as a node of a cluster');

  registerWasmTrainingKernels();
  await tf.setBackend('wasm');
  await tf.ready();
  log.info('tfjs ready', { backend: tf.getBackend() });

  // one process keeps its store in a SQLite file; nodes of a cluster share a PostgreSQL server
  const databaseUrl = process.env.DATABASE_URL;
  mkdirSync(dataDir, { recursive: true });
  const store = databaseUrl ? await openPostgresStore(databaseUrl) : openSqliteStore(path.join(dataDir, 'fl.sqlite'));
  const { train, test } = loadMnist();
  const certFile = process.env.TLS_CERT;
  const keyFile = process.env.TLS_KEY;
  if (Boolean(certFile) !== Boolean(keyFile)) throw new Error('TLS_CERT and TLS_KEY must be set together');
  const tls = certFile && keyFile ? { cert: readFileSync(certFile), key: readFileSync(keyFile) } : undefined;
  const allowedOrigins = (process.env.ALLOWED_ORIGINS ?? '').split(',').map((o) => o.trim()).filter(Boolean);

  // the test set is evaluated in a worker thread: the event loop keeps serving devices meanwhile
  const evaluator = await startWorkerEvaluator(test);
  // and updates are decoded, checked, clipped and summed, and model deltas encoded, in threads of their own (VALIDATE_THREADS, default 1; 0: on the event loop)
  const workThreads = envInt('VALIDATE_THREADS', 1);
  const work = workThreads > 0 ? await startWorkPool(workThreads) : undefined;
  const deps = {
    ...(tls ? { tls } : {}),
    apiRequestsPerMinute: envInt('API_RATE_LIMIT', 1200) || 1200,
    crossOriginIsolation: envInt('CROSS_ORIGIN_ISOLATION', 0) === 1,
    allowedOrigins,
    store,
    evaluator,
    ...(work ? { validate: work.validate, encodeDelta: work.encodeDelta, quantizeStep: work.quantizeStep, sums: work.sums } : {}),
    train,
    logger: log,
    adminToken,
    webRoot: path.resolve(process.env.WEB_ROOT ?? path.join(root, 'dist', 'web')),
    presetsDir: path.resolve(process.env.PRESETS_DIR ?? path.join(root, 'presets')),
  };
  const closeAll = () => Promise.all([evaluator.close(), work?.close()]);

  if (role === 'node' && redisUrl) {
    const node = await startClusterNode(deps, {
      redisUrl,
      nodeId: process.env.NODE_ID ?? `${hostname()}-${process.pid}`,
      host,
      port,
      ...(process.env.PUBLIC_URL ? { publicUrl: process.env.PUBLIC_URL } : {}),
      ...(process.env.CLUSTER_PREFIX ? { prefix: process.env.CLUSTER_PREFIX } : {}),
      leaseMs: envInt('LEASE_MS', DEFAULT_LEASE_MS),
      heartbeatMs: envInt('HEARTBEAT_MS', DEFAULT_HEARTBEAT_MS),
      // a node that lost the lease while coordinating may hold a stale round: it stops, and its supervisor starts it again as a follower
      onLeaseLost: (reason) => {
        log.error('exiting: the leader lease was lost', { reason });
        process.exit(3);
      },
    });
    log.info('listening', { url: node.url, role, store: redact(process.env.DATABASE_URL ?? '') });
    onSignals(() => node.close().then(closeAll));
    return;
  }

  const app = createApp(deps);
  await app.federation.open();
  const resumed = await app.federation.resumeInterruptedRun();
  if (resumed !== undefined) log.info('resumed an interrupted run', { runId: resumed });

  app.http.listen(port, host, () => {
    const address = app.http.address();
    const actual = typeof address === 'object' && address ? address.port : port;
    log.info('listening', { url: `${tls ? 'https' : 'http'}://${host === '0.0.0.0' ? 'localhost' : host}:${actual}/`, admin: '/admin', store: databaseUrl ? redact(databaseUrl) : dataDir });
  });

  onSignals(() => app.close().then(closeAll));
}

/** SIGINT or SIGTERM: close (the run stays running in the store, for the next start to resume), then exit. */
function onSignals(close: () => Promise<unknown>): void {
  let closing = false;
  const shutdown = (signal: string) => {
    if (closing) return;
    closing = true;
    log.info('shutting down', { signal });
    close().then(
      () => process.exit(0),
      (err: unknown) => {
        log.error('shutdown failed', { error: String(err) });
        process.exit(1);
      },
    );
    setTimeout(() => process.exit(1), 5000).unref();
  };
  process.on('SIGINT', () => shutdown('SIGINT'));
  process.on('SIGTERM', () => shutdown('SIGTERM'));
}

main().catch((err: unknown) => {
  log.error('failed to start', { error: err instanceof Error ? err.message : String(err) });
  process.exit(1);
});
