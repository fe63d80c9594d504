/**
 * Starts the real app on port 0 with an in-memory SQLite store; devices that prove an identity
 * and speak the protocol: raw sockets (for hostile input) and the browser's own device client
 * (web-client/fl/client.ts, here in Node on wasm) on slices of MNIST cut by the one slicing function.
 */
import * as tf from '@tensorflow/tfjs';
import '@tensorflow/tfjs-backend-wasm';
import type { AddressInfo } from 'node:net';
import { io } from 'socket.io-client';
import { createApp, type App } from '../../server/app.ts';
import type { UpdateValidator } from '../../server/federation.ts';
import type { DeltaEncoder } from '../../server/model-book.ts';
import type { ThreadSums } from '../../server/work-pool.ts';
import { loadMnist, type MnistSplit } from '../../server/data/mnist.ts';
import { createLogger } from '../../server/log.ts';
import { createEvaluator } from '../../server/ml/evaluator.ts';
import { openSqlite } from '../../server/store/sqlite.ts';
import { asyncStore, type Store, type SyncStore } from '../../server/store/store.ts';
import { gatherSamples } from '../../shared/dataset.ts';
import type { DeviceMemory } from '../../shared/device.ts';
import { createIdentity, type DeviceIdentity } from '../../shared/identity.ts';
import { deviceSlice, labelHistogram, partition } from '../../shared/partition.ts';
import type { RoundStart } from '../../shared/protocol.ts';
import type { UpdateSubmit } from '../../shared/schemas.ts';
import { disposeData, toTensors, type LocalData } from '../../shared/train.ts';
import { registerWasmTrainingKernels } from '../../shared/wasm-kernels.ts';
import { decodeWeights } from '../../shared/weights.ts';
import { DeviceClient, type BeforeSubmit } from '../../web-client/fl/client.ts';
import { joinFederation, type DeviceSocket, type HelloClaims } from '../../web-client/fl/join.ts';

export const ADMIN_TOKEN = 'test-admin-token';
export const adminHeaders = { authorization: `Bearer ${ADMIN_TOKEN}`, 'content-type': 'application/json' };

export async function useWasm(): Promise<void> {
  registerWasmTrainingKernels();
  await tf.setBackend('wasm');
  await tf.ready();
}

export interface TestServer {
  app: App;
  store: Store;
  /** the same store, read at once (its writes land within a tick of the federation asking for them) */
  db: SyncStore;
  url: string;
  close(): Promise<void>;
}

export async function startServer(options: { validate?: UpdateValidator; encodeDelta?: DeltaEncoder; sums?: ThreadSums; maxPayloadBytes?: number; evalLimit?: number; rateLimit?: { perSecond: number; burst: number }; tls?: { cert: string; key: string }; allowedOrigins?: string[]; apiRequestsPerMinute?: number; crossOriginIsolation?: boolean; presetsDir?: string } = {}): Promise<TestServer> {
  const { train, test } = loadMnist();
  const db = openSqlite(':memory:');
  const store = asyncStore(db);
  const app = createApp({ store, evaluator: createEvaluator(test, options.evalLimit ?? 1000), train, logger: createLogger('test', () => undefined), adminToken: ADMIN_TOKEN, webRoot: '/nonexistent', ...(options.validate ? { validate: options.validate } : {}), ...(options.encodeDelta ? { encodeDelta: options.encodeDelta } : {}), ...(options.sums ? { sums: options.sums } : {}), ...(options.maxPayloadBytes ? { maxPayloadBytes: options.maxPayloadBytes } : {}), ...(options.rateLimit ? { rateLimit: options.rateLimit } : {}), ...(options.tls ? { tls: options.tls } : {}), ...(options.allowedOrigins ? { allowedOrigins: options.allowedOrigins } : {}), ...(options.apiRequestsPerMinute ? { apiRequestsPerMinute: options.apiRequestsPerMinute } : {}), ...(options.crossOriginIsolation ? { crossOriginIsolation: true } : {}), ...(options.presetsDir ? { presetsDir: options.presetsDir } : {}) });
  await new Promise<void>((resolve) => app.http.listen(0, '127.0.0.1', resolve));
  const url = `${options.tls ? 'https' : 'http'}://127.0.0.1:${(app.http.address() as AddressInfo).port}`;
  return { app, store, db, url, close: () => app.close().then(() => new Promise<void>((r) => app.http.close(() => r()))) };
}

export type TestSocket = DeviceSocket;

export function connect(url: string, options: Record<string, unknown> = {}): Promise<TestSocket> {
  const socket: TestSocket = io(url, { transports: ['websocket'], forceNew: true, reconnection: false, ...options });
  return new Promise((resolve, reject) => {
    socket.once('connect', () => resolve(socket));
    socket.once('connect_error', reject);
  });
}

/** Claims of a device with `examples` training examples spread over the ten labels. */
export function claims(examples = 100, extra: Partial<HelloClaims> = {}): HelloClaims {
  const labelHistogram = Array.from({ length: 10 }, (_, i) => Math.floor(examples / 10) + (i < examples % 10 ? 1 : 0));
  return { backend: 'wasm', backendReason: 'test', examples, heldOut: 20, labelHistogram, ...extra };
}

/** Joins a raw socket as a new device, proving a fresh identity; returns it. */
export async function join(socket: TestSocket, examples = 100, identity?: DeviceIdentity): Promise<DeviceIdentity> {
  const id = identity ?? (await createIdentity());
  const r = await joinFederation(socket, id, claims(examples));
  if (!r.ok) throw new Error(`join refused: ${r.error.code}: ${r.error.message}`);
  return id;
}

let mnist: { train: MnistSplit; test: MnistSplit } | undefined;
const trainSet = () => (mnist ??= loadMnist()).train;
const iidParts = new Map<number, number[][]>();

/** Device `client`'s slice (indices into MNIST's training set) of an IID partition into `clients`. */
export function mnistSliceIndices(client: number, o: { examples: number; heldOut?: number; clients?: number }): { train: number[]; heldOut: number[] } {
  const clients = o.clients ?? 50;
  let parts = iidParts.get(clients);
  if (!parts) iidParts.set(clients, (parts = partition(trainSet().labels, { kind: 'iid', clients, seed: 1, alpha: 1 })));
  return deviceSlice(parts[client] ?? [], { examples: o.examples, heldOut: o.heldOut ?? 0.2, seed: 1, client });
}

/** Device `client`'s data, as tensors. */
export function mnistSlice(client: number, o: { examples: number; heldOut?: number; clients?: number }): { train: LocalData; heldOut: LocalData; histogram: number[] } {
  const slice = mnistSliceIndices(client, o);
  const set = trainSet();
  const train = gatherSamples(set.images, set.labels, slice.train);
  return { train: toTensors(train), heldOut: toTensors(gatherSamples(set.images, set.labels, slice.heldOut)), histogram: labelHistogram(train.labels) };
}

export interface TestDevice {
  client: DeviceClient;
  identity: DeviceIdentity;
  /** every update it sent, decoded (float32 runs): what the server was given */
  sent: { round: number; delta: Float32Array; numExamples: number }[];
  /** under secure aggregation: the masked inputs it sent, as the server received them */
  masked: { round: number; payload: Uint8Array; start: RoundStart }[];
  /** joins and resolves once the server has accepted the hello */
  join(): Promise<void>;
  /** leaves, and frees the device's data once its round (if any) has unwound */
  dispose(): Promise<void>;
}

export interface TestDeviceOptions {
  examples: number;
  heldOut?: number;
  clients?: number;
  memory?: DeviceMemory;
  identity?: DeviceIdentity;
  /** changes what the device sends (a hostile device), or holds it back (a gated or silent one) */
  beforeSubmit?: BeforeSubmit;
}

/** The browser's own device client on MNIST slice `client`, in Node. */
export async function testDevice(url: string, client: number, o: TestDeviceOptions): Promise<TestDevice> {
  const data = mnistSlice(client, o);
  const identity = o.identity ?? (await createIdentity());
  const sent: TestDevice['sent'] = [];
  const masked: TestDevice['masked'] = [];
  const record: BeforeSubmit = async (s: UpdateSubmit, r: RoundStart) => {
    const out = o.beforeSubmit ? await o.beforeSubmit(s, r) : s;
    if (out && r.secureAggregation) masked.push({ round: r.round, payload: out.delta, start: r });
    else if (out && r.plan.codec.codec === 'float32') sent.push({ round: r.round, delta: decodeWeights(out.delta).values, numExamples: out.numExamples });
    return out;
  };
  const device = new DeviceClient({ url, identity, train: data.train, heldOut: data.heldOut, hello: { backend: 'wasm', backendReason: 'test', examples: data.train.count, heldOut: data.heldOut.count, labelHistogram: data.histogram }, beforeSubmit: record, ...(o.memory ? { memory: o.memory } : {}) });
  return {
    client: device,
    identity,
    sent,
    masked,
    join: async () => {
      device.join();
      await until(() => device.snapshot.connection === 'connected' || undefined, 20_000, `device ${identity.deviceId} to join`);
    },
    dispose: async () => {
      await device.leave();
      disposeData(data.train);
      disposeData(data.heldOut);
    },
  };
}

/** Holds submissions back until `open()` is called: a device that trains but answers when told. */
export function gate(): { beforeSubmit: BeforeSubmit; open(): void } {
  let open!: () => void;
  const opened = new Promise<void>((r) => (open = r));
  return { beforeSubmit: async (s) => opened.then(() => s), open };
}

export async function until<T>(probe: () => T | undefined | Promise<T | undefined>, timeoutMs = 30_000, what = 'condition'): Promise<T> {
  const t0 = Date.now();
  for (;;) {
    const v = await probe();
    if (v !== undefined && v !== false) return v;
    if (Date.now() - t0 > timeoutMs) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** Waits until run `runId` is no longer running, and returns it. */
export function runEnded(server: TestServer, runId: number, timeoutMs = 60_000) {
  return until(() => {
    const r = server.db.getRun(runId);
    return r && r.status !== 'running' ? r : undefined;
  }, timeoutMs, `run ${runId} to end`);
}

export async function launch(server: TestServer, config: Record<string, unknown>): Promise<number> {
  const res = await fetch(`${server.url}/api/runs`, { method: 'POST', headers: adminHeaders, body: JSON.stringify(config) });
  const body = (await res.json()) as { id?: number; error?: string };
  if (res.status !== 201 || body.id === undefined) throw new Error(`launch failed (${res.status}): ${body.error}`);
  return body.id;
}
