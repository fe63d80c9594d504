/**
 * A server work thread: decodes, checks and clips updates (fl/validate.ts), keeps a share of a
 * round's FedAvg sum, and encodes model deltas for downloads (model-delta.ts), off the server's
 * event loop. Inputs arrive in buffers of their own (transferred), and results go back the same way.
 *
 * A kept update waits here for the federation's verdict (fl/kept-sums.ts).
 */
import { parentPort } from 'node:worker_threads';
import { encodeModelDelta } from '../shared/model-delta.ts';
import { quantizeStep } from '../shared/model-steps.ts';
import { createRng } from '../shared/rng.ts';
import { WeightsFormatError } from '../shared/weights.ts';
import { KeptSums } from './fl/kept-sums.ts';
import { validateUpdate } from './fl/validate.ts';
import type { WorkJob, WorkReply } from './work-pool.ts';

const port = parentPort;
if (!port) throw new Error('work-thread: must run as a worker thread');

const kept = new KeptSums();

function run(job: WorkJob): WorkReply {
  switch (job.kind) {
    case 'validate': {
      const v = validateUpdate(job.payload, job.specs, job.config);
      if (!job.keep) return { id: job.id, ok: true, kind: 'validate', delta: v.delta, norm: v.norm, clipped: v.clipped, sketch: v.sketch };
      kept.keep(job.id, v.delta);
      return { id: job.id, ok: true, kind: 'kept', norm: v.norm, clipped: v.clipped, sketch: v.sketch };
    }
    case 'add':
      kept.add(job.of, job.key, job.weight);
      return { id: job.id, ok: true, kind: 'done' };
    case 'drop':
      kept.drop(job.of);
      return { id: job.id, ok: true, kind: 'done' };
    case 'take':
      return { id: job.id, ok: true, kind: 'sum', partial: kept.take(job.key, job.size) };
    case 'delta':
      return { id: job.id, ok: true, kind: 'delta', bytes: encodeModelDelta(job.base, job.target, job.baseVersion, job.targetVersion) };
    case 'step': {
      const s = quantizeStep({ specs: [...job.specs], values: job.base }, job.target, job.residual, job.config, createRng(job.seed));
      return { id: job.id, ok: true, kind: 'step', payload: s.payload, values: s.values, residual: s.residual };
    }
  }
}

function transfers(reply: WorkReply): ArrayBuffer[] {
  if (!reply.ok) return [];
  if (reply.kind === 'validate') return [reply.delta.buffer as ArrayBuffer];
  if (reply.kind === 'delta') return [reply.bytes.buffer as ArrayBuffer];
  if (reply.kind === 'step') return [reply.payload.buffer as ArrayBuffer, reply.values.buffer as ArrayBuffer, reply.residual.buffer as ArrayBuffer];
  if (reply.kind === 'sum') return [reply.partial.sum.buffer as ArrayBuffer];
  return [];
}

port.on('message', (job: WorkJob) => {
  let reply: WorkReply;
  try {
    reply = run(job);
  } catch (err) {
    reply = { id: job.id, ok: false, formatError: err instanceof WeightsFormatError, message: err instanceof Error ? err.message : String(err) };
  }
  port.postMessage(reply, transfers(reply));
});
port.postMessage({ ready: true });
