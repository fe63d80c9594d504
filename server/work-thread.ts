/**
 * A server work thread: decodes, checks and clips updates (fl/validate.ts) and encodes model deltas
 * for downloads (model-delta.ts), off the server's event loop. Inputs arrive in buffers of their own
 * (transferred), and the results go back the same way.
 */
import { parentPort } from 'node:worker_threads';
import { encodeModelDelta } from '../shared/model-delta.ts';
import { WeightsFormatError } from '../shared/weights.ts';
import { validateUpdate } from './fl/validate.ts';
import type { WorkJob, WorkReply } from './work-pool.ts';

const port = parentPort;
if (!port) throw new Error('work-thread: must run as a worker thread');

function run(job: WorkJob): WorkReply {
  switch (job.kind) {
    case 'validate': {
      const v = validateUpdate(job.payload, job.specs, job.config);
      return { id: job.id, ok: true, kind: 'validate', delta: v.delta, norm: v.norm, clipped: v.clipped };
    }
    case 'delta':
      return { id: job.id, ok: true, kind: 'delta', bytes: encodeModelDelta(job.base, job.target, job.baseVersion, job.targetVersion) };
  }
}

port.on('message', (job: WorkJob) => {
  let reply: WorkReply;
  try {
    reply = run(job);
  } catch (err) {
    reply = { id: job.id, ok: false, formatError: err instanceof WeightsFormatError, message: err instanceof Error ? err.message : String(err) };
  }
  const transfer = !reply.ok ? [] : reply.kind === 'validate' ? [reply.delta.buffer as ArrayBuffer] : [reply.bytes.buffer as ArrayBuffer];
  port.postMessage(reply, transfer);
});
port.postMessage({ ready: true });
