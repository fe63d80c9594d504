/**
 * The device's client (web-client/fl/client.ts, in Node on wasm) over many joins and leaves: it
 * builds its model when it trains and frees it when it leaves, so a page that joins and leaves
 * again and again holds a flat number of tensors.
 */
import * as tf from '@tensorflow/tfjs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { launch, startServer, testDevice, until, useWasm, type TestServer } from './support/server.ts';

describe('the device client', () => {
  let server: TestServer;
  beforeAll(async () => {
    await useWasm();
    server = await startServer({ evalLimit: 100 });
  });
  afterAll(async () => server.close());

  it('joins, trains a round and leaves 20 times with a flat tensor count', async () => {
    const device = await testDevice(server.url, 3, { examples: 30, heldOut: 0.2 });
    // Leaving as soon as a round is counted often drops out of the next one: retries are plenty.
    const runId = await launch(server, { rounds: 100, clientsPerRound: 1, minUpdates: 1, overSelect: 1, roundTimeoutMs: 30_000, selectionTimeoutMs: 0, maxRoundRetries: 100 });
    const counts: number[] = [];
    const counted = () => device.client.snapshot.history.filter((h) => h.outcome === 'counted').length;
    for (let i = 0; i < 20; i++) {
      device.client.join();
      await until(() => counted() >= i + 1 || undefined, 30_000, `round ${i + 1} counted on the device`);
      await device.client.leave();
      counts.push(tf.memory().numTensors);
    }
    // Each join built the model again and each leave disposed it: the same tensors after the 1st and the 20th.
    expect(new Set(counts).size, counts.join(', ')).toBe(1);
    expect(server.db.listRounds(runId).filter((r) => r.status === 'completed').length).toBeGreaterThanOrEqual(20);
    expect(device.client.snapshot.history.filter((h) => h.outcome === 'rejected')).toEqual([]);
    await fetch(`${server.url}/api/runs/current/stop`, { method: 'POST', headers: { authorization: 'Bearer test-admin-token' } });
    await device.dispose();
  }, 120_000);
});
