/**
 * The gradient-inversion demonstration on a fixed seed: device 0's digits come back from its plain
 * update, not from the round's sum, and not from the DP release. The attack's code runs on real
 * updates (the device's own training code), so a change that broke the attack would fail here too.
 */
import { beforeAll, describe, expect, it } from 'vitest';
import { loadMnist } from '../server/data/mnist.ts';
import { runAttack } from '../server/sim/attack.ts';
import { candidateInputs, psnr } from '../shared/privacy/attack.ts';
import { useWasm } from './support/server.ts';

beforeAll(useWasm);

describe('gradient inversion of the 2NN', () => {
  it('reads every digit back from a plain update, and none from the secure sum or the DP release', async () => {
    const r = await runAttack(loadMnist().train, { devices: 10, examples: 8, batch: 8, epochs: 1, lr: 0.1, clipNorm: 1, noiseMultiplier: 1, seed: 1 });
    const [plain, secure, dp] = r.views.map((v) => v.recovery);
    expect(plain!.recovered).toBe(8);
    expect(plain!.meanPsnr).toBeGreaterThan(40);
    expect(secure!.recovered).toBe(0);
    expect(secure!.meanPsnr).toBeLessThan(plain!.meanPsnr - 30);
    expect(dp!.meanPsnr).toBeLessThan(12);
  }, 60_000);

  it('recovers an input exactly from a unit only it activated', () => {
    const x = Float32Array.from({ length: 4 }, (_, i) => i / 4);
    const delta = -0.3; // −η · δ of the only example that moved unit 0
    const layer = { kernel: Float32Array.from([x[0]! * delta, 0, x[1]! * delta, 0, x[2]! * delta, 0, x[3]! * delta, 0]), bias: Float32Array.from([delta, 0]), inputs: 4, units: 2 };
    const [c] = candidateInputs(layer);
    expect(candidateInputs(layer)).toHaveLength(1); // the unit that did not move is skipped
    expect(psnr(x, c!)).toBeGreaterThan(100);
  });
});
