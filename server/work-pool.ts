/**
 * The server's work threads. Validating an update (decoding, the value checks, the norm and the
 * clipping; fl/validate.ts) is the server's largest cost per update — about 20 ms for the paper's
 * CNN — and encoding a model delta for a download about 200 ms per base version (a lossy downlink's
 * step, once a round, 50–110 ms for the CNN); with many large
 * updates or devices on older versions they would hold the event loop that every device's
 * connection shares. Here each job goes to the least busy of `size` threads (work-thread.ts).
 * Inputs are transferred, not copied, when they are the whole of their buffer: a caller hands them
 * over and must not read them again.
 */
import type { Worker } from 'node:worker_threads';
import type { RunConfig } from '../shared/schemas.ts';
import { WeightsFormatError, type TensorSpec } from '../shared/weights.ts';
import type { UpdateValidator } from './federation.ts';
import type { ValidatedUpdate } from './fl/validate.ts';
import type { DeltaEncoder, StepQuantizer } from './model-book.ts';
import type { CodecConfig } from '../shared/codec.ts';
import type { PartialSum } from '../shared/fedavg.ts';
import { tsWorker } from './ts-worker.ts';
import { KeptSums } from './fl/kept-sums.ts';
import { validateUpdate } from './fl/validate.ts';

export type WorkJob =
  /** `keep`: the Δ stays in the thread for `add` or `drop` */
  | { kind: 'validate'; id: number; payload: Uint8Array; specs: readonly TensorSpec[]; config: RunConfig; keep?: boolean }
  | { kind: 'add'; id: number; of: number; key: string; weight: number }
  | { kind: 'drop'; id: number; of: number }
  | { kind: 'take'; id: number; key: string; size: number }
  | { kind: 'delta'; id: number; base: Float32Array; target: Float32Array; baseVersion: number; targetVersion: number }
  | { kind: 'step'; id: number; specs: readonly TensorSpec[]; base: Float32Array; target: Float32Array; residual: Float32Array | undefined; config: CodecConfig; seed: number };

export type WorkReply =
  | { id: number; ok: true; kind: 'validate'; delta: Float32Array; norm: number; clipped: boolean; sketch: Float32Array }
  | { id: number; ok: true; kind: 'kept'; norm: number; clipped: boolean; sketch: Float32Array }
  | { id: number; ok: true; kind: 'done' }
  | { id: number; ok: true; kind: 'sum'; partial: PartialSum }
  | { id: number; ok: true; kind: 'delta'; bytes: Uint8Array }
  | { id: number; ok: true; kind: 'step'; payload: Uint8Array; values: Float32Array; residual: Float32Array }
  | { id: number; ok: false; formatError: boolean; message: string };

/** An update validated and kept in the thread that validated it, until it is added to a sum or dropped. */
export interface KeptUpdate {
  thread: number;
  id: number;
}

/**
 * A round's FedAvg sum kept in the work threads: updates are validated and kept where they were
 * decoded, added there once accepted, and each thread's share of the sum is merged once, when the
 * round is aggregated. Nothing of an update crosses back to the event loop.
 */
export interface ThreadSums {
  validate(payload: Uint8Array, specs: readonly TensorSpec[], config: RunConfig): Promise<{ kept: KeptUpdate; norm: number; clipped: boolean; sketch?: Float32Array }>;
  add(kept: KeptUpdate, key: string, weight: number): void;
  drop(kept: KeptUpdate): void;
  /** the shares of the round `key`'s sum, one from each thread that holds some (a failed add or a lost thread makes it fail: an accepted update would be missing) */
  take(key: string, size: number): Promise<PartialSum[]>;
}

/** The same on the event loop, for a process without work threads (VALIDATE_THREADS=0). */
export function inlineSums(): ThreadSums {
  const kept = new KeptSums();
  let next = 1;
  return {
    async validate(payload, specs, config) {
      const v = validateUpdate(payload, specs, config);
      const id = next++;
      kept.keep(id, v.delta);
      return { kept: { thread: -1, id }, norm: v.norm, clipped: v.clipped, sketch: v.sketch };
    },
    add: (k, key, weight) => kept.add(k.id, key, weight),
    drop: (k) => kept.drop(k.id),
    take: async (key, size) => [kept.take(key, size)],
  };
}

type Done = Extract<WorkReply, { ok: true }>;

interface Thread {
  index: number;
  worker: Worker;
  pending: Map<number, { resolve: (r: Done) => void; reject: (err: Error) => void }>;
  /** validations and deltas posted to it and not answered */
  heavy: number;
}

/**
 * Validations and deltas posted to a thread at once, at most: the rest wait here, undecoded, so
 * that a thread's queue never holds more than this many payloads and the light jobs (adding a kept
 * update to its sum, handing over a sum) are never stuck behind a burst of uploads.
 */
const HEAVY_PER_THREAD = 2;

export interface WorkPool {
  validate: UpdateValidator;
  encodeDelta: DeltaEncoder;
  /** a lossy downlink's steps, off the event loop */
  quantizeStep: StepQuantizer;
  sums: ThreadSums;
  /** jobs under way in each thread */
  load(): number[];
  close(): Promise<void>;
}

/** A view that is the whole of a plain ArrayBuffer can be transferred; anything else is copied first. */
function own<T extends Uint8Array | Float32Array>(view: T, copy: (v: T) => T): T {
  return view.byteOffset === 0 && view.byteLength === view.buffer.byteLength && view.buffer instanceof ArrayBuffer ? view : copy(view);
}

export async function startWorkPool(size = 1): Promise<WorkPool> {
  if (!Number.isInteger(size) || size < 1) throw new RangeError(`work pool: size must be a positive integer, got ${size}`);
  let closed = false;
  let nextId = 1;
  const threads: Thread[] = await Promise.all(
    Array.from({ length: size }, async (_, index) => {
      const worker = tsWorker(new URL('./work-thread.ts', import.meta.url));
      await new Promise<void>((resolve, reject) => {
        worker.once('message', () => resolve());
        worker.once('error', reject);
      });
      const thread: Thread = { index, worker, pending: new Map(), heavy: 0 };
      worker.on('message', (reply: WorkReply) => {
        const p = thread.pending.get(reply.id);
        if (!p) return;
        thread.pending.delete(reply.id);
        if (reply.ok) p.resolve(reply);
        else p.reject(reply.formatError ? new WeightsFormatError(reply.message) : new Error(reply.message));
      });
      const failAll = (err: Error) => {
        for (const p of thread.pending.values()) p.reject(err);
        thread.pending.clear();
      };
      worker.on('error', (err) => failAll(new Error(`work thread failed: ${err.message}`)));
      worker.on('exit', (code) => {
        if (!closed) failAll(new Error(`work thread exited with code ${code}`));
        const i = threads.indexOf(thread);
        if (i >= 0) threads.splice(i, 1);
      });
      return thread;
    }),
  );

  /** a light job, to the thread it concerns */
  const submit = (job: WorkJob, transfer: ArrayBuffer[], thread: Thread | undefined): Promise<Done> => {
    if (closed) return Promise.reject(new Error('work pool: closed'));
    if (!thread || !threads.includes(thread)) return Promise.reject(new Error('work pool: no thread left'));
    return new Promise<Done>((resolve, reject) => {
      thread.pending.set(job.id, { resolve, reject });
      thread.worker.postMessage(job, transfer);
    });
  };
  const waiting: { job: WorkJob; transfer: ArrayBuffer[]; resolve: (r: { done: Done; thread: number }) => void; reject: (err: Error) => void }[] = [];
  const pump = (): void => {
    while (waiting.length) {
      if (closed || threads.length === 0) {
        for (const w of waiting.splice(0)) w.reject(new Error(closed ? 'work pool: closed' : 'work pool: no thread left'));
        return;
      }
      const thread = threads.filter((t) => t.heavy < HEAVY_PER_THREAD).sort((a, b) => a.heavy - b.heavy)[0];
      if (!thread) return;
      const w = waiting.shift()!;
      thread.heavy++;
      submit(w.job, w.transfer, thread).then(
        (done) => {
          thread.heavy--;
          w.resolve({ done, thread: thread.index });
          pump();
        },
        (err: Error) => {
          thread.heavy--;
          w.reject(err);
          pump();
        },
      );
    }
  };
  /** a validation or a delta, to the least busy thread as soon as one has room */
  const heavy = (job: WorkJob, transfer: ArrayBuffer[]): Promise<{ done: Done; thread: number }> =>
    new Promise((resolve, reject) => {
      if (closed) return reject(new Error('work pool: closed'));
      waiting.push({ job, transfer, resolve, reject });
      pump();
    });

  const validate: UpdateValidator = async (payload, specs, config) => {
    const bytes = own(payload, (v) => new Uint8Array(v)); // a copy (a Buffer's slice() would share memory)
    const { done: r } = await heavy({ kind: 'validate', id: nextId++, payload: bytes, specs, config }, [bytes.buffer as ArrayBuffer]);
    if (r.kind !== 'validate') throw new Error('work pool: a validation came back as something else');
    return { delta: r.delta, norm: r.norm, clipped: r.clipped, sketch: r.sketch } satisfies ValidatedUpdate;
  };

  // the target is the live global model: always copied; the base was decoded for this delta alone
  const encodeDelta: DeltaEncoder = async (base, target, baseVersion, targetVersion) => {
    const b = own(base, (v) => v.slice());
    const t = target.slice();
    const { done: r } = await heavy({ kind: 'delta', id: nextId++, base: b, target: t, baseVersion, targetVersion }, [b.buffer as ArrayBuffer, t.buffer as ArrayBuffer]);
    if (r.kind !== 'delta') throw new Error('work pool: a delta came back as something else');
    return r.bytes;
  };

  // a lossy downlink's step: every input copied (the base is the live global model)
  const quantizeStep: StepQuantizer = async (base, target, residual, config, seed) => {
    const b = base.values.slice();
    const t = target.slice();
    const r = residual?.slice();
    const { done: s } = await heavy({ kind: 'step', id: nextId++, specs: base.specs, base: b, target: t, residual: r, config, seed }, [b.buffer as ArrayBuffer, t.buffer as ArrayBuffer, ...(r ? [r.buffer as ArrayBuffer] : [])]);
    if (s.kind !== 'step') throw new Error('work pool: a model step came back as something else');
    return { payload: s.payload, values: s.values, residual: s.residual };
  };

  const failedAdds = new Map<string, Error>();
  /** the threads holding a share of each round's sum */
  const holders = new Map<string, Set<number>>();
  const sums: ThreadSums = {
    async validate(payload, specs, config) {
      const bytes = own(payload, (v) => new Uint8Array(v));
      const id = nextId++;
      const { done: r, thread } = await heavy({ kind: 'validate', id, payload: bytes, specs, config, keep: true }, [bytes.buffer as ArrayBuffer]);
      if (r.kind !== 'kept') throw new Error('work pool: a kept validation came back as something else');
      return { kept: { thread, id }, norm: r.norm, clipped: r.clipped, sketch: r.sketch };
    },
    add(kept, key, weight) {
      const thread = threads.find((t) => t.index === kept.thread);
      holders.set(key, (holders.get(key) ?? new Set()).add(kept.thread));
      submit({ kind: 'add', id: nextId++, of: kept.id, key, weight }, [], thread).catch((err: Error) => failedAdds.set(key, err));
    },
    drop(kept) {
      const thread = threads.find((t) => t.index === kept.thread);
      if (thread) submit({ kind: 'drop', id: nextId++, of: kept.id }, [], thread).catch(() => undefined);
    },
    async take(key, size) {
      // a thread handles its messages in order: every add sent before this take is in its share
      const holding = holders.get(key) ?? new Set<number>();
      const parts = await Promise.all(threads.filter((t) => holding.has(t.index)).map((t) => submit({ kind: 'take', id: nextId++, key, size }, [], t)));
      const failed = failedAdds.get(key);
      const lost = [...holding].filter((i) => !threads.some((t) => t.index === i));
      failedAdds.delete(key);
      holders.delete(key);
      if (failed) throw new Error(`an accepted update could not be added to the round's sum: ${failed.message}`);
      if (lost.length) throw new Error('a work thread holding part of the round\'s sum exited');
      return parts.map((r) => {
        if (r.kind !== 'sum') throw new Error('work pool: a sum came back as something else');
        return r.partial;
      });
    },
  };

  return {
    validate,
    encodeDelta,
    quantizeStep,
    sums,
    load: () => threads.map((t) => t.pending.size),
    close: async () => {
      closed = true;
      for (const w of waiting.splice(0)) w.reject(new Error('work pool: closed'));
      for (const t of threads) for (const p of t.pending.values()) p.reject(new Error('work pool: closed'));
      await Promise.all(threads.map((t) => t.worker.terminate()));
    },
  };
}
