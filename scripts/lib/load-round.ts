/**
 * Socket.io-client devices in this process against a real server process: they join, get selected
 * and answer with real-size updates (no training, so the server is what is measured). Used by
 * `npm run load` and by `npm run bench` (server memory against the devices in a round).
 */
import { spawn } from 'node:child_process';
import { io, type Socket } from 'socket.io-client';
import { createIdentity } from '../../shared/identity.ts';
import { initialWeights, type ModelName } from '../../shared/models.ts';
import type { ClientToServerEvents, ServerToClientEvents } from '../../shared/protocol.ts';
import { encodeWeights } from '../../shared/weights.ts';
import { joinFederation } from '../../web-client/fl/join.ts';
import { api, type ServerHandle } from './harness.ts';
import type { RoundRecord } from '../../shared/api.ts';

type Device = Socket<ServerToClientEvents, ClientToServerEvents>;

interface Status {
  phase: string;
  server: { rssBytes: number; cpuMs: number; eventLoopDelay: { p50Ms: number; p99Ms: number; maxMs: number } };
}

/** Connects `n` devices, spread in turn over the servers (the nodes of a cluster, or one server). */
export async function connectDevices(servers: readonly ServerHandle[], n: number): Promise<Device[]> {
  const devices: Device[] = [];
  for (let i = 0; i < n; i++) {
    const s: Device = io(servers[i % servers.length]!.url, { transports: ['websocket'], forceNew: true, reconnection: false });
    devices.push(s);
    await new Promise<void>((resolve, reject) => {
      s.once('connect', () => resolve());
      s.once('connect_error', reject);
    });
    const r = await joinFederation(s, await createIdentity(), { backend: 'cpu', backendReason: 'load test', examples: 600, heldOut: 100, labelHistogram: new Array(10).fill(60) });
    if (!r.ok) throw new Error(r.error.message);
  }
  return devices;
}

export interface NodeLoad {
  rssIdleMB: number;
  rssMaxMB: number;
  loopP99MaxMs: number;
  loopMaxMs: number;
  /** CPU time the node used during the round (all its threads), ms */
  cpuMs: number;
  /** devices connected to it */
  devices: number;
}

export interface RoundLoad {
  model: ModelName;
  devices: number;
  started: number;
  accepted: number;
  rejected: number;
  updatesPerS: number;
  mbPerS: number;
  payloadMB: number;
  /** the round's aggregation phase on the coordinating node (closed → new model stored): the coordinator's cost per round */
  aggregationMs: number;
  /** per server, in the order given */
  nodes: NodeLoad[];
}

/**
 * One round with K = all `n` devices, spread over `servers` (launched through the first), each
 * answering with the same real-size update at once. Samples every server's own status
 * (`?node=self`) every 100 ms.
 */
export async function measure(servers: readonly ServerHandle[], model: ModelName, n: number): Promise<RoundLoad> {
  const self = async (s: ServerHandle) => (await api<Status>(s, '/api/status?node=self')).body.server;
  const idle = await Promise.all(servers.map(self));
  const devices = await connectDevices(servers, n);
  const base = initialWeights(model, 1);
  const payload = encodeWeights({ specs: base.specs, values: base.values.map((_, i) => ((i % 7) - 3) * 1e-4) });
  const metrics = { accuracyBefore: 0.5, lossBefore: 1, accuracyAfter: 0.6, lossAfter: 0.9, downloadMs: 0, evaluateMs: 0, trainMs: 0 };
  let started = 0;
  let firstStart = 0;
  let lastAck = 0;
  let acked = 0;
  let rejected = 0;
  const done = new Promise<void>((resolve) => {
    for (const s of devices) {
      s.once('round:start', (msg) => {
        started++;
        firstStart ||= performance.now();
        s.timeout(300_000)
          .emitWithAck('update:submit', { runId: msg.runId, round: msg.round, attempt: msg.attempt, numExamples: 600, delta: payload, metrics })
          .then((r) => {
            if (r.ok) acked++;
            else rejected++;
            lastAck = performance.now();
            if (acked + rejected === n) resolve();
          }, () => undefined);
      });
    }
  });
  const samples = servers.map(() => ({ rss: [] as number[], p99: [] as number[], max: [] as number[] }));
  let sampling = true;
  const sampler = (async () => {
    while (sampling) {
      const now = await Promise.all(servers.map(self));
      now.forEach((s, i) => {
        samples[i]!.rss.push(s.rssBytes);
        samples[i]!.p99.push(s.eventLoopDelay.p99Ms);
        samples[i]!.max.push(s.eventLoopDelay.maxMs);
      });
      await new Promise((r) => setTimeout(r, 100));
    }
  })();
  const launcher = servers[0]!;
  const created = await api<{ id: number; error?: string }>(launcher, '/api/runs', { method: 'POST', body: { model, rounds: 1, clientsPerRound: n, minUpdates: n, overSelect: 1, roundTimeoutMs: 600_000 } });
  if (created.status !== 201) throw new Error(`launch failed: ${created.body.error}`);
  await done;
  // Wait for the run to finish (aggregate, store, evaluate) before the next measurement.
  for (;;) {
    const { body } = await api<{ status: string }>(launcher, `/api/runs/${created.body.id}`);
    if (body.status !== 'running') break;
    await new Promise((r) => setTimeout(r, 200));
  }
  await new Promise((r) => setTimeout(r, 2100)); // one more event-loop window
  sampling = false;
  await sampler;
  const after = await Promise.all(servers.map(self));
  const [round] = (await api<RoundRecord[]>(launcher, `/api/runs/${created.body.id}/rounds`)).body;
  for (const s of devices) s.disconnect();
  const seconds = (lastAck - firstStart) / 1000;
  return {
    model,
    devices: n,
    started,
    accepted: acked,
    rejected,
    updatesPerS: acked / seconds,
    mbPerS: (acked * payload.byteLength) / 1e6 / seconds,
    payloadMB: payload.byteLength / 1e6,
    aggregationMs: round?.phases.aggregationMs ?? Number.NaN,
    nodes: servers.map((_, i) => ({
      rssIdleMB: idle[i]!.rssBytes / 1e6,
      rssMaxMB: Math.max(...samples[i]!.rss) / 1e6,
      loopP99MaxMs: Math.max(...samples[i]!.p99),
      loopMaxMs: Math.max(...samples[i]!.max),
      cpuMs: after[i]!.cpuMs - idle[i]!.cpuMs,
      devices: Math.floor(n / servers.length) + (i < n % servers.length ? 1 : 0),
    })),
  };
}

/**
 * The same round's traffic through a bare socket.io server (echo-server.ts): it sends each of `n`
 * sockets a message the size of the model, and each answers with the update the load devices send,
 * acknowledged at once. Timed as `measure` times a round (first start to last ack): the MB/s the
 * socket itself allows on this machine, against which the federation's figure is read.
 */
export async function measureEcho(model: ModelName, n: number): Promise<{ devices: number; mbPerS: number; updatesPerS: number; loopP99Ms: number; loopMaxMs: number }> {
  const base = initialWeights(model, 1);
  const payload = encodeWeights({ specs: base.specs, values: base.values.map((_, i) => ((i % 7) - 3) * 1e-4) });
  const child = spawn(process.execPath, ['--import', 'tsx', new URL('./echo-server.ts', import.meta.url).pathname, String(payload.byteLength)], { stdio: ['ignore', 'pipe', 'inherit'] });
  try {
    const port = await new Promise<number>((resolve, reject) => {
      child.stdout.once('data', (d: Buffer) => resolve(Number(String(d).trim())));
      child.once('exit', (code) => reject(new Error(`echo server exited with code ${code}`)));
    });
    type Echo = Socket<{ 'round:start': (m: { weights: Uint8Array }) => void }, { start: () => void; stats: (ack: (r: { p99Ms: number; maxMs: number }) => void) => void; 'update:submit': ClientToServerEvents['update:submit'] }>;
    const sockets = await Promise.all(
      Array.from({ length: n }, async () => {
        const s: Echo = io(`http://127.0.0.1:${port}`, { transports: ['websocket'], forceNew: true, reconnection: false });
        await new Promise<void>((resolve, reject) => {
          s.once('connect', () => resolve());
          s.once('connect_error', reject);
        });
        return s;
      }),
    );
    const metrics = { accuracyBefore: 0.5, lossBefore: 1, accuracyAfter: 0.6, lossAfter: 0.9, downloadMs: 0, evaluateMs: 0, trainMs: 0 };
    let first = 0;
    const acks = sockets.map(
      (s) =>
        new Promise<void>((resolve, reject) => {
          s.once('round:start', () => {
            first ||= performance.now();
            s.timeout(300_000).emitWithAck('update:submit', { runId: 1, round: 1, attempt: 1, numExamples: 600, delta: payload, metrics }).then(() => resolve(), reject);
          });
        }),
    );
    sockets[0]!.emit('start');
    await Promise.all(acks);
    const seconds = (performance.now() - first) / 1000;
    const loop = await sockets[0]!.timeout(10_000).emitWithAck('stats');
    for (const s of sockets) s.disconnect();
    return { devices: n, mbPerS: (n * payload.byteLength) / 1e6 / seconds, updatesPerS: n / seconds, loopP99Ms: loop.p99Ms, loopMaxMs: loop.maxMs };
  } finally {
    child.kill('SIGTERM');
  }
}
