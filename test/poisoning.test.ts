/**
 * One of ten devices sends a scaled, sign-flipped update every round (−10 × its honest Δ).
 * Without a defence FedAvg is wrecked; with the trimmed mean the final accuracy stays within
 * 1 pp of the same federation with every device honest.
 */
import { beforeAll, describe, expect, it } from 'vitest';
import type { RunConfigInput } from '../shared/schemas.ts';
import { ADMIN_TOKEN, connect, NodeDevice, startServer, until, useWasm } from './support/server.ts';

const BASE: RunConfigInput = { rounds: 5, clientsPerRound: 10, minUpdates: 10, overSelect: 1, localEpochs: 2, batchSize: 10, learningRate: 0.1, roundTimeoutMs: 60_000, seed: 3 };
const flip = (d: Float32Array) => d.map((v) => -10 * v);

async function finalAccuracy(config: RunConfigInput, attacker: boolean): Promise<number> {
  const server = await startServer({ evalLimit: 2000 });
  const devices: NodeDevice[] = [];
  try {
    for (let i = 0; i < 10; i++) {
      const d = new NodeDevice(await connect(server.url), `poison-device-${i}`, i * 1000, 300, attacker && i === 9 ? flip : undefined);
      await d.join();
      devices.push(d);
    }
    const res = await fetch(`${server.url}/api/runs`, { method: 'POST', headers: { authorization: `Bearer ${ADMIN_TOKEN}`, 'content-type': 'application/json' }, body: JSON.stringify(config) });
    const { id } = (await res.json()) as { id: number };
    const run = await until(() => {
      const r = server.store.getRun(id);
      return r?.status !== 'running' ? r : undefined;
    }, 120_000, 'the run to finish');
    expect(run.status, run.reason ?? '').toBe('done');
    return server.store.listRounds(id).at(-1)!.testAccuracy!;
  } finally {
    for (const d of devices) d.dispose();
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
