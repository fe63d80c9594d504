/**
 * The page's handle on its training worker (train-worker.ts): starts it, and runs a round in it as
 * `runDeviceRound` would on the page — the same result, the same hooks — while the page's main
 * thread stays free. Where a worker cannot start or train (no module workers, a backend that fails
 * there), `start` throws and the page trains on its main thread, saying so.
 */
import type { DeviceRound } from '../../shared/device.ts';
import type { RoundStart } from '../../shared/protocol.ts';
import type { BackendChoice, BackendName } from './backend.ts';
import type { TrainerReply, TrainerRequest } from './trainer-messages.ts';

export interface RoundHooks {
  onPhase?: (phase: 'evaluating' | 'training') => void;
  onProgress?: (done: number, total: number, loss: number) => void;
  /** polled while the worker trains; true stops it at its next batch */
  shouldStop?: () => boolean;
}

/** Runs the device's part of a round somewhere: on the page or in its worker. */
export type RoundRunner = (msg: RoundStart, deviceId: string, hooks: RoundHooks) => Promise<DeviceRound>;

export class WorkerTrainer {
  private pending: { resolve: (r: DeviceRound) => void; reject: (e: Error) => void; hooks: RoundHooks } | undefined;
  private broken: string | undefined;

  private constructor(
    private readonly worker: Worker,
    readonly choice: BackendChoice,
  ) {
    worker.onmessage = (event: MessageEvent<TrainerReply>) => this.onReply(event.data);
    worker.onerror = (event) => this.fail(`the training worker crashed: ${event.message || 'unknown error'}`);
  }

  /** Starts the worker on the tab's database; resolves once it has chosen its backend and read the data. */
  static start(database: string, backend?: BackendName, timeoutMs = 120_000): Promise<WorkerTrainer> {
    return new Promise((resolve, reject) => {
      let worker: Worker;
      try {
        worker = new Worker(new URL('./train-worker.ts', import.meta.url), { type: 'module', name: 'training' });
      } catch (err) {
        reject(err instanceof Error ? err : new Error(String(err)));
        return;
      }
      const timer = setTimeout(() => {
        worker.terminate();
        reject(new Error(`the training worker did not start within ${timeoutMs / 1000} s`));
      }, timeoutMs);
      const done = (err?: Error, choice?: BackendChoice) => {
        clearTimeout(timer);
        worker.onmessage = null;
        worker.onerror = null;
        if (err || !choice) {
          worker.terminate();
          reject(err ?? new Error('the training worker did not say which backend it chose'));
        } else {
          resolve(new WorkerTrainer(worker, choice));
        }
      };
      worker.onmessage = (event: MessageEvent<TrainerReply>) => {
        const r = event.data;
        if (r.type === 'ready') done(undefined, r.choice);
        else if (r.type === 'failed') done(new Error(r.message));
      };
      worker.onerror = (event) => done(new Error(event.message || 'the training worker failed to load'));
      worker.postMessage({ type: 'init', database, ...(backend ? { backend } : {}) } satisfies TrainerRequest);
    });
  }

  readonly run: RoundRunner = (msg, deviceId, hooks) => {
    if (this.broken) return Promise.reject(new Error(this.broken));
    if (this.pending) return Promise.reject(new Error('the training worker is already training a round'));
    return new Promise<DeviceRound>((resolve, reject) => {
      let asked = false;
      // the round may close while the worker trains: tell it once, and it stops at its next batch
      const poll = setInterval(() => {
        if (!asked && hooks.shouldStop?.()) {
          asked = true;
          this.worker.postMessage({ type: 'stop' } satisfies TrainerRequest);
        }
      }, 50);
      const settle = () => {
        clearInterval(poll);
        this.pending = undefined;
      };
      this.pending = {
        hooks,
        resolve: (r) => {
          settle();
          resolve(r);
        },
        reject: (e) => {
          settle();
          reject(e);
        },
      };
      this.worker.postMessage({ type: 'round', deviceId, msg } satisfies TrainerRequest);
    });
  };

  terminate(): void {
    this.fail('the training worker was stopped');
    this.worker.terminate();
  }

  private fail(message: string): void {
    this.broken ??= message;
    this.pending?.reject(new Error(message));
  }

  private onReply(r: TrainerReply): void {
    const p = this.pending;
    if (!p) return;
    switch (r.type) {
      case 'phase':
        p.hooks.onPhase?.(r.phase);
        break;
      case 'progress':
        p.hooks.onProgress?.(r.done, r.total, r.loss);
        break;
      case 'done':
        p.resolve(r.round);
        break;
      case 'failed':
        p.reject(new Error(r.message));
        break;
      case 'ready':
        break;
    }
  }
}
