/**
 * A server work thread: decodes, checks and clips updates (fl/validate.ts), keeps a share of a
 * round's FedAvg sum, and encodes model deltas for downloads (model-delta.ts), off the server's
 * event loop. Inputs arrive in buffers of their own (transferred), and results go back the same way.
 *
 * A kept update waits here for the federation's verdict: added to its round's running sum (with
 * the weight the coordinator gave it) or dropped; the round's share of the sum leaves once, when
 * the round is aggregated — O(model) per round and thread, whatever the number of updates.
 */
import { parentPort } from 'node:worker_threads';
import { WeightedDeltaSum } from '../shared/fedavg.ts';
import { encodeModelDelta } from '../shared/model-delta.ts';
import { WeightsFormatError } from '../shared/weights.ts';
import { validateUpdate } from './fl/validate.ts';
import type { WorkJob, WorkReply } from './work-pool.ts';

const port = parentPort;
if (!port) throw new Error('work-thread: must run as a worker thread');

const kept = new Map<number, Float32Array>();
const sums = new Map<string, WeightedDeltaSum>();

function run(job: WorkJob): WorkReply {
  switch (job.kind) {
    case 'validate': {
      const v = validateUpdate(job.payload, job.specs, job.config);
      if (!job.keep) return { id: job.id, ok: true, kind: 'validate', delta: v.delta, norm: v.norm, clipped: v.clipped };
      kept.set(job.id, v.delta);
      return { id: job.id, ok: true, kind: 'kept', norm: v.norm, clipped: v.clipped };
    }
    case 'add': {
      const delta = kept.get(job.of);
      if (!delta) throw new Error(`work thread: no kept update ${job.of}`);
      kept.delete(job.of);
      let sum = sums.get(job.key);
      if (!sum) sums.set(job.key, (sum = new WeightedDeltaSum(delta.length)));
      sum.add(delta, job.weight);
      return { id: job.id, ok: true, kind: 'done' };
    }
    case 'drop':
      kept.delete(job.of);
      return { id: job.id, ok: true, kind: 'done' };
    case 'take': {
      const p = sums.get(job.key)?.partial() ?? { sum: new Float64Array(job.size), weight: 0, updates: 0 };
      sums.delete(job.key);
      return { id: job.id, ok: true, kind: 'sum', partial: p };
    }
    case 'delta':
      return { id: job.id, ok: true, kind: 'delta', bytes: encodeModelDelta(job.base, job.target, job.baseVersion, job.targetVersion) };
  }
}

function transfers(reply: WorkReply): ArrayBuffer[] {
  if (!reply.ok) return [];
  if (reply.kind === 'validate') return [reply.delta.buffer as ArrayBuffer];
  if (reply.kind === 'delta') return [reply.bytes.buffer as ArrayBuffer];
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
