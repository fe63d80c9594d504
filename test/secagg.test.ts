import { combine, split } from 'shamir-secret-sharing';
import { describe, expect, it } from 'vitest';
import { maskStream } from '../shared/secagg/crypto.ts';
import { SecAggDevice } from '../shared/secagg/device.ts';
import { planProblem, ringNeighbours, roundContext, roundShape } from '../shared/secagg/plan.ts';
import { addInto, dequantizeMean, quantErrorBound, quantizeInput, quantProblem, quantScale, type QuantBounds } from '../shared/secagg/quantize.ts';
import { createRng } from '../shared/rng.ts';
import { verifyAdvert } from '../server/fl/secagg.ts';
import { chiSquareOfBytes, identities, secAggRound, type Stage } from './support/secagg.ts';

const randomInputs = (n: number, d: number, seed = 1): Uint32Array[] => {
  const rng = createRng(seed);
  return Array.from({ length: n }, () => Uint32Array.from({ length: d }, () => Math.floor(rng() * 2 ** 20)));
};
const plainSum = (inputs: Uint32Array[], keep: (i: number) => boolean): Uint32Array => {
  const s = new Uint32Array(inputs[0]!.length);
  inputs.forEach((x, i) => keep(i) && addInto(s, x));
  return s;
};

describe('secure aggregation: the masks', () => {
  it('cancel: the unmasked sum is the sum of the inputs, with nobody dropping', async () => {
    const ids = await identities(6);
    const inputs = randomInputs(6, 257);
    const r = await secAggRound(ids, inputs);
    expect(r.shape).toEqual({ k: 5, t: 3 }); // six devices: everyone is a neighbour
    expect(Array.from(r.sum)).toEqual(Array.from(plainSum(inputs, () => true)));
    // …while the sum of what the server received is not that
    expect(Array.from(r.masked)).not.toEqual(Array.from(plainSum(inputs, () => true)));
  });

  it('cancel for every pattern of one dropout per neighbourhood, at every stage (and on P-256)', async () => {
    const ids = await identities(5);
    const inputs = randomInputs(5, 33, 2);
    const stages: Stage[] = ['keys', 'shares', 'input', 'reveal'];
    for (const curve of ['X25519', 'P-256'] as const) {
      for (const stage of stages) {
        for (const [i, who] of ids.entries()) {
          const r = await secAggRound(ids, inputs, { dropAt: { [who.deviceId]: stage }, curve });
          // a device that dropped before its input is not in the sum; one that dropped while unmasking is
          const counted = stage === 'reveal';
          expect([...r.counted].includes(who.deviceId), `${curve} ${stage} ${i}`).toBe(counted);
          expect(Array.from(r.sum), `${curve} ${stage} ${i}`).toEqual(Array.from(plainSum(inputs, (j) => j !== i || counted)));
        }
      }
    }
  });

  it('cancel for every pattern of two dropouts, each at any stage, in a round of 6 (k = 5, t = 3: two may fall out)', async () => {
    const ids = await identities(6);
    const inputs = randomInputs(6, 17, 5);
    const stages: Stage[] = ['keys', 'shares', 'input', 'reveal'];
    let rounds = 0;
    for (let a = 0; a < 6; a++) {
      for (let b = a + 1; b < 6; b++) {
        for (const sa of stages) {
          for (const sb of stages) {
            const r = await secAggRound(ids, inputs, { dropAt: { [ids[a]!.deviceId]: sa, [ids[b]!.deviceId]: sb } });
            const inSum = (j: number) => (j !== a && j !== b) || (j === a ? sa : sb) === 'reveal';
            expect(Array.from(r.sum), `${a}@${sa} ${b}@${sb}`).toEqual(Array.from(plainSum(inputs, inSum)));
            rounds++;
          }
        }
      }
    }
    expect(rounds).toBe(15 * 16);
  }, 120_000);

  it('cancel with two devices dropping after sharing in a round of 10 (k = 8, t = 5)', async () => {
    const ids = await identities(10);
    const inputs = randomInputs(10, 65, 3);
    const r = await secAggRound(ids, inputs, { dropAt: { [ids[2]!.deviceId]: 'input', [ids[7]!.deviceId]: 'input', [ids[4]!.deviceId]: 'reveal' } });
    expect(r.shape).toEqual({ k: 8, t: 5 });
    expect(Array.from(r.sum)).toEqual(Array.from(plainSum(inputs, (j) => j !== 2 && j !== 7)));
  });

  it('fail with a reason when too few shares of a dropped device survive', async () => {
    const ids = await identities(4); // k = 3, t = 2: two reveals must come for each secret
    const inputs = randomInputs(4, 9, 4);
    const r = secAggRound(ids, inputs, { dropAt: { [ids[0]!.deviceId]: 'input', [ids[1]!.deviceId]: 'reveal', [ids[2]!.deviceId]: 'reveal' } });
    await expect(r).rejects.toThrow(/[01] of the 2 shares needed arrived/);
  });
});

describe('secure aggregation: a device that reveals a wrong share', () => {
  it('is outvoted when more than t shares came, and fails the unmasking when only t did', async () => {
    const ids = await identities(6); // k = 5, t = 3
    const inputs = randomInputs(6, 17, 6);
    const r = await secAggRound(ids, inputs);
    const { unmask } = await import('../server/fl/secagg.ts');
    const liar = ids[0]!.deviceId;
    const tampered = new Map([...r.captured.reveals.entries()].map(([i, reveal]) => [ids[i]!.deviceId, reveal]));
    const lie = tampered.get(liar)!;
    const forged = { ...lie, seeds: lie.seeds.map((s) => ({ of: s.of, share: s.share.map((b, j) => (j === 0 ? b ^ 0xff : b)) })) };
    const base = { context: r.context, curve: 'X25519' as const, threshold: r.shape.t, adverts: r.adverts, neighbours: r.neighbours, shared: new Set(ids.map((i) => i.deviceId)), inputs: r.counted, sum: r.masked };
    // five shares of each seed, one of them wrong: leaving each out in turn finds the commitment
    const sum = await unmask({ ...base, reveals: new Map([...tampered, [liar, forged]]) });
    expect(Array.from(sum)).toEqual(Array.from(plainSum(inputs, () => true)));
  });

  it('fails the unmasking, naming the secret, when a wrong share is one of only t', async () => {
    const ids = await identities(4); // k = 3, t = 2: every secret is held by the other three
    const inputs = randomInputs(4, 17, 7);
    const r = await secAggRound(ids, inputs);
    const { unmask } = await import('../server/fl/secagg.ts');
    const reveals = new Map([...r.captured.reveals.entries()].map(([i, reveal]) => [ids[i]!.deviceId, reveal]));
    const lie = reveals.get(ids[0]!.deviceId)!;
    reveals.set(ids[0]!.deviceId, { ...lie, seeds: lie.seeds.map((s) => ({ of: s.of, share: s.share.map((b, j) => (j === 0 ? b ^ 0xff : b)) })) });
    reveals.delete(ids[3]!.deviceId); // an honest reveal that never came: every secret now has exactly t = 2 shares
    await expect(unmask({ context: r.context, curve: 'X25519', threshold: r.shape.t, adverts: r.adverts, neighbours: r.neighbours, shared: new Set(ids.map((i) => i.deviceId)), inputs: r.counted, reveals, sum: r.masked })).rejects.toThrow(/the self-mask seed of dev-.*: the shares revealed do not rebuild the committed secret/);
  });
});

describe('secure aggregation: secrets and bounds', () => {
  it('rebuilds a secret from exactly t shares, and not from t − 1', async () => {
    const secret = crypto.getRandomValues(new Uint8Array(32));
    const shares = await split(secret, 7, 4);
    expect(Array.from(await combine(shares.slice(2, 6)))).toEqual(Array.from(secret));
    expect(Array.from(await combine(shares.slice(0, 3)))).not.toEqual(Array.from(secret));
  });

  it('quantizes within one level, unbiased, and back to the weighted mean', () => {
    const b: QuantBounds = { maxInputs: 13, maxWeight: 1000, clipNorm: 5 };
    const rng = createRng(9);
    const deltas = Array.from({ length: 13 }, () => Float32Array.from({ length: 200 }, () => (rng() - 0.5) * 0.1));
    const weights = deltas.map((_, i) => 100 + 50 * i);
    const sum = new Uint32Array(201);
    deltas.forEach((d, i) => addInto(sum, quantizeInput(d, weights[i]!, b, rng)));
    const { mean, totalWeight } = dequantizeMean(sum, 13, b);
    expect(totalWeight).toBe(weights.reduce((a, x) => a + x, 0));
    const bound = quantErrorBound(b, 13, totalWeight);
    for (let c = 0; c < 200; c++) {
      const exact = deltas.reduce((a, d, i) => a + d[c]! * weights[i]!, 0) / totalWeight;
      expect(Math.abs(mean[c]! - exact)).toBeLessThanOrEqual(bound + 1e-9);
    }
    expect(bound).toBeLessThan(1e-6);
  });

  it('cannot wrap: the extreme inputs of a full round still sum exactly', () => {
    const b: QuantBounds = { maxInputs: 100, maxWeight: 1000, clipNorm: 2 };
    const extreme = Float32Array.from([2, -2, 2]); // every coordinate at the clip bound (clamped beyond it)
    const sum = new Uint32Array(4);
    for (let i = 0; i < 100; i++) addInto(sum, quantizeInput(i % 2 ? extreme : Float32Array.from([5, -5, 5]), 1000, b, createRng(i)));
    const { mean } = dequantizeMean(sum, 100, b);
    expect(mean[0]).toBeCloseTo(2, 5);
    expect(mean[1]).toBeCloseTo(-2, 5);
    expect(quantScale(b)).toBeGreaterThan(0);
  });

  it('refuses settings that could wrap the sum or leave no precision', () => {
    expect(quantProblem({ maxInputs: 10, maxWeight: 1000, clipNorm: 0 })).toMatch(/clipNorm > 0/);
    expect(quantProblem({ maxInputs: 60_000, maxWeight: 60_000, clipNorm: 1 })).toMatch(/wrap/);
    expect(quantProblem({ maxInputs: 1_000_000, maxWeight: 1, clipNorm: 1 })).toMatch(/12 bits/);
    expect(quantProblem({ maxInputs: 130, maxWeight: 1000, clipNorm: 10 })).toBeUndefined();
    expect(() => dequantizeMean(Uint32Array.from([0, 5000]), 2, { maxInputs: 2, maxWeight: 1000, clipNorm: 1 })).toThrow(/outside what 2 devices can hold/);
  });

  it('shapes neighbourhoods: symmetric rings, majority thresholds, refusals that name the field', () => {
    const ids = Array.from({ length: 20 }, (_, i) => `d${String(i).padStart(2, '0')}`);
    const ring = ringNeighbours(ids, roundShape({ neighbours: 0, threshold: 0 }, 20).k, (xs) => xs.reverse());
    for (const [id, near] of ring) {
      expect(near).toHaveLength(10);
      for (const n of near) expect(ring.get(n)).toContain(id);
    }
    expect(roundShape({ neighbours: 0, threshold: 0 }, 100)).toEqual({ k: 14, t: 8 });
    expect(roundShape({ neighbours: 0, threshold: 0 }, 2).problem).toMatch(/at least 3 devices/);
    expect(planProblem(5, 0, 10)).toEqual({ field: 'secAggNeighbours', message: expect.stringMatching(/even/) });
    expect(planProblem(6, 3, 10)).toEqual({ field: 'secAggThreshold', message: expect.stringMatching(/more than half/) });
    expect(planProblem(6, 7, 10)).toEqual({ field: 'secAggThreshold', message: expect.stringMatching(/at most the 6/) });
    expect(planProblem(6, 4, 10)).toBeUndefined();
  });
});

describe('secure aggregation: what the server sees', () => {
  it('masked inputs look uniform and differ from the plain input; the sum is exact', async () => {
    const ids = await identities(5);
    const d = 4096;
    // very non-uniform plain inputs: small signed integers, as quantized updates are
    const rng = createRng(5);
    const inputs = Array.from({ length: 5 }, () => Uint32Array.from({ length: d }, () => (Math.round((rng() - 0.5) * 200) >>> 0)));
    const r = await secAggRound(ids, inputs);
    const chiSquare = chiSquareOfBytes;
    // 255 degrees of freedom: p = 0.001 at 330.5
    for (const [i, captured] of r.captured.inputs.entries()) {
      expect(chiSquare(captured.payload), `masked input ${i}`).toBeLessThan(330.5);
      expect(chiSquare(new Uint8Array(inputs[i]!.buffer))).toBeGreaterThan(10_000);
      // no word of the plain input shows through more often than chance (1 in 2^32)
      const masked = new Uint32Array(captured.payload.buffer);
      expect(masked.filter((w, j) => w === inputs[i]![j]).length).toBeLessThanOrEqual(1);
    }
    // the shares and reveals it relays hold no plain input either: nothing it received contains one
    const everything = [...r.captured.shares.flatMap((m) => m.shares.map((s) => s.sealed)), ...r.captured.reveals.flatMap((x) => [...x.seeds, ...x.keys].map((s) => s.share))];
    expect(everything.length).toBeGreaterThan(0);
    expect(Array.from(r.sum)).toEqual(Array.from(plainSum(inputs, () => true)));
  });

  it('a mask stream is the same bytes for the same seed, and differs for another', async () => {
    const seed = new Uint8Array(32).fill(7);
    expect(Array.from(await maskStream(seed, 8))).toEqual(Array.from(await maskStream(seed, 8)));
    expect(Array.from(await maskStream(new Uint8Array(32).fill(8), 8))).not.toEqual(Array.from(await maskStream(seed, 8)));
  });
});

describe('secure aggregation: forged and replayed messages', () => {
  it('refuses keys signed by another device, or for another round', async () => {
    const [alice, mallory] = await identities(2);
    const ctx = roundContext(1, 2, 1);
    const { advert } = await SecAggDevice.start(alice!, ctx, 'X25519');
    expect(await verifyAdvert(ctx, advert, alice!.publicKey, 'X25519')).toBeUndefined();
    expect(await verifyAdvert(ctx, advert, mallory!.publicKey, 'X25519')).toMatch(/does not belong/);
    expect(await verifyAdvert(roundContext(1, 3, 1), advert, alice!.publicKey, 'X25519')).toMatch(/not signed .* for this round/);
    const forged = { ...advert, maskPublicKey: (await SecAggDevice.start(mallory!, ctx, 'X25519')).advert.maskPublicKey };
    expect(await verifyAdvert(ctx, forged, alice!.publicKey, 'X25519')).toMatch(/not signed/);
  });

  it('a device refuses a neighbour whose keys are forged, and never reveals both secrets of one neighbour', async () => {
    const ids = await identities(4);
    const ctx = roundContext(1, 1, 1);
    const started = await Promise.all(ids.map((i) => SecAggDevice.start(i, ctx, 'X25519')));
    const relayed = started.map((s, i) => ({ ...s.advert, identityKey: ids[i]!.publicKey }));
    const [me, ...others] = started;
    const forged = [{ ...relayed[1]!, encPublicKey: relayed[2]!.encPublicKey }, relayed[2]!, relayed[3]!];
    await expect(me!.device.share(forged, 2)).rejects.toThrow(/not signed/);
    // an honest setup; then the server asks for both secrets of one neighbour
    const msgs = await Promise.all(started.map((s, i) => s.device.share(relayed.filter((_, j) => j !== i), 2)));
    await me!.device.receive(msgs.slice(1).map((m, j) => ({ peer: others[j]!.advert.deviceId, sealed: m.shares.find((s) => s.peer === ids[0]!.deviceId)!.sealed })));
    const n1 = ids[1]!.deviceId;
    await expect(me!.device.reveal({ survivors: [n1], dropped: [n1] })).rejects.toThrow(/both secrets/);
    await me!.device.reveal({ survivors: [n1], dropped: [] });
    await expect(me!.device.reveal({ survivors: [], dropped: [n1] })).rejects.toThrow(/already unmasked/);
  });
});
