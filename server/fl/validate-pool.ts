/**
 * Update validation in worker threads: decoding, the value checks, the norm and the clipping of an
 * update (validate.ts) are the server's largest cost per update — about 20 ms for the paper's CNN —
 * so with many large updates in a round they would hold the event loop that every device's
 * connection shares. Here each update goes to the least busy of `size` threads; the main thread
 * hands the payload over (its buffer is transferred, so the caller must not use it afterwards) and
 * takes the Δ back.
 */
import type { Worker } from 'node:worker_threads';
import type { RunConfig } from '../../shared/schemas.ts';
import { WeightsFormatError, type TensorSpec } from '../../shared/weights.ts';
import type { UpdateValidator } from '../federation.ts';
import { tsWorker } from '../ts-worker.ts';
import type { ValidatedUpdate } from './validate.ts';

export interface ValidateJob {
  id: number;
  payload: Uint8Array;
  specs: readonly TensorSpec[];
  config: RunConfig;
}

export type ValidateReply = { id: number; ok: true; delta: Float32Array; norm: number; clipped: boolean } | { id: number; ok: false; formatError: boolean; message: string };

interface Thread {
  worker: Worker;
  pending: Map<number, { resolve: (v: ValidatedUpdate) => void; reject: (err: Error) => void }>;
}

export interface ValidatorPool {
  validate: UpdateValidator;
  /** updates being validated in each thread */
  load(): number[];
  close(): Promise<void>;
}

export async function startValidatorPool(size = 1): Promise<ValidatorPool> {
  if (!Number.isInteger(size) || size < 1) throw new RangeError(`validator pool: size must be a positive integer, got ${size}`);
  let closed = false;
  let nextId = 1;
  const threads: Thread[] = await Promise.all(
    Array.from({ length: size }, async () => {
      const worker = tsWorker(new URL('./validate-worker.ts', import.meta.url));
      await new Promise<void>((resolve, reject) => {
        worker.once('message', () => resolve());
        worker.once('error', reject);
      });
      const thread: Thread = { worker, pending: new Map() };
      worker.on('message', (reply: ValidateReply) => {
        const p = thread.pending.get(reply.id);
        if (!p) return;
        thread.pending.delete(reply.id);
        if (reply.ok) p.resolve({ delta: reply.delta, norm: reply.norm, clipped: reply.clipped });
        else p.reject(reply.formatError ? new WeightsFormatError(reply.message) : new Error(reply.message));
      });
      const failAll = (err: Error) => {
        for (const p of thread.pending.values()) p.reject(err);
        thread.pending.clear();
      };
      worker.on('error', (err) => failAll(new Error(`validator thread failed: ${err.message}`)));
      worker.on('exit', (code) => {
        if (!closed) failAll(new Error(`validator thread exited with code ${code}`));
        const i = threads.indexOf(thread);
        if (i >= 0) threads.splice(i, 1);
      });
      return thread;
    }),
  );

  const validate: UpdateValidator = (payload, specs, config) => {
    if (closed) return Promise.reject(new Error('validator pool: closed'));
    const thread = threads.reduce<Thread | undefined>((best, t) => (!best || t.pending.size < best.pending.size ? t : best), undefined);
    if (!thread) return Promise.reject(new Error('validator pool: no thread left'));
    const id = nextId++;
    // The payload goes to the thread without a copy when it is the whole of its buffer (a large
    // socket.io attachment is): the caller hands it over and must not read it again. A view into a
    // larger buffer (a small message in Node's pool) is copied first.
    const whole = payload.byteOffset === 0 && payload.byteLength === payload.buffer.byteLength && payload.buffer instanceof ArrayBuffer;
    const own = whole ? payload : new Uint8Array(payload);
    return new Promise<ValidatedUpdate>((resolve, reject) => {
      thread.pending.set(id, { resolve, reject });
      thread.worker.postMessage({ id, payload: own, specs, config } satisfies ValidateJob, [own.buffer as ArrayBuffer]);
    });
  };

  return {
    validate,
    load: () => threads.map((t) => t.pending.size),
    close: async () => {
      closed = true;
      for (const t of threads) for (const p of t.pending.values()) p.reject(new Error('validator pool: closed'));
      await Promise.all(threads.map((t) => t.worker.terminate()));
    },
  };
}
