/**
 * The federation as a clock and an attacker see it: the interpreter and the reducer together, with
 * a fake clock, through silence, lateness, disconnects at every phase, failures of evaluation,
 * aggregation and persistence, and hostile but well-formed updates from selected devices.
 */
import { describe, expect, it } from 'vitest';
import { VALIDATION_GRACE_MS, WORK_TIMEOUT_MS } from '../server/fl/coordinator.ts';
import { fedAvg } from '../shared/fedavg.ts';
import { decodeWeights, encodeWeights } from '../shared/weights.ts';
import { scaffoldUpdateSpecs } from '../shared/scaffold.ts';
import { flush, Scenario } from './support/scenario.ts';
import { Federation } from '../server/federation.ts';
import { strategyFor, type FitResults, type Strategy } from '../server/fl/strategy.ts';
import type { RunConfig } from '../shared/schemas.ts';
import { createLogger } from '../server/log.ts';
import { decodeServerState, initialServerState, serverStep } from '../shared/server-optimizer.ts';
import { qfflScale, QFFL_MAX_LOSS } from '../shared/fairness.ts';

const lastModel = (s: Scenario, runId: number) => decodeWeights(s.db.getModelWeights(s.rounds(runId).filter((r) => r.status === 'completed').at(-1)!.modelVersion!)!);

describe('a round never waits for nothing', () => {
  for (const early of [0, 1]) {
    it(`closes every round at its deadline when a device goes silent after a quorum round${early ? ', with timers that fire 1 ms early' : ''}`, async () => {
      // The reported hang: A answers every round; B answers round 1, then stays connected and silent.
      const s = new Scenario();
      s.clock.early = early;
      s.join('device-a', 'device-b');
      const runId = await s.start({ rounds: 3, clientsPerRound: 2, minUpdates: 1, overSelect: 1, roundTimeoutMs: 4000 });
      await flush();
      expect(s.port.selected(1).sort()).toEqual(['device-a', 'device-b']);
      await s.submit('device-a');
      await s.submit('device-b');
      expect(s.rounds(runId).map((r) => r.round)).toEqual([1]);

      for (const round of [2, 3]) {
        expect(s.port.selected(round).sort()).toEqual(['device-a', 'device-b']);
        const deadline = s.port.lastStart('device-a')!.deadline;
        expect(s.clock.armed()).toEqual([deadline]); // exactly the round's deadline is armed
        await s.submit('device-a');
        await s.clock.advance(deadline - s.clock.now() - 2); // timers may fire 1 ms early: stop 2 ms short
        expect(s.rounds(runId)).toHaveLength(round - 1);
        await s.clock.advance(2);
        expect(s.rounds(runId).at(-1)).toMatchObject({ round, status: 'completed', completed: 1, participants: 2, reason: 'closed at the deadline with 1 updates' });
      }
      expect(s.run(runId)).toMatchObject({ status: 'done' });
      expect(s.clock.armed()).toEqual([]);
    });
  }

  it('closes as soon as every selected device has answered, instead of waiting for the deadline', async () => {
    const s = new Scenario();
    s.join('device-a', 'device-b');
    const runId = await s.start({ rounds: 2, clientsPerRound: 4, minUpdates: 2, roundTimeoutMs: 120_000, selectionTimeoutMs: 10_000 });
    await flush();
    expect(s.federation.status()).toMatchObject({ phase: 'selecting', waiting: 'selecting: need 4 idle devices, have 2; starts with 2 in 10 s' });
    await s.clock.advance(10_000);
    expect(s.port.selected(1)).toHaveLength(2);
    await s.clock.advance(500);
    await s.submit('device-a');
    expect(s.federation.status().waiting).toBe('waiting for updates: 1 of the 2 required in; 1 of 2 selected answered');
    await s.clock.advance(500);
    await s.submit('device-b');
    const [r1] = s.rounds(runId);
    expect(r1).toMatchObject({ status: 'completed', completed: 2, reason: 'closed when every selected device had answered (2 updates)' });
    // the round's time is the sum of its phases: 10 s waiting for devices, then 1 s of work
    expect(r1!.durationMs).toBe(11_000);
    expect(r1!.phases).toMatchObject({ waitingForDevicesMs: 10_000, devicesAtWorkMs: 1_000, waitingForCloseMs: 0 });
  });

  it('says why it waits for the deadline once minUpdates are in', async () => {
    const s = new Scenario();
    s.join('device-a', 'device-b', 'device-c');
    await s.start({ clientsPerRound: 3, minUpdates: 1, overSelect: 1 });
    await flush();
    await s.submit('device-a');
    expect(s.federation.status().waiting).toBe('waiting for the deadline: 1 of 3 selected answered, 1 counted (closes at 3)');
  });

  it('waits for devices without a timer once the selection wait is over, and starts when one joins', async () => {
    const s = new Scenario();
    s.join('device-a', 'device-b');
    await s.start({ clientsPerRound: 3, minUpdates: 2, selectionTimeoutMs: 5_000 });
    await s.clock.advance(1_000);
    s.federation.leave('device-b');
    await s.clock.advance(4_000);
    expect(s.federation.status()).toMatchObject({ phase: 'selecting', waiting: 'waiting for devices: need at least 2 idle, have 1' });
    expect(s.clock.armed()).toEqual([]);
    await s.clock.advance(60_000);
    s.join('device-c');
    await flush();
    expect(s.port.selected(1).sort()).toEqual(['device-a', 'device-c']);
  });
});

describe('failures come back to the reducer', () => {
  it('records a round whose evaluation failed without test metrics, and the run goes on', async () => {
    const s = new Scenario();
    s.join('device-a', 'device-b');
    const runId = await s.start({ rounds: 2, clientsPerRound: 2, minUpdates: 2, overSelect: 1 });
    await flush();
    s.evaluator.failNext = 'out of memory';
    await s.submit('device-a');
    await s.submit('device-b');
    expect(s.rounds(runId)[0]).toMatchObject({ round: 1, status: 'completed', testAccuracy: null, testLoss: null, reason: 'closed when 2 updates were counted (K = 2); evaluation failed: out of memory' });
    expect(s.rounds(runId)[0]!.modelVersion).not.toBeNull();
    expect(s.federation.status().phase).toBe('training'); // round 2
    await s.submit('device-a');
    await s.submit('device-b');
    expect(s.run(runId)).toMatchObject({ status: 'done' });
    await expect(s.start({ rounds: 1 })).resolves.toBeTypeOf('number');
  });

  it('evaluates a round\'s model while the next round trains, records an evaluation that never finishes after the work timeout, and ignores its late answer', async () => {
    const s = new Scenario();
    s.join('device-a', 'device-b');
    const runId = await s.start({ rounds: 3, clientsPerRound: 2, minUpdates: 2, overSelect: 1, roundTimeoutMs: 3_600_000 });
    await flush();
    s.evaluator.hold = true;
    await s.submit('device-a');
    await s.submit('device-b');
    await flush();
    // round 1 is recorded and its model published at once; round 2 trains while it is evaluated
    expect(s.rounds(runId)[0]).toMatchObject({ round: 1, status: 'completed', testAccuracy: null, evaluationPending: true });
    expect(s.federation.status().phase).toBe('training');
    expect(s.port.selected(2)).toHaveLength(2);
    await s.clock.advance(WORK_TIMEOUT_MS);
    expect(s.rounds(runId)[0]).toMatchObject({ status: 'completed', testAccuracy: null, reason: expect.stringMatching(/evaluation did not finish within 10 min$/) });
    expect(s.rounds(runId)[0]!.evaluationPending).toBeUndefined();
    s.evaluator.pending[0]!.resolve({ accuracy: 0.9, loss: 0.3, examples: 100 });
    await flush();
    expect(s.rounds(runId)[0]!.testAccuracy).toBeNull();
    expect(s.rounds(runId)).toHaveLength(1);
    expect(s.federation.status().phase).toBe('training');
  });

  it('says so in the record of a round whose evaluation a restart cut short, rather than leave it evaluating forever', async () => {
    const s = new Scenario();
    s.join('device-a', 'device-b');
    const runId = await s.start({ rounds: 3, clientsPerRound: 2, minUpdates: 2, overSelect: 1 });
    await flush();
    s.evaluator.hold = true;
    await s.submit('device-a');
    await s.submit('device-b');
    await flush();
    expect(s.rounds(runId)[0]).toMatchObject({ evaluationPending: true });
    s.federation.shutdown();
    // the next process, on the same store
    const next = new Federation({ store: s.store, strategyFor, evaluator: s.evaluator, clock: s.clock, logger: createLogger('restart', () => undefined), port: s.port });
    expect(await next.resumeInterruptedRun()).toBe(runId);
    const [r1] = s.rounds(runId);
    expect(r1).toMatchObject({ round: 1, status: 'completed', testAccuracy: null, reason: expect.stringMatching(/not evaluated: the server restarted before its evaluation finished$/) });
    expect(r1!.evaluationPending).toBeUndefined();
    next.shutdown();
  });

  it('fills in a round\'s metrics when its evaluation ends during a later round, and the last round waits for its own', async () => {
    const s = new Scenario();
    s.join('device-a', 'device-b');
    const runId = await s.start({ rounds: 2, clientsPerRound: 2, minUpdates: 2, overSelect: 1 });
    await flush();
    s.evaluator.hold = true;
    await s.submit('device-a');
    await s.submit('device-b');
    await flush();
    const v1 = s.rounds(runId)[0]!.modelVersion!;
    expect(s.db.listModels().find((m) => m.version === v1)?.testAccuracy).toBeNull();
    await s.submit('device-a');
    await s.submit('device-b');
    await flush();
    // round 2 is the last: the run waits for its evaluation, and round 1's is still out too
    expect(s.federation.status().phase).toBe('evaluating');
    expect(s.rounds(runId)).toHaveLength(1);
    s.evaluator.pending[0]!.resolve({ accuracy: 0.7, loss: 0.9, examples: 100 });
    await flush();
    expect(s.rounds(runId)[0]).toMatchObject({ round: 1, testAccuracy: 0.7, testLoss: 0.9 });
    expect(s.rounds(runId)[0]!.evaluationPending).toBeUndefined();
    expect(s.db.listModels().find((m) => m.version === v1)?.testAccuracy).toBe(0.7);
    expect(s.run(runId)).toMatchObject({ status: 'running' });
    s.evaluator.pending[1]!.resolve({ accuracy: 0.8, loss: 0.6, examples: 100 });
    await flush();
    expect(s.rounds(runId)[1]).toMatchObject({ round: 2, testAccuracy: 0.8 });
    expect(s.run(runId)).toMatchObject({ status: 'done' });
  });

  it('lets an old deadline pass during aggregation and evaluation, and gives the next round its own', async () => {
    const s = new Scenario();
    s.join('device-a', 'device-b');
    const runId = await s.start({ rounds: 2, clientsPerRound: 2, minUpdates: 1, overSelect: 1, roundTimeoutMs: 60_000 });
    await flush();
    s.evaluator.hold = true;
    await s.submit('device-a');
    // Round 1 closes by quorum: the deadline of round 1 (60 s away) must not touch what follows.
    const answerB = s.federation.submitUpdate('device-b', s.update('device-b'));
    expect(s.federation.status().phase).toBe('training');
    await answerB;
    expect(s.federation.status().phase).toBe('aggregating');
    await s.clock.advance(61_000); // aggregation runs and round 2 starts; round 1's evaluation holds past the old deadline
    expect(s.federation.status().phase).toBe('training');
    expect(s.rounds(runId)[0]).toMatchObject({ status: 'completed', evaluationPending: true });
    const round2 = s.port.lastStart('device-a')!;
    expect(round2.round).toBe(2);
    expect(s.clock.armed()).toEqual([round2.deadline]);
    s.evaluator.hold = false;
    s.evaluator.pending[0]!.resolve({ accuracy: 0.6, loss: 1.2, examples: 100 });
    await flush();
    expect(s.rounds(runId)[0]).toMatchObject({ status: 'completed', testAccuracy: 0.6 });
    expect(s.clock.armed()).toEqual([round2.deadline]);
    await s.submit('device-a'); // device-b is silent now
    await s.clock.advance(60_000);
    expect(s.rounds(runId)[1]).toMatchObject({ round: 2, status: 'completed', completed: 1 });
    expect(s.run(runId)).toMatchObject({ status: 'done' });
  });

  it('redoes a round whose aggregation failed (the store refused the model), as a new attempt', async () => {
    const s = new Scenario();
    s.join('device-a', 'device-b');
    const runId = await s.start({ rounds: 1, clientsPerRound: 2, minUpdates: 2, overSelect: 1 });
    await flush();
    const save = s.store.saveModel.bind(s.store);
    let refusals = 1;
    s.store.saveModel = (m, now) => {
      if (refusals-- > 0) throw new Error('disk full');
      return save(m, now);
    };
    await s.submit('device-a');
    await s.submit('device-b');
    expect(s.rounds(runId)).toEqual([expect.objectContaining({ round: 1, attempt: 1, status: 'failed', reason: 'aggregation failed: disk full' })]);
    expect(s.port.selected(1, 2).sort()).toEqual(['device-a', 'device-b']);
    await s.submit('device-a');
    await s.submit('device-b');
    expect(s.rounds(runId).map((r) => [r.attempt, r.status])).toEqual([[1, 'failed'], [2, 'completed']]);
    expect(s.run(runId)).toMatchObject({ status: 'done' });
  });

  it('fails the run visibly when a round cannot be recorded, and a new run can start', async () => {
    const s = new Scenario();
    s.join('device-a', 'device-b');
    const runId = await s.start({ rounds: 3, clientsPerRound: 2, minUpdates: 2, overSelect: 1 });
    await flush();
    s.store.recordRound = () => {
      throw new Error('database is locked');
    };
    await s.submit('device-a');
    await s.submit('device-b');
    expect(s.run(runId)).toMatchObject({ status: 'failed', reason: 'could not round:record: database is locked' });
    expect(s.federation.status().phase).toBe('failed');
    expect(s.clock.armed()).toEqual([]);
    await expect(s.start({ rounds: 1 })).resolves.toBeTypeOf('number');
  });
});

describe('disconnects at every phase', () => {
  it('while training, validating, aggregating and evaluating (selecting: the next scenario)', async () => {
    const s = new Scenario({ sums: true });
    s.join('device-a', 'device-b', 'device-c', 'device-d');
    const runId = await s.start({ rounds: 2, clientsPerRound: 2, minUpdates: 2, overSelect: 1.5, roundTimeoutMs: 30_000 });
    await flush();
    const selected = s.port.selected(1);
    expect(selected).toHaveLength(3);
    const [first, second, third] = selected as [string, string, string];
    const idle = ['device-a', 'device-b', 'device-c', 'device-d'].find((id) => !selected.includes(id))!;
    const w0 = s.globalFor(second);
    // training: one selected device leaves before answering
    s.federation.leave(first);
    expect(s.federation.status().round).toMatchObject({ dropped: 1 });
    // validating: a device leaves after its update arrived; the update stands
    s.sums!.hold = true;
    const pending = s.federation.submitUpdate(second, s.update(second, { step: 0.01 }));
    await flush();
    expect(s.federation.status().round).toMatchObject({ validating: 1 });
    s.federation.leave(second);
    expect(s.federation.status().round).toMatchObject({ dropped: 1, validating: 1 });
    s.sums!.hold = false;
    s.sums!.release();
    expect(await pending).toEqual({ ok: true, data: { accepted: true } });
    // aggregating: the quorum closes the round; while its sum is taken, the device whose update closed it leaves
    s.sums!.holdTake = true;
    s.evaluator.hold = true;
    expect(await s.submit(third, { step: 0.03 })).toEqual({ ok: true, data: { accepted: true } });
    expect(s.federation.status().phase).toBe('aggregating');
    s.federation.leave(third);
    s.sums!.releaseTake();
    await flush();
    // both counted updates stand: the model is their FedAvg
    expect(s.rounds(runId)[0]).toMatchObject({ status: 'completed', completed: 2, dropped: 1, evaluationPending: true });
    expect(lastModel(s, runId).values[0]).toBeCloseTo(w0.values[0]! + 0.02, 6);
    // evaluating (off the critical path): the last device leaves
    expect(s.evaluator.pending).toHaveLength(1);
    s.federation.leave(idle);
    s.evaluator.pending[0]!.resolve({ accuracy: 0.5, loss: 1, examples: 100 });
    await flush();
    expect(s.rounds(runId)[0]).toMatchObject({ status: 'completed', completed: 2, dropped: 1, testAccuracy: 0.5 });
    // nobody is left: round 2 waits for devices, and says so
    expect(s.federation.status()).toMatchObject({ phase: 'selecting', devices: 0 });
  });

  it('fails a round as soon as dropouts make minUpdates unreachable, and retries it', async () => {
    const s = new Scenario();
    s.join('device-a', 'device-b', 'device-c');
    const runId = await s.start({ rounds: 1, clientsPerRound: 3, minUpdates: 2, overSelect: 1, maxRoundRetries: 1 });
    await flush();
    s.federation.leave('device-a');
    s.federation.leave('device-b');
    await flush();
    expect(s.rounds(runId)[0]).toMatchObject({ status: 'failed', dropped: 2, reason: '2 of 3 selected devices dropped out and 0 were refused; at most 1 of the 2 required updates can arrive' });
    expect(s.federation.status()).toMatchObject({ phase: 'selecting', run: { attempt: 2 } });
  });

  it('a device that drops and rejoins mid-round is not counted in that round, and is selected again in the next', async () => {
    const s = new Scenario();
    s.join('device-a', 'device-b', 'device-c');
    const runId = await s.start({ rounds: 2, clientsPerRound: 2, minUpdates: 2, overSelect: 1.5 });
    await flush();
    const round1 = s.port.lastStart('device-b')!;
    s.federation.leave('device-b');
    s.join('device-b');
    expect(await s.submit('device-b', { round: round1 })).toMatchObject({ ok: false, error: { code: 'NOT_SELECTED', message: expect.stringContaining('the device left the round') } });
    await s.submit('device-a');
    await s.submit('device-c');
    expect(s.rounds(runId)[0]).toMatchObject({ completed: 2, dropped: 1 });
    expect(s.port.selected(2)).toContain('device-b');
    await s.submit('device-b');
    await s.submit(s.port.selected(2).find((id) => id !== 'device-b')!);
    expect(s.rounds(runId)[1]!.devices.map((d) => d.id)).toContain('device-b');
  });
});

describe('updates that arrive at the deadline', () => {
  it('waits for an update that arrived in time and is still being validated', async () => {
    const s = new Scenario();
    s.join('device-a', 'device-b');
    const runId = await s.start({ rounds: 1, clientsPerRound: 2, minUpdates: 1, overSelect: 1, roundTimeoutMs: 10_000 });
    await flush();
    await s.clock.advance(9_999);
    s.validator.hold = true;
    const answer = s.federation.submitUpdate('device-a', s.update('device-a'));
    await s.clock.advance(5_000);
    expect(s.federation.status()).toMatchObject({ phase: 'training', waiting: 'deadline passed: validating 1 update that arrived in time' });
    s.validator.release();
    expect(await answer).toMatchObject({ ok: true });
    await flush();
    expect(s.rounds(runId)[0]).toMatchObject({ status: 'completed', completed: 1 });
  });

  it('with the sum in the work threads: an update refused as late while it was being validated is dropped there, never summed', async () => {
    const s = new Scenario({ sums: true });
    const sums = s.sums!;
    s.join('device-a', 'device-b');
    const runId = await s.start({ rounds: 1, clientsPerRound: 2, minUpdates: 1, overSelect: 1, roundTimeoutMs: 10_000 });
    await flush();
    const w0 = s.globalFor('device-a');
    await s.submit('device-a', { step: 0.001 }); // counted: added to the sum in its thread
    sums.hold = true;
    const late = s.federation.submitUpdate('device-b', s.update('device-b', { step: 0.5 }));
    await s.clock.advance(10_000 + VALIDATION_GRACE_MS);
    expect(await late).toMatchObject({ ok: false, error: { code: 'ROUND_FULL' } });
    sums.release(); // its validation ends after it was refused
    await flush();
    expect(sums.added).toHaveLength(1);
    expect(sums.dropped).toHaveLength(1);
    expect(sums.outstanding).toBe(0);
    const [r1] = s.rounds(runId);
    expect(r1).toMatchObject({ status: 'completed', completed: 1, late: 1 });
    // the new model moved by device-a's step alone, merged from the threads
    const w1 = decodeWeights(s.db.getModelWeights(r1!.modelVersion!)!).values;
    for (const i of [0, 100, w1.length - 1]) expect(w1[i]! - w0.values[i]!).toBeCloseTo(0.001, 6);
  });

  it('stops waiting for validation after the grace period: the update is late and the round fails without it', async () => {
    const s = new Scenario();
    s.join('device-a', 'device-b');
    const runId = await s.start({ rounds: 1, clientsPerRound: 2, minUpdates: 1, overSelect: 1, roundTimeoutMs: 10_000, maxRoundRetries: 0 });
    await flush();
    s.validator.hold = true;
    const answer = s.federation.submitUpdate('device-a', s.update('device-a'));
    await s.clock.advance(10_000 + VALIDATION_GRACE_MS);
    expect(await answer).toMatchObject({ ok: false, error: { code: 'ROUND_FULL' } });
    expect(s.rounds(runId)[0]).toMatchObject({ status: 'failed', late: 1 });
    expect(s.run(runId)).toMatchObject({ status: 'failed' });
    s.validator.release();
    await flush();
    expect(s.rounds(runId)).toHaveLength(1);
  });
});

describe('late updates', () => {
  it('count in the record of the round they were meant for, while it is still being aggregated — never in another', async () => {
    const s = new Scenario();
    s.join('device-a', 'device-b', 'device-c');
    const runId = await s.start({ rounds: 2, clientsPerRound: 2, minUpdates: 1, overSelect: 1.5, roundTimeoutMs: 10_000 });
    await flush();
    const round1 = s.port.lastStart('device-c')!;
    await s.submit('device-a');
    await s.federation.submitUpdate('device-b', s.update('device-b')); // quorum: round 1 closes with device-c unanswered
    expect(s.federation.status().phase).toBe('aggregating');
    expect(await s.federation.submitUpdate('device-c', s.update('device-c', { round: round1 }))).toMatchObject({ ok: false, error: { code: 'ROUND_FULL' } });
    await flush();
    expect(s.rounds(runId)[0]).toMatchObject({ round: 1, completed: 2, unanswered: 0, late: 1, rejected: 0 }); // a late answer is an answer
    // Round 2 is under way: another update for round 1 is late, but round 2's ledger does not count it.
    expect(await s.submit('device-c', { round: round1 })).toMatchObject({ ok: false, error: { code: 'WRONG_ROUND' } });
    for (const id of s.port.selected(2).slice(0, 2)) await s.submit(id);
    expect(s.rounds(runId)[1]).toMatchObject({ round: 2, late: 0, rejected: 0, unanswered: 1 });
    expect(s.federation.counters.lateUpdates).toBe(2);
  });
});

describe('hostile but well-formed updates from selected devices', () => {
  it('refuses a device that claims more examples than it declared; it has answered, and cannot answer again', async () => {
    const s = new Scenario();
    s.join('device-a', 'device-b', 'device-c');
    const runId = await s.start({ rounds: 1, clientsPerRound: 3, minUpdates: 2, overSelect: 1 });
    await flush();
    const before = s.validator.calls;
    expect(await s.submit('device-a', { numExamples: 60_000, step: 5 })).toMatchObject({ ok: false, error: { code: 'TOO_MANY_EXAMPLES', message: 'update from device device-a for run 1 round 1.1: claims 60000 examples, the device declared 100 when it joined' } });
    expect(await s.submit('device-a', { numExamples: 100 })).toMatchObject({ ok: false, error: { code: 'DUPLICATE' } });
    expect(s.validator.calls).toBe(before); // refused before any decoding
    const w0 = s.globalFor('device-b');
    await s.submit('device-b', { step: 0.01 });
    await s.submit('device-c', { step: 0.03 });
    const [r] = s.rounds(runId);
    expect(r).toMatchObject({ status: 'completed', completed: 2, rejected: 2, reason: 'closed when every selected device had answered (2 updates)' });
    const expected = fedAvg(w0.values, [{ delta: new Float32Array(w0.values.length).fill(0.01), numExamples: 100 }, { delta: new Float32Array(w0.values.length).fill(0.03), numExamples: 100 }]);
    expect(lastModel(s, runId).values[0]).toBeCloseTo(expected[0]!, 6);
  });

  it('caps what one device weighs at maxExamplesPerDevice', async () => {
    const s = new Scenario();
    s.federation.join({ deviceId: 'big-device', backend: 'wasm', backendReason: 'x', examples: 60_000, heldOut: 0, labelHistogram: new Array(10).fill(6_000) });
    s.join('small-a', 'small-b', 'small-c');
    const runId = await s.start({ rounds: 1, clientsPerRound: 4, minUpdates: 4, overSelect: 1, maxExamplesPerDevice: 600 });
    await flush();
    const w0 = s.globalFor('big-device');
    await s.submit('big-device', { numExamples: 60_000, step: 1 });
    for (const id of ['small-a', 'small-b', 'small-c']) await s.submit(id, { numExamples: 100, step: 0 });
    const [r] = s.rounds(runId);
    expect(r!.devices.find((d) => d.id === 'big-device')).toMatchObject({ numExamples: 60_000, weight: 600 });
    // Δ = 600·1 / (600 + 3·100) = 2/3, not the 60000/60300 ≈ 1 the claim alone would give.
    expect(lastModel(s, runId).values[0]! - w0.values[0]!).toBeCloseTo(2 / 3, 5);
  });

  it('refuses an update whose values could overflow the model, after decoding it', async () => {
    const s = new Scenario();
    s.join('device-a', 'device-b');
    const runId = await s.start({ rounds: 1, clientsPerRound: 2, minUpdates: 1, overSelect: 1 });
    await flush();
    expect(await s.submit('device-a', { step: 3e38 })).toMatchObject({ ok: false, error: { code: 'BAD_WEIGHTS', message: expect.stringContaining('beyond the bound of ±1000000') } });
    expect(s.validator.calls).toBe(1);
    await s.submit('device-b');
    expect(s.rounds(runId)[0]).toMatchObject({ status: 'completed', completed: 1, rejected: 1 });
    expect(lastModel(s, runId).values.every(Number.isFinite)).toBe(true);
  });
});

describe('strategies for non-IID data, through the federation', () => {
  const modelOf = (s: Scenario, runId: number, round: number) => {
    const r = s.rounds(runId).find((x) => x.round === round && x.status === 'completed')!;
    return { version: r.modelVersion!, values: decodeWeights(s.db.getModelWeights(r.modelVersion!)!).values, record: r };
  };

  it('FedAdam steps from the round\'s mean, stores its state with the version, and a restart resumes from it exactly', async () => {
    const s = new Scenario();
    s.join('device-a', 'device-b');
    const config = { rounds: 2, clientsPerRound: 2, minUpdates: 2, overSelect: 1, strategy: 'fedadam', serverLearningRate: 0.1 } as const;
    const runId = await s.start(config);
    await flush();
    const w0 = s.globalFor('device-a').values;
    await s.submit('device-a', { step: 0.001 });
    await s.submit('device-b', { step: 0.003 });
    await flush();
    const params = { learningRate: 0.1, beta1: 0.9, beta2: 0.99, tau: 1e-3 };
    const mean1 = new Float32Array(w0.length).fill(0.002);
    const hand1 = serverStep('fedadam', params, w0, mean1, initialServerState('fedadam', w0.length, 1e-3));
    const r1 = modelOf(s, runId, 1);
    // the mean the server saw is (0.001 + 0.003) / 2 per weight (up to float32 rounding of w + Δ)
    for (let i = 0; i < w0.length; i += 61) expect(r1.values[i]).toBeCloseTo(hand1.weights[i]!, 6);
    const state1 = decodeServerState(s.db.getOptimizerState(r1.version)!, w0.length);
    if ('c' in state1) throw new Error('fedadam stored a control variate');
    for (let i = 0; i < w0.length; i += 61) expect(state1.m[i]).toBeCloseTo(0.1 * mean1[i]!, 7);
    // round 2 is under way when the process dies; the next one resumes it from v1 and its state
    s.federation.shutdown();
    const next = new Federation({ store: s.store, strategyFor, evaluator: s.evaluator, clock: s.clock, logger: createLogger('restart', () => undefined), port: s.port });
    expect(await next.resumeInterruptedRun()).toBe(runId);
    for (const id of ['device-a', 'device-b']) next.join({ deviceId: id, backend: 'wasm', backendReason: 'scenario', examples: 100, heldOut: 20, labelHistogram: new Array(10).fill(10) });
    await flush();
    for (const [id, step] of [['device-a', 0.002], ['device-b', 0.002]] as const) {
      void next.submitUpdate(id, s.update(id, { step }));
      await flush();
    }
    await flush();
    const r2 = modelOf(s, runId, 2);
    const start2 = decodeWeights(s.port.lastStart('device-a')!.weights).values;
    expect(Array.from(start2.subarray(0, 50))).toEqual(Array.from(r1.values.subarray(0, 50)));
    const aggregated = Float32Array.from(r1.values, (w) => w + Math.fround(0.002)); // as applyDelta makes it: w + the float32 mean
    const hand2 = serverStep('fedadam', params, r1.values, Float32Array.from(aggregated, (a, i) => a - r1.values[i]!), state1);
    expect(Array.from(r2.values)).toEqual(Array.from(hand2.weights));
    next.shutdown();
  });

  it('SCAFFOLD sends c with the model, refuses an update without its control half, steps x and c by the counted share, and a restart resumes c', async () => {
    const s = new Scenario();
    s.join('device-a', 'device-b', 'device-c', 'device-d');
    const runId = await s.start({ rounds: 2, clientsPerRound: 3, minUpdates: 2, overSelect: 1, strategy: 'scaffold', roundTimeoutMs: 60_000 });
    await flush();
    const selected = s.port.selected(1);
    expect(selected).toHaveLength(3);
    const g = s.globalFor(selected[0]!);
    const n = g.values.length;
    const start1 = s.port.lastStart(selected[0]!)!;
    expect(decodeWeights(start1.control!, g.specs).values.every((v) => v === 0)).toBe(true); // c = 0 before the first round
    const send = async (id: string, dy: number, dc: number) => {
      const values = new Float32Array(2 * n).fill(dy, 0, n).fill(dc, n);
      const answer = s.federation.submitUpdate(id, { ...s.update(id), delta: encodeWeights({ specs: scaffoldUpdateSpecs(g.specs), values }) });
      await flush();
      return answer;
    };
    // a selected device sends a well-formed model-sized update without the control half: decoded, and refused
    const calls = s.validator.calls;
    expect(await s.submit(selected[0]!, { step: 0.001 })).toMatchObject({ ok: false, error: { code: 'BAD_WEIGHTS' } });
    expect(s.validator.calls).toBe(calls + 1);
    expect(await send(selected[1]!, 0.001, 0.5)).toMatchObject({ ok: true });
    expect(await send(selected[2]!, 0.003, -0.1)).toMatchObject({ ok: true });
    await flush();
    const r1 = modelOf(s, runId, 1);
    for (let i = 0; i < n; i += 61) expect(r1.values[i]).toBeCloseTo(g.values[i]! + 0.002, 6);
    // two of the four connected devices counted: c = 0 + (2/4)·mean Δc = 0.5·0.2
    const state = decodeServerState(s.db.getOptimizerState(r1.version)!, n);
    if (!('c' in state)) throw new Error('no control variate stored');
    for (let i = 0; i < n; i += 61) expect(state.c[i]).toBeCloseTo(0.1, 6);
    const control2 = decodeWeights(s.port.lastStart(s.port.selected(2)[0]!)!.control!, g.specs).values;
    expect(Array.from(control2)).toEqual(Array.from(state.c));
    // the process dies in round 2; the next one sends the stored c again
    s.federation.shutdown();
    const next = new Federation({ store: s.store, strategyFor, evaluator: s.evaluator, clock: s.clock, logger: createLogger('restart', () => undefined), port: s.port });
    expect(await next.resumeInterruptedRun()).toBe(runId);
    for (const id of ['device-a', 'device-b', 'device-c', 'device-d']) next.join({ deviceId: id, backend: 'wasm', backendReason: 'scenario', examples: 100, heldOut: 20, labelHistogram: new Array(10).fill(10) });
    await flush();
    const resumed = s.port.lastStart(s.port.selected(2).at(-1)!)!;
    expect(Array.from(decodeWeights(resumed.control!, g.specs).values)).toEqual(Array.from(state.c));
    next.shutdown();
  });

  it('gives the strategy\'s hooks the round: its plan, the population for evaluation, the fit with its failures as data', async () => {
    const seen: { fit?: FitResults; evaluate?: number } = {};
    const spy = (config: RunConfig): Strategy => {
      const base = strategyFor(config);
      return {
        ...base,
        aggregateFit: (c, fit) => {
          seen.fit = fit;
          return base.aggregateFit(c, fit);
        },
        configureEvaluate: (devices) => {
          seen.evaluate = devices.length;
          return base.configureEvaluate(devices);
        },
      };
    };
    const s = new Scenario({ strategyFor: spy });
    s.join('device-a', 'device-b', 'device-c');
    await s.start({ rounds: 1, clientsPerRound: 3, minUpdates: 2, overSelect: 1, roundTimeoutMs: 10_000 });
    await flush();
    expect(seen.evaluate).toBe(3);
    expect(s.port.lastStart('device-a')!.population).toEqual(new Array(10).fill(0.1)); // three devices' histograms, summed
    await s.submit('device-a');
    s.federation.leave('device-c'); // a failure
    await s.submit('device-b');
    await flush();
    expect(seen.fit).toMatchObject({ failures: 1 });
    expect(seen.fit!.aggregated.length).toBe(seen.fit!.global.length);
  });

  it('q-FFL weighs each update by its device\'s loss and scales the step; the round records the devices\' spread', async () => {
    const s = new Scenario();
    s.join('device-a', 'device-b');
    const runId = await s.start({ rounds: 1, clientsPerRound: 2, minUpdates: 2, overSelect: 1, strategy: 'qffl', q: 1, learningRate: 0.1 });
    await flush();
    const w0 = s.globalFor('device-a').values;
    const send = async (id: string, step: number, lossBefore: number, accuracyBefore: number) => {
      const u = s.update(id, { step });
      void s.federation.submitUpdate(id, { ...u, metrics: { ...u.metrics, lossBefore, accuracyBefore } });
      await flush();
    };
    await send('device-a', 0.001, 3, 0.4);
    await send('device-b', 0.004, 1, 0.9);
    await flush();
    const { values, record } = modelOf(s, runId, 1);
    expect(record.devices.map((d) => d.weight)).toEqual([3, 1]);
    const norm = (step: number) => step * Math.sqrt(w0.length);
    const scale = qfflScale([{ loss: 3, norm: norm(0.001) }, { loss: 1, norm: norm(0.004) }], 1, 0.1);
    const mean = (3 * 0.001 + 1 * 0.004) / 4;
    for (let i = 0; i < w0.length; i += 53) expect(values[i]).toBeCloseTo(w0[i]! + scale * mean, 6);
    expect(scale).toBeLessThan(1);
    expect(record.fairness).toEqual({ devices: 2, mean: 0.65, worst10: 0.4, best10: 0.9, variance: expect.closeTo(0.0625, 12) });
  });

  it('q-FFL weighs a device that claims a huge loss no more than the worst loss a device can have', async () => {
    const s = new Scenario();
    s.join('device-a', 'device-b');
    const runId = await s.start({ rounds: 1, clientsPerRound: 2, minUpdates: 2, overSelect: 1, strategy: 'qffl', q: 2 });
    await flush();
    for (const [id, lossBefore] of [['device-a', 1e6], ['device-b', 2]] as const) {
      const u = s.update(id, { step: 0.001 });
      void s.federation.submitUpdate(id, { ...u, metrics: { ...u.metrics, lossBefore } });
      await flush();
    }
    await flush();
    const [r] = s.rounds(runId);
    expect(r!.devices.map((d) => d.weight)).toEqual([QFFL_MAX_LOSS ** 2, 4]);
  });
});
