/**
 * One of ten devices sends a scaled, sign-flipped update every round (−10 × its honest Δ).
 * Without a defence FedAvg is wrecked; with the trimmed mean the final accuracy stays within
 * 1 pp of the same federation with every device honest.
 */
import { beforeAll, describe, expect, it } from 'vitest';
import type { RunConfigInput } from '../shared/schemas.ts';
import { decodeWeights, encodeWeights } from '../shared/weights.ts';
import type { BeforeSubmit } from '../web-client/fl/client.ts';
import { launch, runEnded, startServer, testDevice, useWasm, type TestDevice } from './support/server.ts';

const BASE: RunConfigInput = { rounds: 5, clientsPerRound: 10, minUpdates: 10, overSelect: 1, localEpochs: 2, batchSize: 10, learningRate: 0.1, roundTimeoutMs: 60_000, seed: 3 };
/** The attacker trains honestly, then sends −10 × its update. */
const flip: BeforeSubmit = async (s) => {
  const d = decodeWeights(s.delta);
  return { ...s, delta: encodeWeights({ specs: d.specs, values: d.values.map((v) => -10 * v) }) };
};

async function finalAccuracy(config: RunConfigInput, attacker: boolean): Promise<number> {
  const server = await startServer({ evalLimit: 2000 });
  const devices: TestDevice[] = [];
  try {
    for (let i = 0; i < 10; i++) {
      const d = await testDevice(server.url, i, { examples: 300, heldOut: 0.05, ...(attacker && i === 9 ? { beforeSubmit: flip } : {}) });
      await d.join();
      devices.push(d);
    }
    const id = await launch(server, config);
    const run = await runEnded(server, id, 120_000);
    expect(run.status, run.reason ?? '').toBe('done');
    return server.db.listRounds(id).at(-1)!.testAccuracy!;
  } finally {
    await Promise.all(devices.map((d) => d.dispose()));
    await server.close();
  }
}

describe('a poisoning device', () => {
  beforeAll(useWasm);

  it('wrecks plain FedAvg, and the trimmed mean holds within 1 pp of the honest run', async () => {
    const honest = await finalAccuracy(BASE, false);
    const undefended = await finalAccuracy(BASE, true);
    const defended = await finalAccuracy({ ...BASE, aggregation: 'trimmed-mean', trimFraction: 0.1 }, true);
    console.log(`final test accuracy: honest ${honest}, attacked ${undefended}, attacked + trimmed mean ${defended}`);
    expect(honest).toBeGreaterThan(0.85);
    expect(undefended).toBeLessThan(honest - 0.3);
    expect(Math.abs(defended - honest)).toBeLessThanOrEqual(0.01);
  }, 300_000);
});
