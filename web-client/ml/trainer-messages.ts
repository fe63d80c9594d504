/**
 * The messages between the page and its training worker (train-worker.ts): the page hands it a
 * round and gets back progress and the update; the data never crosses, the worker reads it from
 * the tab's IndexedDB itself.
 */
import type { DeviceRound } from '../../shared/device.ts';
import type { RoundStart } from '../../shared/protocol.ts';
import type { BackendChoice, BackendName } from './backend.ts';

export type TrainerRequest =
  /** choose (or check a forced) backend, and read the tab's data from its database */
  | { type: 'init'; database: string; backend?: BackendName }
  | { type: 'round'; deviceId: string; msg: RoundStart }
  /** the round closed: stop training at the next batch */
  | { type: 'stop' };

export type TrainerReply =
  | { type: 'ready'; choice: BackendChoice; examples: number; heldOut: number }
  | { type: 'phase'; phase: 'evaluating' | 'training' }
  | { type: 'progress'; done: number; total: number; loss: number }
  | { type: 'done'; round: DeviceRound }
  | { type: 'failed'; message: string };

/** The buffers of a finished round, moved rather than copied to the page (each once). */
export function transferablesOf(round: DeviceRound): ArrayBuffer[] {
  const views: unknown[] = [round.submission?.delta, round.residual, round.control, round.delta];
  const buffers = views.filter((v): v is ArrayBufferView => ArrayBuffer.isView(v)).map((v) => v.buffer);
  return [...new Set(buffers.filter((b): b is ArrayBuffer => b instanceof ArrayBuffer))];
}
