/**
 * The server's work threads. Validating an update (decoding, the value checks, the norm and the
 * clipping; fl/validate.ts) is the server's largest cost per update — about 20 ms for the paper's
 * CNN — and encoding a model delta for a download about 200 ms per base version; with many large
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
import type { DeltaEncoder } from './model-book.ts';
import { tsWorker } from './ts-worker.ts';

export type WorkJob =
  | { kind: 'validate'; id: number; payload: Uint8Array; specs: readonly TensorSpec[]; config: RunConfig }
  | { kind: 'delta'; id: number; base: Float32Array; target: Float32Array; baseVersion: number; targetVersion: number };

export type WorkReply =
  | { id: number; ok: true; kind: 'validate'; delta: Float32Array; norm: number; clipped: boolean }
  | { id: number; ok: true; kind: 'delta'; bytes: Uint8Array }
  | { id: number; ok: false; formatError: boolean; message: string };

type Done = Extract<WorkReply, { ok: true }>;

interface Thread {
  worker: Worker;
  pending: Map<number, { resolve: (r: Done) => void; reject: (err: Error) => void }>;
}

export interface WorkPool {
  validate: UpdateValidator;
  encodeDelta: DeltaEncoder;
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
    Array.from({ length: size }, async () => {
      const worker = tsWorker(new URL('./work-thread.ts', import.meta.url));
      await new Promise<void>((resolve, reject) => {
        worker.once('message', () => resolve());
        worker.once('error', reject);
      });
      const thread: Thread = { worker, pending: new Map() };
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

  const submit = (job: WorkJob, transfer: ArrayBuffer[]): Promise<Done> => {
    if (closed) return Promise.reject(new Error('work pool: closed'));
    const thread = threads.reduce<Thread | undefined>((best, t) => (!best || t.pending.size < best.pending.size ? t : best), undefined);
    if (!thread) return Promise.reject(new Error('work pool: no thread left'));
    return new Promise<Done>((resolve, reject) => {
      thread.pending.set(job.id, { resolve, reject });
      thread.worker.postMessage(job, transfer);
    });
  };

  const validate: UpdateValidator = async (payload, specs, config) => {
    const bytes = own(payload, (v) => new Uint8Array(v)); // a copy (a Buffer's slice() would share memory)
    const r = await submit({ kind: 'validate', id: nextId++, payload: bytes, specs, config }, [bytes.buffer as ArrayBuffer]);
    if (r.kind !== 'validate') throw new Error('work pool: a validation came back as something else');
    return { delta: r.delta, norm: r.norm, clipped: r.clipped } satisfies ValidatedUpdate;
  };

  // the target is the live global model: always copied; the base was decoded for this delta alone
  const encodeDelta: DeltaEncoder = async (base, target, baseVersion, targetVersion) => {
    const b = own(base, (v) => v.slice());
    const t = target.slice();
    const r = await submit({ kind: 'delta', id: nextId++, base: b, target: t, baseVersion, targetVersion }, [b.buffer as ArrayBuffer, t.buffer as ArrayBuffer]);
    if (r.kind !== 'delta') throw new Error('work pool: a delta came back as something else');
    return r.bytes;
  };

  return {
    validate,
    encodeDelta,
    load: () => threads.map((t) => t.pending.size),
    close: async () => {
      closed = true;
      for (const t of threads) for (const p of t.pending.values()) p.reject(new Error('work pool: closed'));
      await Promise.all(threads.map((t) => t.worker.terminate()));
    },
  };
}
