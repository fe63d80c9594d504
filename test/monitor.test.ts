/**
 * Monitoring updates: the sketch's cosine, the KS test, the isolation forest and the control chart
 * on fixed numbers; then the monitor through the federation with a fake clock — a selected device
 * that sends −10 × a plausible update is flagged, and quarantined when the run asks.
 */
import { beforeAll, describe, expect, it } from 'vitest';
import { cosine, countSketch, emptyReference, IsolationForest, ksTest, monitorRound, robustStats, type Features } from '../shared/monitor.ts';
import { createRng } from '../shared/rng.ts';
import { decodeWeights, encodeWeights } from '../shared/weights.ts';
import { flush, Scenario } from './support/scenario.ts';
import { useWasm } from './support/server.ts';

beforeAll(useWasm);

describe('the monitor\'s statistics', () => {
  it('estimates cosines from count sketches, which are linear', () => {
    const rng = createRng(3);
    const a = Float32Array.from({ length: 50_000 }, () => rng() - 0.5);
    const noise = Float32Array.from({ length: 50_000 }, () => rng() - 0.5);
    const b = a.map((v, i) => v + noise[i]!); // cos(a, b) ≈ 1/√2
    const exact = cosine(a, b)!;
    expect(exact).toBeCloseTo(Math.SQRT1_2, 1);
    expect(Math.abs(cosine(countSketch(a), countSketch(b))! - exact)).toBeLessThan(0.05);
    expect(cosine(countSketch(a), countSketch(a.map((v) => -10 * v)))).toBeCloseTo(-1, 5);
    const sum = countSketch(a.map((v, i) => v + b[i]!));
    const parts = countSketch(a).map((v, i) => v + countSketch(b)[i]!);
    for (let i = 0; i < 1024; i += 97) expect(sum[i]).toBeCloseTo(parts[i]!, 2);
    expect(cosine([0, 0], [1, 1])).toBeNull();
  });

  it('the KS test tells one distribution from a shifted one, and not from itself', () => {
    const rng = createRng(5);
    const x = Array.from({ length: 200 }, () => rng());
    const y = Array.from({ length: 200 }, () => rng());
    expect(ksTest(x, y).p).toBeGreaterThan(0.05);
    const shifted = ksTest(x, y.map((v) => v + 0.3));
    expect(shifted.p).toBeLessThan(1e-6);
    expect(ksTest([1, 2, 3], [4, 5, 6]).d).toBe(1);
    expect(robustStats([1, 2, 3, 4, 100])).toEqual({ center: 3, scale: 1.4826 });
  });

  it('the isolation forest scores a far point higher than the crowd', () => {
    const rng = createRng(9);
    const crowd = Array.from({ length: 200 }, () => [rng(), rng(), rng()]);
    const forest = IsolationForest.fit(crowd, { seed: 1 });
    const typical = crowd.slice(0, 20).reduce((a, p) => a + forest.score(p), 0) / 20;
    expect(forest.score([8, 8, 8])).toBeGreaterThan(0.6);
    expect(forest.score([8, 8, 8])).toBeGreaterThan(typical + 0.1);
    expect(typical).toBeLessThan(0.56);
  });

  it('learns in its cold start, then flags a device-round beyond the chart\'s limit, with the false alarms the budget allows', () => {
    const rng = createRng(11);
    const honest = (): Features => ({ norm: 1 + 0.1 * rng(), cosine: 0.5 + 0.1 * rng(), lossBefore: 1 + 0.2 * rng(), lossAfter: 0.5 + 0.1 * rng(), accuracyBefore: 0.7 + 0.1 * rng(), accuracyAfter: 0.85 + 0.05 * rng() });
    const settings = { warmupRounds: 10, falseAlarmsPer100Rounds: 1, quarantine: false };
    let reference = emptyReference();
    for (let r = 0; r < 10; r++) {
      const step = monitorRound(reference, Array.from({ length: 10 }, (_, i) => ({ id: `d${i}`, features: honest() })), settings);
      expect(step.record.phase).toBe('warming up');
      reference = step.reference;
    }
    let falseAlarms = 0;
    for (let r = 0; r < 100; r++) {
      const step = monitorRound(reference, Array.from({ length: 10 }, (_, i) => ({ id: `d${i}`, features: honest() })), settings);
      expect(step.record.phase).toBe('monitoring');
      falseAlarms += step.record.devices.filter((d) => d.reasons.length).length;
    }
    expect(falseAlarms).toBeLessThanOrEqual(5);
    const attacked = monitorRound(reference, [{ id: 'evil', features: { ...honest(), norm: 10, cosine: -0.5 } }, ...Array.from({ length: 9 }, (_, i) => ({ id: `d${i}`, features: honest() }))], settings);
    const evil = attacked.record.devices.find((d) => d.id === 'evil')!;
    expect(evil.reasons.join('; ')).toMatch(/norm z = .* beyond/);
    expect(evil.isolation).toBeGreaterThan(0);
    expect(attacked.record.limit).toBeGreaterThan(3);
  });
});

describe('the monitor through the federation', () => {
  /** a plausible update of the round's model: small values; the attacker sends −10 × it */
  const update = (s: Scenario, id: string, scale: number, seed: number) => {
    const u = s.update(id);
    const g = decodeWeights(s.port.lastStart(id)!.weights);
    const rng = createRng(seed);
    const base = createRng(7); // a shared direction: honest updates agree with each other
    const values = new Float32Array(g.values.length).map(() => scale * (0.001 * (base() - 0.5) + 0.0003 * (rng() - 0.5)));
    return { ...u, delta: encodeWeights({ specs: g.specs, values }) };
  };

  for (const quarantine of [false, true]) {
    it(`flags a selected device that sends −10 × its update${quarantine ? ', and quarantines it' : ''}`, async () => {
      const s = new Scenario();
      const ids = ['device-a', 'device-b', 'device-c', 'device-d', 'device-evil'];
      s.join(...ids);
      const runId = await s.start({ rounds: 6, clientsPerRound: 5, minUpdates: 4, overSelect: 1, roundTimeoutMs: 60_000, monitor: { warmupRounds: 3, falseAlarmsPer100Rounds: 1, quarantine } });
      await flush();
      for (let round = 1; round <= 6; round++) {
        if (s.port.selected(round).length === 0) await s.clock.advance(10_000); // the quarantined device leaves four: selection starts with them after its wait
        const selected = s.port.selected(round);
        // out of control in rounds 4 and 5: flagged by the second (2 of its last 3), quarantined from round 6
        if (quarantine && round >= 6) expect(selected).not.toContain('device-evil');
        for (const id of selected) {
          const attacker = id === 'device-evil' && round >= 4;
          void s.federation.submitUpdate(id, update(s, id, attacker ? -10 : 1, round * 31 + ids.indexOf(id)));
          await flush();
        }
        await flush();
      }
      const rounds = s.rounds(runId).filter((r) => r.status === 'completed');
      expect(rounds.map((r) => r.monitoring!.phase)).toEqual(['warming up', 'warming up', 'warming up', 'monitoring', 'monitoring', 'monitoring']);
      const r4 = rounds[3]!.monitoring!;
      const evil = r4.devices.find((d) => d.id === 'device-evil')!;
      expect(evil.reasons.join('; ')).toMatch(/norm z = \d+\.\d beyond/);
      // the median of the sketches keeps to the honest direction (the mean would point the attacker's way: it outweighs four)
      expect(evil.features.cosine!).toBeLessThan(-0.9);
      expect(r4.devices.filter((d) => d.id !== 'device-evil' && d.reasons.length).map((d) => d.reasons)).toEqual([]);
      expect(r4.ks!.find((k) => k.feature === 'norm')).toBeDefined();
      expect(evil.flagged).toBeUndefined(); // one excursion is not enough
      expect(rounds[4]!.monitoring!.devices.find((d) => d.id === 'device-evil')!.flagged).toBe(true);
      expect(s.federation.listDevices().find((d) => d.id === 'device-evil')!.monitor).toBe(quarantine ? 'quarantined' : 'flagged');
    });
  }
});
