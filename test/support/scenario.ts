/**
 * The whole federation — the interpreter (federation.ts) and the reducer together — with a fake
 * clock, an in-memory store, a device port that records what devices are sent, an evaluator and a
 * validator the test controls. No sockets, no sleeps: time moves when the test says so.
 */
import { Federation, inlineValidator, type Clock, type DevicePort, type UpdateValidator } from '../../server/federation.ts';
import { validateUpdate } from '../../server/fl/validate.ts';
import type { KeptUpdate, ThreadSums } from '../../server/work-pool.ts';
import { WeightedDeltaSum, type PartialSum } from '../../shared/fedavg.ts';
import { strategyFor } from '../../server/fl/strategy.ts';
import { createLogger } from '../../server/log.ts';
import type { EvalResult, Evaluator } from '../../server/ml/evaluator.ts';
import { openSqlite } from '../../server/store/sqlite.ts';
import { asyncStore, type Store, type SyncStore } from '../../server/store/store.ts';
import type { CanaryEnd, EvalStart, ModelPublished, Result, RoundEnd, RoundStart } from '../../shared/protocol.ts';
import { runConfigSchema, type RunConfig, type RunConfigInput, type UpdateSubmit } from '../../shared/schemas.ts';
import { decodeWeights, encodeWeights, type FlatWeights, type TensorSpec } from '../../shared/weights.ts';

/** Timers fire when the test advances time; `early` makes them fire that many ms before their time, as Node's may. */
export class FakeClock implements Clock {
  t = 1_000_000;
  early = 0;
  private timers: { at: number; setAt: number; fn: () => void; live: boolean }[] = [];
  now(): number {
    return this.t;
  }
  setTimer(at: number, fn: () => void): () => void {
    const timer = { at, setAt: this.t, fn, live: true };
    this.timers.push(timer);
    return () => {
      timer.live = false;
    };
  }
  /** the moments at which armed timers will fire */
  armed(): number[] {
    return this.timers.filter((t) => t.live).map((t) => t.at);
  }
  /** Moves time forward by `ms`, firing each due timer at its own moment, letting async work settle after each. */
  async advance(ms: number): Promise<void> {
    const target = this.t + ms;
    for (;;) {
      this.timers = this.timers.filter((t) => t.live);
      // An early timer still fires after the moment it was set, as Node's do.
      const firesAt = (t: { at: number; setAt: number }) => Math.max(t.setAt + 1, t.at - this.early);
      const due = this.timers.filter((t) => firesAt(t) <= target).sort((a, b) => firesAt(a) - firesAt(b))[0];
      if (!due) break;
      this.t = Math.max(this.t, firesAt(due));
      due.live = false;
      due.fn();
      await flush();
    }
    this.t = target;
    await flush();
  }
}

/** Lets promises and setImmediate callbacks run. */
export async function flush(rounds = 5): Promise<void> {
  for (let i = 0; i < rounds; i++) await new Promise<void>((r) => setImmediate(r));
}

/** Records what each device was sent. */
export class RecordingPort implements DevicePort {
  readonly starts: { deviceId: string; msg: RoundStart }[] = [];
  readonly ends: { deviceId: string; msg: RoundEnd }[] = [];
  readonly published: ModelPublished[] = [];
  sendRoundStart(deviceId: string, msg: RoundStart): void {
    this.starts.push({ deviceId, msg });
  }
  sendRoundEnd(deviceId: string, msg: RoundEnd): void {
    this.ends.push({ deviceId, msg });
  }
  broadcastModel(msg: ModelPublished): void {
    this.published.push(msg);
  }
  readonly secagg: { deviceId: string; event: string; msg: unknown }[] = [];
  sendSecAgg(deviceId: string, event: string, msg: unknown): void {
    this.secagg.push({ deviceId, event, msg });
  }
  readonly evalStarts: { deviceId: string; msg: EvalStart }[] = [];
  readonly canaryEnds: { deviceId: string; msg: CanaryEnd }[] = [];
  sendEvalStart(deviceId: string, msg: EvalStart): void {
    this.evalStarts.push({ deviceId, msg });
  }
  sendCanaryEnd(deviceId: string, msg: CanaryEnd): void {
    this.canaryEnds.push({ deviceId, msg });
  }
  /** the devices selected for a round */
  selected(round: number, attempt = 1): string[] {
    return this.starts.filter((s) => s.msg.round === round && s.msg.attempt === attempt).map((s) => s.deviceId);
  }
  lastStart(deviceId: string): RoundStart | undefined {
    return this.starts.filter((s) => s.deviceId === deviceId).at(-1)?.msg;
  }
}

/** An evaluator whose answers the test decides: by default it answers at once. */
export class ControlledEvaluator implements Evaluator {
  calls = 0;
  /** when set, the next evaluation waits for the test to settle it */
  hold = false;
  readonly pending: { resolve: (r: EvalResult) => void; reject: (e: Error) => void }[] = [];
  failNext: string | undefined;
  async evaluate(): Promise<EvalResult> {
    this.calls++;
    if (this.failNext) {
      const reason = this.failNext;
      this.failNext = undefined;
      throw new Error(reason);
    }
    if (!this.hold) return { accuracy: 0.5, loss: 1, examples: 100 };
    return new Promise((resolve, reject) => this.pending.push({ resolve, reject }));
  }
}

/** A validator the test can slow down: updates wait until released. */
export class ControlledValidator {
  calls = 0;
  hold = false;
  private readonly waiting: (() => void)[] = [];
  readonly validate: UpdateValidator = async (payload, specs, config) => {
    this.calls++;
    if (this.hold) await new Promise<void>((r) => this.waiting.push(r));
    return inlineValidator(payload, specs, config);
  };
  release(): void {
    for (const r of this.waiting.splice(0)) r();
  }
}

/**
 * FedAvg's sum kept "in threads" as the work pool keeps it, in memory, with the pool's contract: a
 * kept update is added or dropped once, and a round's sum handed over once. The test can hold
 * validations and sees every call.
 */
export class ControlledSums implements ThreadSums {
  hold = false;
  readonly added: { id: number; key: string; weight: number }[] = [];
  readonly dropped: number[] = [];
  private readonly waiting: (() => void)[] = [];
  private readonly kept = new Map<number, Float32Array>();
  private readonly sums = new Map<string, WeightedDeltaSum>();
  private nextId = 1;
  async validate(payload: Uint8Array, specs: readonly TensorSpec[], config: RunConfig) {
    if (this.hold) await new Promise<void>((r) => this.waiting.push(r));
    const v = validateUpdate(payload, specs, config);
    const id = this.nextId++;
    this.kept.set(id, v.delta);
    return { kept: { thread: 0, id }, norm: v.norm, clipped: v.clipped };
  }
  add(kept: KeptUpdate, key: string, weight: number): void {
    const delta = this.kept.get(kept.id);
    if (!delta) throw new Error(`sums: update ${kept.id} is not kept (added or dropped twice?)`);
    this.kept.delete(kept.id);
    this.added.push({ id: kept.id, key, weight });
    let sum = this.sums.get(key);
    if (!sum) this.sums.set(key, (sum = new WeightedDeltaSum(delta.length)));
    sum.add(delta, weight);
  }
  drop(kept: KeptUpdate): void {
    if (!this.kept.delete(kept.id)) throw new Error(`sums: update ${kept.id} is not kept (added or dropped twice?)`);
    this.dropped.push(kept.id);
  }
  /** while set, handing over a round's sum (its aggregation) waits for releaseTake() */
  holdTake = false;
  private readonly taking: (() => void)[] = [];
  releaseTake(): void {
    this.holdTake = false;
    for (const r of this.taking.splice(0)) r();
  }
  async take(key: string, size: number): Promise<PartialSum[]> {
    if (this.holdTake) await new Promise<void>((r) => this.taking.push(r));
    const p = this.sums.get(key)?.partial() ?? { sum: new Float64Array(size), weight: 0, updates: 0 };
    this.sums.delete(key);
    return [p];
  }
  release(): void {
    for (const r of this.waiting.splice(0)) r();
  }
  /** updates kept and neither added nor dropped */
  get outstanding(): number {
    return this.kept.size;
  }
}

const METRICS = { accuracyBefore: 0.1, lossBefore: 2.3, accuracyAfter: 0.3, lossAfter: 2, downloadMs: 5, evaluateMs: 5, trainMs: 50 };

export class Scenario {
  readonly clock = new FakeClock();
  /** the store, read at once between two steps (the federation writes it through the async interface) */
  readonly db: SyncStore = openSqlite(':memory:');
  readonly store: Store = asyncStore(this.db);
  readonly port = new RecordingPort();
  readonly evaluator = new ControlledEvaluator();
  readonly validator = new ControlledValidator();
  readonly federation: Federation;
  readonly answers: Result<{ accepted: true }>[] = [];

  /** `sums`: FedAvg's sum kept as the work threads keep it (ControlledSums) */
  readonly sums: ControlledSums | undefined;

  /** `strategyFor`: the run's strategy (default: the server's) */
  constructor(o: { sums?: boolean; strategyFor?: typeof strategyFor } = {}) {
    this.sums = o.sums ? new ControlledSums() : undefined;
    this.federation = new Federation({ store: this.store, strategyFor: o.strategyFor ?? strategyFor, evaluator: this.evaluator, clock: this.clock, logger: createLogger('scenario', () => undefined), port: this.port, validate: this.validator.validate, ...(this.sums ? { sums: this.sums } : {}) });
  }

  join(...ids: string[]): void {
    for (const id of ids) this.federation.join({ deviceId: id, backend: 'wasm', backendReason: 'scenario', examples: 100, heldOut: 20, labelHistogram: new Array(10).fill(10) });
  }

  start(config: RunConfigInput): Promise<number> {
    return this.federation.startRun(runConfigSchema.parse({ model: 'cnn-small', ...config }));
  }

  /** The global model the device was sent in its latest round (always in full: scenario devices hold nothing). */
  globalFor(deviceId: string): FlatWeights {
    const msg = this.port.lastStart(deviceId);
    if (!msg) throw new Error(`${deviceId} was never sent a round`);
    return decodeWeights(msg.weights);
  }

  /** An honest-looking update: every weight moved by `step`. */
  update(deviceId: string, o: { step?: number; numExamples?: number; round?: RoundStart } = {}): UpdateSubmit {
    const msg = o.round ?? this.port.lastStart(deviceId);
    if (!msg) throw new Error(`${deviceId} was never sent a round`);
    const g = decodeWeights(msg.weights);
    return { runId: msg.runId, round: msg.round, attempt: msg.attempt, numExamples: o.numExamples ?? 100, delta: encodeWeights({ specs: g.specs, values: new Float32Array(g.values.length).fill(o.step ?? 0.001) }), metrics: METRICS };
  }

  /** Submits and waits for the answer (validation and all it triggers included). */
  async submit(deviceId: string, o: Parameters<Scenario['update']>[1] = {}): Promise<Result<{ accepted: true }>> {
    const answer = this.federation.submitUpdate(deviceId, this.update(deviceId, o));
    await flush();
    const r = await answer;
    this.answers.push(r);
    await flush();
    return r;
  }

  rounds(runId: number) {
    return this.db.listRounds(runId);
  }

  run(runId: number) {
    return this.db.getRun(runId);
  }
}
