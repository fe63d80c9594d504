/**
 * A worker thread running one of the server's TypeScript modules: the thread registers tsx's loader,
 * then imports the entry. Used by the simulation's device workers, the server's evaluator and its
 * update validators.
 */
import { Worker } from 'node:worker_threads';

export function tsWorker(entry: URL, workerData?: unknown): Worker {
  const boot = `
    const { register } = await import('tsx/esm/api');
    register();
    await import(${JSON.stringify(entry.href)});
  `;
  return new Worker(boot, { eval: true, workerData });
}
