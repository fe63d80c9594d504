/**
 * A pool of device workers (one per core by default). Jobs queue and go to the first free worker;
 * any worker can train any device, since every worker holds the whole data set (shared memory).
 */
import { availableParallelism } from 'node:os';
import type { Worker } from 'node:worker_threads';
import { tsWorker } from '../ts-worker.ts';
import type { MnistSplit } from '../data/mnist.ts';
import type { EvaluateDone, EvaluateJob, TrainDone, TrainJob, WorkerInit, WorkerJob, WorkerReply } from './messages.ts';

type JobInput<J> = J extends WorkerJob ? Omit<J, 'job'> : never;

interface Pending {
  job: WorkerJob;
  resolve: (reply: WorkerReply) => void;
  reject: (err: Error) => void;
}

interface Slot {
  worker: Worker;
  busy: Pending | undefined;
}

function shared(bytes: Uint8Array): Uint8Array {
  const out = new Uint8Array(new SharedArrayBuffer(bytes.byteLength));
  out.set(bytes);
  return out;
}

export class WorkerPool {
  private readonly slots: Slot[] = [];
  private readonly queue: Pending[] = [];
  private nextJob = 1;
  private closed = false;

  private constructor() {}

  /** Starts `size` workers and resolves once each has its TF.js backend ready. */
  static async start(train: MnistSplit, test: MnistSplit, size = availableParallelism()): Promise<WorkerPool> {
    if (!Number.isInteger(size) || size < 1) throw new RangeError(`worker pool: size must be a positive integer, got ${size}`);
    const pool = new WorkerPool();
    const init: WorkerInit = { trainImages: shared(train.images), trainLabels: shared(train.labels), testImages: shared(test.images), testLabels: shared(test.labels) };
    await Promise.all(
      Array.from({ length: size }, async () => {
        const worker = tsWorker(new URL('./device-worker.ts', import.meta.url), init);
        const slot: Slot = { worker, busy: undefined };
        await new Promise<void>((resolve, reject) => {
          const onMessage = (m: WorkerReply) => {
            if (m.type !== 'ready') return;
            worker.off('error', reject);
            resolve();
          };
          worker.once('message', onMessage);
          worker.once('error', reject);
        });
        worker.on('message', (reply: WorkerReply) => pool.settle(slot, reply));
        worker.on('error', (err) => pool.fail(slot, err));
        worker.on('exit', (code) => {
          if (!pool.closed) pool.fail(slot, new Error(`device worker exited with code ${code}`));
        });
        pool.slots.push(slot);
      }),
    );
    return pool;
  }

  get size(): number {
    return this.slots.length;
  }

  train(job: JobInput<TrainJob>): Promise<TrainDone> {
    return this.submit({ ...job, job: this.nextJob++ }) as Promise<TrainDone>;
  }

  evaluate(job: JobInput<EvaluateJob>): Promise<EvaluateDone> {
    return this.submit({ ...job, job: this.nextJob++ }) as Promise<EvaluateDone>;
  }

  private submit(job: WorkerJob): Promise<WorkerReply> {
    if (this.closed) return Promise.reject(new Error('worker pool: closed'));
    return new Promise((resolve, reject) => {
      this.queue.push({ job, resolve, reject });
      this.pump();
    });
  }

  private pump(): void {
    for (const slot of this.slots) {
      if (slot.busy) continue;
      const next = this.queue.shift();
      if (!next) return;
      slot.busy = next;
      // The weights are copied, not transferred: the caller may send the same array to many jobs.
      slot.worker.postMessage(next.job);
    }
  }

  private settle(slot: Slot, reply: WorkerReply): void {
    const pending = slot.busy;
    slot.busy = undefined;
    if (pending) {
      if (reply.type === 'error') pending.reject(new Error(`device worker, job ${reply.job}: ${reply.message}`));
      else pending.resolve(reply);
    }
    this.pump();
  }

  private fail(slot: Slot, err: Error): void {
    const pending = slot.busy;
    slot.busy = undefined;
    pending?.reject(err);
    this.slots.splice(this.slots.indexOf(slot), 1);
    if (this.slots.length === 0) for (const p of this.queue.splice(0)) p.reject(new Error(`worker pool: no worker left (${err.message})`));
  }

  async close(): Promise<void> {
    this.closed = true;
    for (const p of this.queue.splice(0)) p.reject(new Error('worker pool: closed'));
    await Promise.all(this.slots.map((s) => s.worker.terminate()));
  }
}
