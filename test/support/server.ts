/** Starts the real app on port 0 with an in-memory SQLite store, and Node devices that speak the protocol. */
import * as tf from '@tensorflow/tfjs';
import '@tensorflow/tfjs-backend-wasm';
import type { AddressInfo } from 'node:net';
import { io, type Socket } from 'socket.io-client';
import { createApp, type App } from '../../server/app.ts';
import { loadMnist } from '../../server/data/mnist.ts';
import { createLogger } from '../../server/log.ts';
import { createEvaluator } from '../../server/ml/evaluator.ts';
import { openSqliteStore } from '../../server/store/sqlite.ts';
import type { Store } from '../../server/store/store.ts';
import { buildModel } from '../../shared/models.ts';
import type { ClientToServerEvents, RoundStart, ServerToClientEvents } from '../../shared/protocol.ts';
import { labelHistogram } from '../../shared/partition.ts';
import { computeUpdate, toTensors, type LocalData } from '../../shared/train.ts';
import { decodeWeights, encodeWeights } from '../../shared/weights.ts';
import { DeviceClient, type DeviceMemory } from '../../web-client/fl/client.ts';
import { registerWasmTrainingKernels } from '../../shared/wasm-kernels.ts';

export const ADMIN_TOKEN = 'test-admin-token';

export async function useWasm(): Promise<void> {
  registerWasmTrainingKernels();
  await tf.setBackend('wasm');
  await tf.ready();
}

export interface TestServer {
  app: App;
  store: Store;
  url: string;
  close(): Promise<void>;
}

export async function startServer(options: { maxPayloadBytes?: number; evalLimit?: number; rateLimit?: { perSecond: number; burst: number }; tls?: { cert: string; key: string }; allowedOrigins?: string[]; apiRequestsPerMinute?: number; crossOriginIsolation?: boolean } = {}): Promise<TestServer> {
  const { train, test } = loadMnist();
  const store = openSqliteStore(':memory:');
  const app = createApp({ store, evaluator: createEvaluator(test, options.evalLimit ?? 1000), train, logger: createLogger('test', () => undefined), adminToken: ADMIN_TOKEN, webRoot: '/nonexistent', ...(options.maxPayloadBytes ? { maxPayloadBytes: options.maxPayloadBytes } : {}), ...(options.rateLimit ? { rateLimit: options.rateLimit } : {}), ...(options.tls ? { tls: options.tls } : {}), ...(options.allowedOrigins ? { allowedOrigins: options.allowedOrigins } : {}), ...(options.apiRequestsPerMinute ? { apiRequestsPerMinute: options.apiRequestsPerMinute } : {}), ...(options.crossOriginIsolation ? { crossOriginIsolation: true } : {}) });
  await new Promise<void>((resolve) => app.http.listen(0, '127.0.0.1', resolve));
  const url = `${options.tls ? 'https' : 'http'}://127.0.0.1:${(app.http.address() as AddressInfo).port}`;
  return { app, store, url, close: () => app.close().then(() => new Promise<void>((r) => app.http.close(() => r()))) };
}

export type TestSocket = Socket<ServerToClientEvents, ClientToServerEvents>;

export function connect(url: string): Promise<TestSocket> {
  const socket: TestSocket = io(url, { transports: ['websocket'], forceNew: true, reconnection: false });
  return new Promise((resolve, reject) => {
    socket.once('connect', () => resolve(socket));
    socket.once('connect_error', reject);
  });
}

export async function hello(socket: TestSocket, deviceId: string, examples = 100): Promise<void> {
  const r = await socket.emitWithAck('device:hello', { deviceId, backend: 'wasm', backendReason: 'test', examples, heldOut: 20, labelHistogram: new Array(10).fill(examples / 10) });
  if (!r.ok) throw new Error(r.error.message);
}

/** A Node device: trains with the same shared code as the browser, on a slice of MNIST. */
export class NodeDevice {
  readonly deltas: { round: number; delta: Float32Array; numExamples: number }[] = [];
  private readonly train: LocalData;
  private readonly heldOut: LocalData;
  private readonly model = buildModel('cnn-small');
  constructor(readonly socket: TestSocket, readonly id: string, offset: number, count: number, private readonly transform: (delta: Float32Array) => Float32Array = (d) => d) {
    const { train } = loadMnist();
    const slice = (from: number, n: number) => ({ pixels: train.images.slice(from * 784, (from + n) * 784), labels: train.labels.slice(from, from + n) });
    this.train = toTensors(slice(offset, count));
    this.heldOut = toTensors(slice(offset + count, 20));
    socket.on('round:start', (msg) => void this.onRound(msg).catch(() => undefined)); // a disposed device abandons its round
  }
  async join(): Promise<void> {
    await this.socket.emitWithAck('device:hello', { deviceId: this.id, backend: 'wasm', backendReason: 'test', examples: this.train.count, heldOut: this.heldOut.count, labelHistogram: labelHistogram(await this.train.y.data()) }).then((r) => {
      if (!r.ok) throw new Error(r.error.message);
    });
  }
  /** when set, the device finishes training for rounds ≥ gate.fromRound but waits for gate.open before submitting */
  gate: { fromRound: number; open: Promise<void> } | undefined;
  private async onRound(msg: RoundStart): Promise<void> {
    const global = decodeWeights(new Uint8Array(msg.weights));
    const u = await computeUpdate(this.model, global, this.train, this.heldOut, msg.plan);
    this.deltas.push({ round: msg.round, delta: u.delta.values, numExamples: u.numExamples });
    const sent = { specs: u.delta.specs, values: this.transform(u.delta.values) };
    if (this.gate && msg.round >= this.gate.fromRound) await this.gate.open;
    await this.socket.emitWithAck('update:submit', { runId: msg.runId, round: msg.round, attempt: msg.attempt, numExamples: u.numExamples, delta: encodeWeights(sent), metrics: { accuracyBefore: u.before.accuracy, lossBefore: u.before.loss, accuracyAfter: u.after.accuracy, lossAfter: u.after.loss, downloadMs: 0, evaluateMs: u.evaluateMs, trainMs: u.trainMs } });
  }
  dispose(): void {
    this.socket.disconnect();
    tf.dispose([this.train.x, this.train.y, this.heldOut.x, this.heldOut.y]);
    this.model.dispose();
  }
}

/**
 * The browser's own device client (web-client/fl/client.ts), here in Node, on a contiguous slice of
 * the MNIST training set: `train` examples from `offset`, then `heldOut` more for local evaluation.
 */
export function browserDevice(url: string, deviceId: string, slice: { offset: number; train: number; heldOut: number }, memory?: DeviceMemory): { client: DeviceClient; dispose(): void } {
  const mnist = loadMnist().train;
  const take = (from: number, n: number) => ({ pixels: mnist.images.slice(from * 784, (from + n) * 784), labels: mnist.labels.slice(from, from + n) });
  const trainSamples = take(slice.offset, slice.train);
  const train = toTensors(trainSamples);
  const heldOut = toTensors(take(slice.offset + slice.train, slice.heldOut));
  const client = new DeviceClient({ url, train, heldOut, ...(memory ? { memory } : {}), hello: { deviceId, backend: 'wasm', backendReason: 'test', examples: slice.train, heldOut: slice.heldOut, labelHistogram: labelHistogram(trainSamples.labels) } });
  return { client, dispose: () => tf.dispose([train.x, train.y, heldOut.x, heldOut.y]) };
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
