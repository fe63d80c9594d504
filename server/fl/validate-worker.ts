/**
 * A validator thread: decodes, checks and clips updates (validate.ts) off the server's event loop.
 * The payload arrives in a buffer of its own (transferred), and the dense Δ goes back the same way.
 */
import { parentPort } from 'node:worker_threads';
import { WeightsFormatError } from '../../shared/weights.ts';
import { validateUpdate } from './validate.ts';
import type { ValidateJob, ValidateReply } from './validate-pool.ts';

const port = parentPort;
if (!port) throw new Error('validate-worker: must run as a worker thread');

port.on('message', (job: ValidateJob) => {
  let reply: ValidateReply;
  try {
    const v = validateUpdate(job.payload, job.specs, job.config);
    reply = { id: job.id, ok: true, delta: v.delta, norm: v.norm, clipped: v.clipped };
  } catch (err) {
    reply = { id: job.id, ok: false, formatError: err instanceof WeightsFormatError, message: err instanceof Error ? err.message : String(err) };
  }
  port.postMessage(reply, reply.ok ? [reply.delta.buffer as ArrayBuffer] : []);
});
port.postMessage({ ready: true });
