/**
 * A whole federation in one Node process: the server's Federation service (the same round
 * coordinator, strategies, store and evaluation as `npm start`) with simulated devices that
 * train in worker threads through the same shared/train.ts code as the browser device.
 * Only the transport differs: a DevicePort that hands rounds to the workers instead of sockets.
 *
 * Determinism: devices join in order, selection is seeded by the run, every selected device's
 * update is computed and then submitted in selection order, so the aggregate — and every round
 * after it — is the same for the same options, whatever order the workers finish in.
 */
import * as tf from '@tensorflow/tfjs';
import { createHash } from 'node:crypto';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { isDeepStrictEqual } from 'node:util';
import { tmpdir } from 'node:os';
import path from 'node:path';
import type { RoundRecord } from '../../shared/api.ts';
import type { ModelName } from '../../shared/models-names.ts';
import { codecSeed, residualKey, type HeldModel } from '../../shared/device.ts';
import { createIdentity, type DeviceIdentity } from '../../shared/identity.ts';
import { createRng, hashString, shuffleInPlace } from '../../shared/rng.ts';
import { qualityOf, referenceOf, type Corruption } from '../../shared/data-quality.ts';
import { simDeviceSamples } from './device-data.ts';
import { SecAggSession } from '../../shared/secagg/session.ts';
import { advertToWire, neighbourFromWire, revealToWire, sharesFromWire, sharesToWire } from '../../shared/secagg/wire.ts';
import { decodeWeights, encodeWeights } from '../../shared/weights.ts';
import { deviceSlice, labelHistogram, partition, type PartitionKind } from '../../shared/partition.ts';
import type { ModelPublished, RoundEnd, RoundStart, SecAggNeighbours, SecAggSharesIn, SecAggUnmask, ServerToClientEvents } from '../../shared/protocol.ts';
import { RUN_CONFIG_DEFAULTS, validateRunConfig, type Aggregation, type DeviceHello, type RunConfig } from '../../shared/schemas.ts';
import type { FlatWeights } from '../../shared/weights.ts';
import type { MnistSplit } from '../data/mnist.ts';
import { Federation, systemClock, type DevicePort } from '../federation.ts';
import { strategyFor } from '../fl/strategy.ts';
import { createLogger } from '../log.ts';
import { poolEvaluator } from '../ml/evaluator.ts';
import { openSqliteStore } from '../store/sqlite.ts';
import { WorkerPool } from './pool.ts';

export interface SimulationOptions {
  /**
   * Keep the run's store (rounds, model versions) in this SQLite file instead of a temporary one:
   * started again with the same options, a run that was cut short (a time limit, Ctrl-C, a crash)
   * continues from its last completed round, as the server resumes one after a restart. What the
   * simulated devices keep between rounds (codec residuals, SCAFFOLD's c_i) starts again empty.
   */
  checkpoint?: string;
  clients: number;
  /** C: the fraction of clients selected each round (at least one) */
  fraction: number;
  rounds: number;
  epochs: number;
  batch: number;
  lr: number;
  partition: PartitionKind;
  alpha: number;
  model: ModelName;
  seed: number;
  /** test accuracy to reach; the rounds and time to it are reported */
  target?: number | undefined;
  /** end the run once the target is reached (default true when a target is given) */
  stopAtTarget?: boolean;
  /** share of each client's examples kept aside for its local before/after evaluation (the paper trains on all: 0) */
  heldOut?: number;
  /** examples per client at most (default: the whole partition) */
  examples?: number;
  /** corrupted clients (a seeded share of them) and how their training data is corrupted (data-quality.ts) */
  corrupt?: { clients: number; corruptions: Corruption[] };
  /** what the run does with devices whose data fails its quality rules */
  qualityAction?: 'flag' | 'exclude';
  /** poisoning clients (seeded): each trains honestly, then sends −10 × its update (float32 codec) */
  poison?: number;
  /** the update monitor's settings (RunConfig.monitor) */
  monitor?: Partial<RunConfig['monitor']>;
  /** selected = ceil(K × overSelect); 1 as in the paper */
  overSelect?: number;
  aggregation?: Aggregation;
  /** the strategy for non-IID data and its parameters (run config fields of the same names) */
  strategy?: Partial<Pick<RunConfig, 'strategy' | 'serverLearningRate' | 'beta1' | 'beta2' | 'tau' | 'mu' | 'q'>>;
  workers?: number;
  /** the update codec (codec.ts) and its parameters; float32 by default */
  codec?: string;
  topkFraction?: number;
  randFraction?: number;
  quantBlock?: number;
  downlink?: 'full' | 'delta';
  /** the downlink's codec (RunConfig.downlinkCodec) and its topk share */
  downlinkCodec?: string;
  downlinkTopkFraction?: number;
  /** SecAgg+: every device masks its update; the server learns only the sum (needs clipNorm) */
  secureAggregation?: boolean;
  /** L2 bound on each update (0: none) */
  clipNorm?: number;
  /**
   * probability that a selected device drops out of its round (drawn per device and round from the
   * seed): in a secure round once its shares have gone out and it holds its neighbours' (the
   * server's costliest case), else once it has trained; it is back for the next round
   */
  dropout?: number;
  /** user-level DP-FedAvg (RunConfig.dp) */
  dp?: { noiseMultiplier: number; clipNorm: number | 'adaptive'; targetDelta?: number; epsilonBudget?: number; dropoutTolerance?: number };
  /** secure aggregation's k and t (0: automatic) */
  secAggNeighbours?: number;
  secAggThreshold?: number;
}

export interface SimRound {
  round: number;
  testAccuracy: number;
  testLoss: number;
  updates: number;
  /** from selection to the evaluated model */
  durationMs: number;
  /** since the run started */
  elapsedMs: number;
  trainMs: number;
  evaluationMs: number;
  bytesUpPerDevice: number;
  bytesDownPerDevice: number;
  /** selected devices that dropped out */
  dropped: number;
  /** ε spent so far (null: not a private run) */
  epsilon: number | null;
  /** under distributed DP: ε against the server, which knows who was sampled */
  epsilonAgainstServer: number | null;
  /** the counted devices' held-out accuracies: of the global model, their personal one, its distance-aware and even mixes (when measured) */
  devices: { global: number; personal: number; mixed?: number; halfMix?: number; distance?: number }[];
}

export interface SimulationResult {
  options: SimulationOptions;
  config: RunConfig;
  workers: number;
  initial: { testAccuracy: number; testLoss: number };
  rounds: SimRound[];
  status: string;
  reason: string;
  roundsToTarget: number | null;
  timeToTargetMs: number | null;
  wallMs: number;
  /** sha256 of the last model's weight payload: equal for runs with the same options */
  finalModelSha256: string;
  /** median time a device took to encode its update with the run's codec */
  encodeMsMedian: number;
  /** data quality: corrupted devices, devices that fail the run's rules, and how many of those were corrupted */
  quality: { corrupted: number; flagged: number; flaggedCorrupted: number; action: 'flag' | 'exclude' };
  /** the update monitor: honest device-rounds judged after the cold start and the false alarms among them; for each poisoner or corrupted client, its participations judged and the first one flagged (1-based; null: never) */
  monitor: { warmupRounds: number; monitoredRounds: number; honestDeviceRounds: number; outOfControl: number; falseAlarms: number; falseAlarmsBy: Record<string, number>; suspects: { id: string; kind: 'poison' | 'corrupt'; judged: number; firstFlagged: number | null }[] };
}

export function simulationConfig(o: SimulationOptions): RunConfig {
  const k = Math.max(1, Math.round(o.fraction * o.clients));
  // with dropouts a round closes on the devices that answered, once everyone has answered or left
  // under DP the round's size is a Poisson sample around k: it closes on whoever was sampled
  // (a secure round needs 3 inputs; under distributed DP the round's own floor is its noise's)
  const minUpdates = o.dp ? (o.secureAggregation ? 3 : 1) : o.dropout ? Math.min(k, Math.max(3, Math.ceil(k / 2))) : k;
  const checked = validateRunConfig({
    model: o.model,
    rounds: o.rounds,
    clientsPerRound: k,
    overSelect: o.overSelect ?? 1,
    minUpdates,
    localEpochs: o.epochs,
    batchSize: o.batch,
    learningRate: o.lr,
    seed: o.seed,
    aggregation: o.aggregation ?? 'fedavg',
    ...o.strategy,
    ...(o.codec !== undefined ? { updateCodec: o.codec } : {}),
    ...(o.topkFraction !== undefined ? { topkFraction: o.topkFraction } : {}),
    ...(o.randFraction !== undefined ? { randFraction: o.randFraction } : {}),
    ...(o.quantBlock !== undefined ? { quantBlock: o.quantBlock } : {}),
    ...(o.downlink !== undefined ? { downlink: o.downlink } : {}),
    ...(o.downlinkCodec !== undefined ? { downlinkCodec: o.downlinkCodec } : {}),
    ...(o.downlinkTopkFraction !== undefined && o.downlinkTopkFraction !== RUN_CONFIG_DEFAULTS.downlinkTopkFraction ? { downlinkTopkFraction: o.downlinkTopkFraction } : {}),
    ...(o.secureAggregation ? { secureAggregation: true } : {}),
    ...(o.clipNorm !== undefined ? { clipNorm: o.clipNorm } : {}),
    ...(o.secAggNeighbours ? { secAggNeighbours: o.secAggNeighbours } : {}),
    ...(o.dp ? { dp: o.dp } : {}),
    ...(o.secAggThreshold ? { secAggThreshold: o.secAggThreshold } : {}),
    ...(o.qualityAction ? { dataQuality: { action: o.qualityAction } } : {}),
    ...(o.monitor ? { monitor: o.monitor } : {}),
    // the registry records the data a simulated run's versions were trained on
    labels: { simulated: 'node', partition: o.partition, clients: String(o.clients), ...(o.partition === 'dirichlet' ? { alpha: String(o.alpha) } : {}) },
    roundTimeoutMs: 24 * 3600_000,
    selectionTimeoutMs: 0,
    // with dropouts a secure round can fail (a neighbourhood lost more than k − t): it is redone, as a deployment would
    maxRoundRetries: o.dropout ? 2 : 0,
  });
  if (!checked.ok) throw new RangeError(`simulation: ${checked.message}`);
  return checked.config;
}

export interface SimDevice {
  id: string;
  /** a poisoning client: it sends −10 × its update */
  poison?: boolean;
  /** how its training data is corrupted (seeded by its slot) */
  corrupt?: Corruption[];
  /** its place among the simulation's devices: what its dropouts are drawn from (its id may be random) */
  slot: number;
  train: Int32Array;
  heldOut: Int32Array;
}

/** The simulated devices: one per partition, sliced as a browser device's data is (deviceSlice). */
export function makeDevices(train: MnistSplit, o: SimulationOptions): SimDevice[] {
  const parts = partition(train.labels, { kind: o.partition, clients: o.clients, seed: o.seed, alpha: o.alpha });
  // poisoners and corrupted clients are drawn apart, each from its own seeded order
  const poisoners = new Set(o.poison ? shuffleInPlace(Array.from({ length: o.clients }, (_, i) => i), createRng(o.seed ^ 0xbad)).slice(0, o.poison) : []);
  const corrupted = new Set(o.corrupt ? shuffleInPlace(Array.from({ length: o.clients }, (_, i) => i), createRng(o.seed ^ 0xc0ffee)).slice(0, Math.round(o.corrupt.clients * o.clients)) : []);
  return parts.map((part, c) => {
    const slice = deviceSlice(part, { examples: o.examples, heldOut: o.heldOut ?? 0, seed: o.seed, client: c });
    return { id: `sim-client-${String(c).padStart(4, '0')}`, slot: c, train: Int32Array.from(slice.train), heldOut: Int32Array.from(slice.heldOut), ...(corrupted.has(c) ? { corrupt: o.corrupt!.corruptions } : {}), ...(poisoners.has(c) ? { poison: true } : {}) };
  });
}

/**
 * The DevicePort of the simulation: a round's selected devices run their round in the pool (the
 * browser device's own code, shared/device.ts), then submit in selection order. Each device keeps
 * what a browser keeps between rounds — the global model it holds (so the server sends it deltas)
 * its codec's error-feedback residual and its SCAFFOLD control variate — one copy of each model
 * version, shared by its holders.
 */
class SimulatedDevices implements DevicePort {
  federation: Federation | undefined;
  private batch: { key: string; starts: { id: string; msg: RoundStart }[] } | undefined;
  onFailure: (err: Error) => void = () => undefined;
  /** the model version each device holds, and those versions */
  private readonly held = new Map<string, number>();
  private readonly versions = new Map<number, HeldModel>();
  private readonly residuals = new Map<string, { key: string; values: Float32Array }>();
  private readonly controls = new Map<string, { key: string; values: Float32Array }>();
  /** encode time of each update (the codec's cost on the device) */
  readonly encodeMs: number[] = [];

  constructor(private readonly pool: WorkerPool, private readonly devices: Map<string, SimDevice>) {}

  sendRoundStart(deviceId: string, msg: RoundStart): void {
    const key = `${msg.runId}:${msg.round}:${msg.attempt}`;
    if (this.batch?.key !== key) {
      const batch = { key, starts: [] as { id: string; msg: RoundStart }[] };
      this.batch = batch;
      // Federation hands out a round's start synchronously, device after device: collect, then run.
      queueMicrotask(() => void this.runRound(batch.starts).catch((err: unknown) => this.onFailure(err instanceof Error ? err : new Error(String(err)))));
    }
    this.batch.starts.push({ id: deviceId, msg });
    if (msg.secureAggregation) this.beginSecure(deviceId, msg, msg.secureAggregation);
  }

  sendRoundEnd(deviceId: string, _msg: RoundEnd): void {
    void this.sessions.get(deviceId)?.then((s) => s.abort('the round ended'), () => undefined);
    this.sessions.delete(deviceId); // its keys and shares are of no use once the round is over
  }
  /** how devices joined (to rejoin after a dropout), and the dropout probability with its seed */
  readonly hellos = new Map<string, { hello: DeviceHello; identityKey: Uint8Array | undefined }>();
  dropout = { p: 0, seed: 0 };
  private readonly gone = new Set<string>();

  /** Whether the device drops out of this round: a function of the seed, the device and the round. */
  private drops(id: string, msg: RoundStart): boolean {
    const slot = this.devices.get(id)?.slot ?? 0;
    return this.dropout.p > 0 && createRng(hashString(`${this.dropout.seed}:${slot}:${msg.runId}:${msg.round}:${msg.attempt}`))() < this.dropout.p;
  }

  private leave(id: string): void {
    this.gone.add(id);
    (this.federation as Federation).leave(id);
  }

  /** The devices that dropped out come back once their round's work is done. */
  private rejoinAll(): void {
    for (const id of this.gone) {
      const h = this.hellos.get(id);
      if (h) (this.federation as Federation).join(h.hello, h.identityKey);
    }
    this.gone.clear();
  }

  /** the devices' identity keys and this round's secure-aggregation sessions (secure runs only) */
  identities = new Map<string, DeviceIdentity>();
  private readonly sessions = new Map<string, Promise<SecAggSession>>();

  /** A device of a secure round: keys out at once, like a browser device (secagg/session.ts). */
  private beginSecure(id: string, msg: RoundStart, plan: NonNullable<RoundStart['secureAggregation']>): void {
    const identity = this.identities.get(id) as DeviceIdentity;
    const ref = { runId: msg.runId, round: msg.round, attempt: msg.attempt };
    const session = SecAggSession.begin(identity, plan);
    this.sessions.set(id, session);
    void session
      .then(async (s) => {
        const { deviceId: _id, ...advert } = s.advert;
        const ack = await (this.federation as Federation).secAggMessage(id, ref, { what: 'keys', msg: advert }, JSON.stringify(advertToWire(advert)).length);
        if (!ack.ok) throw new Error(`${ack.error.code}: ${ack.error.message}`);
      })
      .catch((err: unknown) => this.onFailure(new Error(`simulated device ${id}, round ${msg.round}, keys: ${err instanceof Error ? err.message : String(err)}`)));
  }

  sendSecAgg<E extends 'secagg:neighbours' | 'secagg:shares' | 'secagg:unmask'>(deviceId: string, event: E, m: Parameters<ServerToClientEvents[E]>[0]): void {
    const session = this.sessions.get(deviceId);
    if (!session) return;
    const federation = this.federation as Federation;
    const ref = { runId: m.runId, round: m.round, attempt: m.attempt };
    const step = async (s: SecAggSession): Promise<void> => {
      if (event === 'secagg:neighbours') {
        const msg = m as SecAggNeighbours;
        const reply = await s.onNeighbours({ devices: msg.devices, neighbours: msg.neighbours.map(neighbourFromWire) });
        const ack = await federation.secAggMessage(deviceId, ref, { what: 'shares', msg: reply }, JSON.stringify(sharesToWire(reply.shares)).length + 100);
        if (!ack.ok) throw new Error(`${ack.error.code}: ${ack.error.message}`);
      } else if (event === 'secagg:shares') {
        await s.onShares(sharesFromWire((m as SecAggSharesIn).shares));
      } else {
        const msg = m as SecAggUnmask;
        const reveal = await s.onUnmask({ survivors: msg.survivors, dropped: msg.dropped });
        const ack = await federation.secAggMessage(deviceId, ref, { what: 'reveal', msg: reveal }, JSON.stringify(revealToWire(reveal)).length);
        if (!ack.ok) throw new Error(`${ack.error.code}: ${ack.error.message}`);
      }
    };
    void session.then(step).catch((err: unknown) => this.onFailure(new Error(`simulated device ${deviceId}, round ${m.round}, ${event}: ${err instanceof Error ? err.message : String(err)}`)));
  }
  broadcastModel(_msg: ModelPublished): void {}

  /** asked before a round's devices train: a tuner pauses a trial here (the run's deadline is a day), or stops it */
  gate: ((round: number) => Promise<true | { stop: string }>) | undefined;

  private async runRound(starts: { id: string; msg: RoundStart }[]): Promise<void> {
    const first = starts[0];
    if (first && this.gate) {
      const go = await this.gate(first.msg.round);
      if (go !== true) {
        (this.federation as Federation).stopRun(go.stop);
        return;
      }
    }
    const results = await Promise.all(
      starts.map(({ id, msg }) => {
        const d = this.devices.get(id) as SimDevice;
        const version = this.held.get(id);
        return this.pool.train({ type: 'train', deviceId: id, round: msg, train: d.train, heldOut: d.heldOut, held: version === undefined ? undefined : this.versions.get(version), residual: this.residuals.get(id), control: this.controls.get(id), ...(d.corrupt ? { corrupt: d.corrupt, slot: d.slot } : {}) });
      }),
    );
    const federation = this.federation as Federation;
    for (const [i, r] of results.entries()) {
      const { id, msg } = starts[i] as { id: string; msg: RoundStart };
      if (r.held) {
        if (!this.versions.has(r.held.version)) this.versions.set(r.held.version, r.held);
        this.held.set(id, r.held.version);
      }
      if (!r.submission) throw new Error(`simulated device ${id}, round ${msg.round}: training stopped`);
      if (this.drops(id, msg)) {
        // a secure round's device leaves once it holds its neighbours' shares: they must then unmask around it
        if (msg.secureAggregation) await (await (this.sessions.get(id) as Promise<SecAggSession>)).ready().catch(() => undefined);
        this.leave(id);
        continue;
      }
      this.encodeMs.push(r.encodeMs);
      federation.report(id, { state: 'uploading', runId: msg.runId, round: msg.round, attempt: msg.attempt, modelVersion: msg.modelVersion });
      let submission = r.submission;
      if (this.devices.get(id)?.poison) {
        if (msg.plan.codec.codec !== 'float32') throw new Error(`simulated poisoner ${id}: it flips float32 updates only (the run's codec is ${msg.plan.codec.codec})`);
        const honest = decodeWeights(submission.delta);
        submission = { ...submission, delta: encodeWeights({ specs: honest.specs, values: honest.values.map((v) => -10 * v) }) };
      }
      if (msg.secureAggregation) {
        // the worker's float32 update, masked in the main thread where the device's session lives;
        // none when the round already closed without it (an over-selected device)
        const pending = this.sessions.get(id);
        if (!pending) {
          federation.report(id, { state: 'idle', modelVersion: msg.modelVersion });
          continue;
        }
        const session = await pending;
        const masked = await session.maskedInput(decodeWeights(submission.delta).values, submission.numExamples, codecSeed(msg.plan.seed, id));
        submission = { ...submission, delta: masked.payload, signature: masked.signature };
      }
      const ack = await federation.submitUpdate(id, submission);
      if (ack.ok && r.residual) this.residuals.set(id, { key: residualKey(msg.runId, msg.model), values: r.residual });
      if (ack.ok && r.control) this.controls.set(id, { key: residualKey(msg.runId, msg.model), values: r.control });
      if (!ack.ok && ack.error.code !== 'ROUND_FULL') throw new Error(`simulated device ${id}, round ${msg.round}: ${ack.error.code}: ${ack.error.message}`);
      federation.report(id, { state: 'idle', modelVersion: msg.modelVersion });
    }
    this.rejoinAll();
    // Versions no device holds any more are dropped.
    const inUse = new Set(this.held.values());
    for (const v of this.versions.keys()) if (!inUse.has(v)) this.versions.delete(v);
  }
}

const medianOf = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length ? (s.length % 2 ? (s[s.length >> 1] as number) : ((s[s.length / 2 - 1] as number) + (s[s.length / 2] as number)) / 2) : Number.NaN;
};

const toSimRound = (r: RoundRecord, runStartedAt: number): SimRound => ({
  round: r.round,
  testAccuracy: r.testAccuracy ?? Number.NaN,
  testLoss: r.testLoss ?? Number.NaN,
  updates: r.completed,
  durationMs: r.durationMs,
  elapsedMs: r.startedAt + r.durationMs - runStartedAt,
  trainMs: r.timings?.trainMs ?? 0,
  evaluationMs: r.phases.evaluationMs,
  bytesUpPerDevice: r.completed ? r.bytesUp / r.completed : 0,
  bytesDownPerDevice: r.participants ? r.bytesDown / r.participants : 0,
  dropped: r.dropped,
  epsilon: r.privacy?.epsilon ?? null,
  epsilonAgainstServer: r.privacy?.distributed?.epsilonAgainstServer ?? null,
  devices: r.devices.map((d) => ({ global: d.accuracyBefore, personal: d.accuracyAfter, ...(d.accuracyMixed !== undefined ? { mixed: d.accuracyMixed } : {}), ...(d.accuracyHalfMix !== undefined ? { halfMix: d.accuracyHalfMix } : {}), ...(d.labelDistance !== undefined ? { distance: d.labelDistance } : {}) })),
});

/**
 * Runs a federation to its end (all rounds, the target, a failure, or `onRound` or the gate asking
 * it to stop) and returns its rounds. `control.gate`, asked before each round's devices train, can
 * hold the run there (a tuner pauses a trial at a rung until it is promoted) or stop it.
 */
export async function runSimulation(options: SimulationOptions, mnist: { train: MnistSplit; test: MnistSplit }, onRound?: (r: SimRound) => void | { stop: string }, control: { gate?: (round: number) => Promise<true | { stop: string }> } = {}): Promise<SimulationResult> {
  const config = simulationConfig(options);
  await tf.ready(); // the main thread builds the initial model; the workers train
  const devices = makeDevices(mnist.train, options);
  const reference = referenceOf({ pixels: mnist.train.images, labels: mnist.train.labels });
  // Secure aggregation checks that a device's id derives from its identity key: secure runs give
  // their devices real identities (and so ids that differ from run to run).
  const identities = new Map<string, DeviceIdentity>();
  if (config.secureAggregation) {
    for (const d of devices) {
      const identity = await createIdentity();
      d.id = identity.deviceId;
      identities.set(d.id, identity);
    }
  }
  if (options.checkpoint && config.secureAggregation) throw new Error('checkpoint: a secure run cannot be resumed (its devices\' identity keys live only in the process that made them)');
  const dir = options.checkpoint ? undefined : mkdtempSync(path.join(tmpdir(), 'fl-simulate-'));
  if (options.checkpoint) mkdirSync(path.dirname(options.checkpoint), { recursive: true });
  const store = openSqliteStore(options.checkpoint ?? path.join(dir!, 'fl.sqlite'));
  const previous = options.checkpoint ? (await store.listRuns()).at(-1) : undefined;
  const refusal = !previous ? undefined : previous.status !== 'running' ? `holds a run that already ended (${previous.status}: ${previous.reason ?? ''}); delete it to start again` : !isDeepStrictEqual(previous.config, JSON.parse(JSON.stringify(config))) ? 'holds a run with other options: run the command that started it, or delete the file' : undefined;
  if (refusal) {
    await store.close();
    throw new Error(`checkpoint ${options.checkpoint} ${refusal}`);
  }
  const pool = await WorkerPool.start(mnist.train, mnist.test, options.workers);
  const port = new SimulatedDevices(pool, new Map(devices.map((d) => [d.id, d])));
  const federation = new Federation({ store, strategyFor, evaluator: poolEvaluator(pool, mnist.test.count), clock: systemClock, logger: createLogger('simulate', (l) => process.stderr.write(l + '\n'), true), port });
  port.federation = federation;
  port.identities = identities;
  port.dropout = { p: options.dropout ?? 0, seed: options.seed };
  port.gate = control.gate;
  const stopAtTarget = options.stopAtTarget ?? options.target !== undefined;
  const rounds: SimRound[] = [];
  const t0 = Date.now();
  try {
    for (const d of devices) {
      // the device's data as its worker trains on it (corrupted, for a corrupted client), and the scores it measures of it
      const samples = simDeviceSamples(mnist.train, d);
      const q = qualityOf(samples, { reference });
      const hello = { deviceId: d.id, backend: 'wasm' as const, backendReason: 'simulation worker', examples: d.train.length, heldOut: d.heldOut.length, labelHistogram: labelHistogram(samples.labels), quality: { conformity: q.conformity!, uniqueness: q.uniqueness!, completeness: q.completeness!, coherence: q.coherence }, ...(identities.has(d.id) ? { x25519: true } : {}) };
      port.hellos.set(d.id, { hello, identityKey: identities.get(d.id)?.publicKey });
      federation.join(hello, identities.get(d.id)?.publicKey);
    }
    const flagged = new Set(federation.listDevices().filter((d) => d.qualityFlags.length).map((d) => d.id));
    const corrupted = new Set(devices.filter((d) => d.corrupt).map((d) => d.id));
    const quality = { corrupted: corrupted.size, flagged: flagged.size, flaggedCorrupted: [...flagged].filter((id) => corrupted.has(id)).length, action: config.dataQuality.action };
    let reported: Promise<void> = Promise.resolve();
    const ended = new Promise<void>((resolve, reject) => {
      port.onFailure = (err) => {
        federation.stopRun(`failed: ${err.message}`);
        reject(err);
      };
      federation.observe({
        changed: () => undefined,
        event: (e) => {
          if (e.kind === 'run:finished') resolve();
          if (e.kind !== 'round:completed' && e.kind !== 'round:evaluated') return;
          // a round is reported once its model is evaluated (the next round already runs meanwhile), in order, as stored
          reported = reported.then(async () => {
            await federation.flushed();
            const completed = (await store.listRounds(await runId)).filter((r) => r.status === 'completed');
            for (const record of completed.slice(rounds.length)) {
              if (record.evaluationPending) break;
              const r = toSimRound(record, runStartedAt);
              rounds.push(r);
              const asked = onRound?.(r);
              if (asked) federation.stopRun(asked.stop);
              else if (stopAtTarget && options.target !== undefined && r.testAccuracy >= options.target) federation.stopRun(`reached the target ${options.target} in round ${r.round}`);
            }
          });
        },
      });
    });
    const runStartedAt = previous?.createdAt ?? Date.now();
    let runId: Promise<number>;
    if (previous) {
      // the rounds the cut-short process completed, reported first; then the run goes on from the last one's model
      for (const record of (await store.listRounds(previous.id)).filter((r) => r.status === 'completed' && !r.evaluationPending)) {
        const r = toSimRound(record, runStartedAt);
        rounds.push(r);
        onRound?.(r);
      }
      const resumed = await federation.resumeInterruptedRun();
      runId = Promise.resolve(previous.id);
      if (resumed === undefined) {
        const now = await store.getRun(previous.id);
        if (now?.status !== 'done') port.onFailure(new Error(`checkpoint ${options.checkpoint}: the run could not be resumed (${now?.reason ?? 'unknown'})`));
      }
    } else {
      runId = federation.startRun(config);
    }
    await runId;
    if ((await store.getRun(await runId))?.status === 'running') await ended;
    await federation.idle();
    await reported;
    const run = await store.getRun(await runId);
    const judged = (await store.listRounds(await runId)).filter((r) => r.status === 'completed' && r.monitoring);
    const monitoredRounds = judged.filter((r) => r.monitoring!.phase === 'monitoring');
    const suspectOf = new Map(devices.filter((d) => d.poison || d.corrupt).map((d) => [d.id, d.poison ? ('poison' as const) : ('corrupt' as const)]));
    const honest = monitoredRounds.flatMap((r) => r.monitoring!.devices.filter((d) => !suspectOf.has(d.id)));
    const monitor = {
      warmupRounds: judged.length - monitoredRounds.length,
      /** honest device-rounds out of control (a lone excursion), and honest devices flagged (the rule: 2 of 3) */
      outOfControl: honest.filter((d) => d.reasons.length).length,
      monitoredRounds: monitoredRounds.length,
      honestDeviceRounds: honest.length,
      falseAlarms: honest.filter((d) => d.flagged).length,
      /** what raised them: each reason's feature (or the isolation forest), counted */
      falseAlarmsBy: honest.flatMap((d) => d.reasons.map((r) => r.split(' ')[0]!)).reduce<Record<string, number>>((a, k) => ({ ...a, [k]: (a[k] ?? 0) + 1 }), {}),
      suspects: [...suspectOf].map(([id, kind]) => {
        const seen = monitoredRounds.flatMap((r) => r.monitoring!.devices.filter((d) => d.id === id));
        const first = seen.findIndex((d) => d.flagged);
        return { id, kind, judged: seen.length, firstFlagged: first < 0 ? null : first + 1 };
      }),
    };
    const models = (await store.listModels()).filter((m) => m.runId === run?.id);
    const initial = models.find((m) => m.round === 0);
    const last = models.at(-1);
    const lastPayload = last ? await store.getModelWeights(last.version) : undefined;
    const hit = options.target === undefined ? undefined : rounds.find((r) => r.testAccuracy >= (options.target as number));
    return {
      options,
      config,
      workers: pool.size,
      initial: { testAccuracy: initial?.testAccuracy ?? Number.NaN, testLoss: initial?.testLoss ?? Number.NaN },
      rounds,
      status: run?.status ?? 'unknown',
      reason: run?.reason ?? '',
      roundsToTarget: hit?.round ?? null,
      timeToTargetMs: hit?.elapsedMs ?? null,
      wallMs: Date.now() - t0,
      encodeMsMedian: medianOf(port.encodeMs),
      quality,
      monitor,
      finalModelSha256: lastPayload ? createHash('sha256').update(lastPayload).digest('hex') : '',
    };
  } finally {
    federation.shutdown();
    await federation.idle().catch(() => undefined);
    await pool.close();
    await store.close();
    if (dir) rmSync(dir, { recursive: true, force: true });
  }
}
