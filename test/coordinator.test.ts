import { describe, expect, it } from 'vitest';
import type { RoundRecord } from '../shared/api.ts';
import { epsilonAfter, roundsWithin } from '../shared/privacy/accountant.ts';
import { runConfigSchema, type RunConfigInput } from '../shared/schemas.ts';
import { createRng, shuffleInPlace } from '../shared/rng.ts';
import { describeWaiting, initialState, nextWake, step, type CoordinatorEvent, type CoordinatorState, type Effect } from '../server/fl/coordinator.ts';

const METRICS = { accuracyBefore: 0.1, lossBefore: 2, accuracyAfter: 0.2, lossAfter: 1.9, downloadMs: 1, evaluateMs: 1, trainMs: 1 };

/** Drives the reducer like the service does, collecting effects; no sockets, no timers. */
class Harness {
  state: CoordinatorState = initialState();
  effects: Effect[] = [];
  now = 0;
  private submission = 0;
  send(event: CoordinatorEvent, at = this.now): Effect[] {
    this.now = at;
    const r = step(this.state, event, at);
    this.state = r.state;
    this.effects.push(...r.effects);
    return r.effects.filter((e) => e.type !== 'timer:set');
  }
  join(...ids: string[]) {
    for (const id of ids) this.send({ type: 'device:joined', deviceId: id, examples: 100 });
  }
  start(config: RunConfigInput, runId = 1) {
    return this.send({ type: 'run:start', runId, config: runConfigSchema.parse(config) });
  }
  started() {
    return this.effects.filter((e) => e.type === 'round:start');
  }
  /** submits an update; when it passes the round's checks, validates it as the service would */
  update(deviceId: string, round = this.state.run!.round, attempt = this.state.run!.attempt, runId = this.state.run!.id, numExamples = 100): Effect[] {
    const submission = ++this.submission;
    const first = this.send({ type: 'update:submitted', submission, deviceId, runId, round, attempt, numExamples, bytes: 10, metrics: METRICS });
    if (!first.some((e) => e.type === 'update:validate')) return first;
    return this.send({ type: 'update:validated', submission, norm: 1, clipped: false });
  }
  /** the service's report that the round's model was aggregated and evaluated (the evaluation goes on while the next round runs) */
  finish(round: number, version = round + 1) {
    const ref = { runId: this.state.run!.id, round, attempt: this.state.run!.attempt };
    this.send({ type: 'round:aggregated', ...ref, version });
    return this.send({ type: 'round:evaluated', ...ref, version, accuracy: 0.9, loss: 0.3 });
  }
  /** the records written as rounds ended (not the rewrites that add an evaluation's metrics) */
  records(): RoundRecord[] {
    return this.effects.flatMap((e) => (e.type === 'round:record' && !e.evaluated ? [e.record] : []));
  }
}

const devices = (n: number) => Array.from({ length: n }, (_, i) => `device-${String(i).padStart(2, '0')}`);

describe('round coordinator', () => {
  it('over-selects ceil(K · overSelect) idle devices and arms the deadline', () => {
    const h = new Harness();
    h.join(...devices(10));
    const effects = h.start({ clientsPerRound: 4, overSelect: 1.3, roundTimeoutMs: 60_000 });
    const start = effects.find((e) => e.type === 'round:start');
    expect(start?.type === 'round:start' && start.deviceIds).toHaveLength(6);
    expect(h.state.phase).toBe('training');
    expect(h.effects.at(-1)).toEqual({ type: 'timer:set', at: 60_000 });
  });

  it('ends every step by saying when the next tick is due, early ticks included', () => {
    const h = new Harness();
    h.join(...devices(2));
    h.start({ clientsPerRound: 2, minUpdates: 1, roundTimeoutMs: 1_000 });
    h.send({ type: 'tick' }, 999); // a timer that fired early
    expect(h.state.phase).toBe('training');
    expect(h.effects.at(-1)).toEqual({ type: 'timer:set', at: 1_000 });
    h.send({ type: 'device:joined', deviceId: 'device-09', examples: 10 }, 500);
    expect(h.effects.at(-1)).toEqual({ type: 'timer:set', at: 1_000 });
    expect(nextWake(h.state, 500)).toBe(1_000);
  });

  it('selection is a function of the seed, round and attempt', () => {
    const pick = (seed: number) => {
      const h = new Harness();
      h.join(...devices(20));
      const start = h.start({ clientsPerRound: 3, seed }).find((e) => e.type === 'round:start');
      return start?.type === 'round:start' ? [...start.deviceIds] : [];
    };
    expect(pick(1)).toEqual(pick(1));
    expect(pick(1)).not.toEqual(pick(2));
  });

  it('waits for devices, then starts with K; or with ≥ minUpdates after the selection wait', () => {
    const h = new Harness();
    h.join('a-device-1');
    h.start({ clientsPerRound: 3, minUpdates: 2, selectionTimeoutMs: 5_000 });
    expect(h.state.phase).toBe('selecting');
    expect(h.effects.at(-1)).toEqual({ type: 'timer:set', at: 5_000 });
    h.now = 1_000;
    h.join('a-device-2');
    expect(h.state.phase).toBe('selecting');
    h.send({ type: 'tick' }, 5_000);
    expect(h.state.phase).toBe('training');
    expect(h.state.current?.selected).toHaveLength(2);
  });

  it('takes the first K updates, closes the round, and counts later ones as late', () => {
    const h = new Harness();
    h.join(...devices(6));
    h.start({ clientsPerRound: 3, overSelect: 2 });
    const selected = h.state.current!.selected;
    expect(selected).toHaveLength(6);
    expect(h.update(selected[0]!)).toEqual([{ type: 'update:accept', submission: 1, deviceId: selected[0], weight: 100, metrics: METRICS }]);
    h.update(selected[1]!);
    const closing = h.update(selected[2]!);
    expect(closing.map((e) => e.type)).toEqual(['update:accept', 'round:notify-end', 'round:aggregate']);
    expect(h.state.current!.accepted.map((c) => c.deviceId)).toEqual(selected.slice(0, 3));
    expect(h.state.current!.closedBy).toBe('quorum');
    expect(h.state.phase).toBe('aggregating');
    const late = h.update(selected[3]!);
    expect(late).toEqual([{ type: 'update:reject', submission: 4, deviceId: selected[3], code: 'ROUND_FULL', message: expect.stringContaining('the round is closed'), late: true }]);
  });

  it('counts a late answer in the record of its round, also once that round is recorded and evaluated while the next one runs', () => {
    const h = new Harness();
    h.join(...devices(5));
    h.start({ clientsPerRound: 3, overSelect: 1.5, rounds: 3 }); // 5 selected, the first 3 count
    const [a, b, c, d, e] = h.state.current!.selected as [string, string, string, string, string];
    for (const id of [a, b, c]) h.update(id);
    h.update(d); // late while round 1 aggregates
    h.send({ type: 'round:aggregated', runId: 1, round: 1, attempt: 1, version: 2 }); // recorded, evaluated off the critical path
    expect(h.state.run!.round).toBe(2);
    expect(h.records()[0]).toMatchObject({ round: 1, late: 1, unanswered: 1, evaluationPending: true });
    h.update(e, 1); // e answers round 1 while round 2 runs and round 1's model is still being evaluated
    h.update(e, 1); // twice: one late answer, one refusal
    h.update('intruder', 1); // never selected (nor joined): refused, not late
    h.update(a, 1); // counted already: a duplicate is refused, not late
    h.send({ type: 'round:evaluated', runId: 1, round: 1, attempt: 1, version: 2, accuracy: 0.9, loss: 0.3 });
    const rewritten = h.effects.findLast((x) => x.type === 'round:record' && x.evaluated) as { record: RoundRecord };
    expect(rewritten.record).toMatchObject({ round: 1, completed: 3, late: 2, unanswered: 0, rejected: 3, testAccuracy: 0.9 });
    // and round 2's ledger is untouched
    expect(h.state.current).toMatchObject({ round: 2, late: 0, rejected: 0 });
  });

  it('refuses duplicate and unsolicited updates, and updates for another round', () => {
    const h = new Harness();
    h.join(...devices(4), 'bystander-1');
    h.start({ clientsPerRound: 4, overSelect: 1, minUpdates: 2 });
    const [a] = h.state.current!.selected;
    h.update(a!);
    expect(h.update(a!)[0]).toMatchObject({ type: 'update:reject', code: 'DUPLICATE' });
    expect(h.update('stranger-9')[0]).toMatchObject({ type: 'update:reject', code: 'NOT_JOINED' });
    const outsider = ['bystander-1', ...devices(4)].find((id) => !h.state.current!.selected.includes(id))!;
    expect(h.update(outsider)[0]).toMatchObject({ type: 'update:reject', code: 'NOT_SELECTED' });
    expect(h.update(h.state.current!.selected[1]!, 7)[0]).toMatchObject({ type: 'update:reject', code: 'WRONG_ROUND' });
    expect(h.state.current!.accepted.map((c) => c.deviceId)).toEqual([a]);
    expect(h.state.current!.rejected).toBe(3);
    expect(h.state.current!.late).toBe(0); // an update for another round is not this round's business
  });

  it('at the deadline closes with ≥ minUpdates', () => {
    const h = new Harness();
    h.join(...devices(4));
    h.start({ clientsPerRound: 4, minUpdates: 2, roundTimeoutMs: 10_000 });
    const sel = h.state.current!.selected;
    h.update(sel[0]!, 1, 1);
    h.update(sel[1]!, 1, 1);
    h.send({ type: 'tick' }, 9_999);
    expect(h.state.phase).toBe('training');
    h.send({ type: 'tick' }, 10_000);
    expect(h.state.current!.closedBy).toBe('deadline');
    expect(h.state.phase).toBe('aggregating');
  });

  it('at the deadline with < minUpdates fails the round visibly and retries it, then fails the run', () => {
    const h = new Harness();
    h.join(...devices(2));
    h.start({ clientsPerRound: 2, minUpdates: 2, roundTimeoutMs: 1_000, maxRoundRetries: 1 });
    h.update(h.state.current!.selected[0]!);
    const first = h.send({ type: 'tick' }, 1_000);
    const failed = first.find((e) => e.type === 'round:record');
    expect(failed).toMatchObject({ type: 'round:record', willRetry: true, record: { round: 1, attempt: 1, status: 'failed', completed: 1, reason: 'deadline passed with 1 of the 2 required updates (0 dropped, 0 refused)' } });
    expect(h.state.phase).toBe('training');
    expect(h.state.run).toMatchObject({ round: 1, attempt: 2 });
    const second = h.send({ type: 'tick' }, 2_000);
    expect(second.find((e) => e.type === 'round:record')).toMatchObject({ willRetry: false });
    expect(second.find((e) => e.type === 'run:finished')).toMatchObject({ status: 'failed' });
    expect(h.state.phase).toBe('failed');
    expect(h.effects.at(-1)).toEqual({ type: 'timer:set', at: null });
  });

  it('counts dropouts and fails early when minUpdates can no longer arrive', () => {
    const h = new Harness();
    h.join(...devices(3));
    h.start({ clientsPerRound: 3, minUpdates: 2, overSelect: 1, maxRoundRetries: 0 });
    const sel = h.state.current!.selected;
    h.send({ type: 'device:left', deviceId: sel[0]! });
    expect(h.state.current!.dropped).toEqual([sel[0]]);
    expect(h.state.phase).toBe('training');
    const effects = h.send({ type: 'device:left', deviceId: sel[1]! });
    expect(effects.find((e) => e.type === 'round:record')).toMatchObject({ record: { status: 'failed', reason: expect.stringContaining('2 of 3 selected devices dropped out') } });
    expect(h.state.phase).toBe('failed');
  });

  it('runs every round to done, freeing devices between rounds, and records each round once, its metrics written in when its evaluation ends', () => {
    const h = new Harness();
    h.join(...devices(2));
    h.start({ rounds: 2, clientsPerRound: 2, minUpdates: 1 });
    for (const id of h.state.current!.selected) h.update(id);
    expect(h.state.phase).toBe('aggregating');
    const first = h.send({ type: 'round:aggregated', runId: 1, round: 1, attempt: 1, version: 2 });
    // round 1 is recorded and published at once, its model evaluated while round 2 trains
    expect(first.map((e) => e.type)).toEqual(['round:record', 'model:publish', 'model:evaluate', 'round:start']);
    expect(h.state.phase).toBe('training');
    for (const id of h.state.current!.selected) h.update(id);
    h.send({ type: 'round:evaluated', runId: 1, round: 1, attempt: 1, version: 2, accuracy: 0.8, loss: 0.5 });
    h.send({ type: 'round:aggregated', runId: 1, round: 2, attempt: 1, version: 3 });
    expect(h.state.phase).toBe('evaluating'); // the last round waits for its own
    h.send({ type: 'round:evaluated', runId: 1, round: 2, attempt: 1, version: 3, accuracy: 0.9, loss: 0.3 });
    expect(h.state.phase).toBe('done');
    expect(h.started().map((e) => e.type === 'round:start' && e.round)).toEqual([1, 2]);
    const writes = h.effects.flatMap((e) => (e.type === 'round:record' ? [[e.record.round, e.record.modelVersion, e.record.testAccuracy, e.record.evaluationPending ?? false, e.evaluated ?? false]] : []));
    expect(writes).toEqual([[1, 2, null, true, false], [1, 2, 0.8, false, true], [2, 3, 0.9, false, false]]);
    expect([...h.state.devices.values()].every((d) => !d.busy)).toBe(true);
    expect(h.effects.filter((e) => e.type !== 'timer:set').at(-1)).toMatchObject({ type: 'run:finished', status: 'done' });
  });

  it('ignores stale reports of aggregation and evaluation', () => {
    const h = new Harness();
    h.join(...devices(2));
    h.start({ rounds: 2, clientsPerRound: 2, minUpdates: 1 });
    for (const id of h.state.current!.selected) h.update(id);
    expect(h.send({ type: 'round:evaluated', runId: 1, round: 1, attempt: 1, version: 2, accuracy: 1, loss: 0 })).toEqual([]);
    expect(h.send({ type: 'round:aggregated', runId: 1, round: 1, attempt: 2, version: 2 })).toEqual([]);
    expect(h.state.phase).toBe('aggregating');
  });

  it('stop ends the round and the run; a new run can start', () => {
    const h = new Harness();
    h.join(...devices(2));
    h.start({ clientsPerRound: 2 });
    const effects = h.send({ type: 'run:stop' });
    expect(effects.map((e) => e.type)).toEqual(['round:notify-end', 'round:record', 'run:finished']);
    expect(effects.find((e) => e.type === 'round:record')).toMatchObject({ record: { round: 1, status: 'stopped', completed: 0 } });
    expect(h.state.phase).toBe('stopped');
    expect(() => h.start({}, 2)).not.toThrow();
    expect(() => h.start({}, 3)).toThrow('cannot start run 3 while selecting');
  });

  it('rejects updates when no run is active', () => {
    const h = new Harness();
    h.join('x-device-1');
    expect(h.update('x-device-1', 1, 1, 1)[0]).toMatchObject({ code: 'NO_ACTIVE_ROUND' });
  });
});

describe('run config validation', () => {
  it('reports every bad field at once, the cross-field rule included', async () => {
    const { validateRunConfig } = await import('../shared/schemas.ts');
    const r = validateRunConfig({ rounds: 0, batchSize: 2.5, minUpdates: 9, model: 'resnet' });
    expect(r.ok).toBe(false);
    expect(!r.ok && r.issues).toEqual([
      { field: 'model', message: 'must be one of cnn-small, cnn, mlp' },
      { field: 'rounds', message: 'must be at least 1' },
      { field: 'batchSize', message: 'must be a whole number' },
      { field: 'minUpdates', message: 'minUpdates must not exceed clientsPerRound' },
    ]);
    expect(validateRunConfig({})).toMatchObject({ ok: true, config: { model: 'cnn-small', clientsPerRound: 4, overSelect: 1.3 } });
    expect(validateRunConfig({ extra: 1 })).toMatchObject({ ok: false, issues: [{ field: 'config' }] });
  });

  it('refuses settings that would silently do nothing, naming the field', async () => {
    const { validateRunConfig } = await import('../shared/schemas.ts');
    const issues = (input: object) => {
      const r = validateRunConfig(input);
      return r.ok ? [] : r.issues;
    };
    // ⌊0.2 × 4⌋ = 0 … but the round may close with minUpdates = 2: nothing can be trimmed then.
    expect(issues({ aggregation: 'trimmed-mean' })).toEqual([{ field: 'minUpdates', message: 'trimmed-mean needs minUpdates ≥ 3: with 2 updates it cannot trim one at each end' }]);
    expect(issues({ aggregation: 'trimmed-mean', clientsPerRound: 10, minUpdates: 4, trimFraction: 0.2 })).toEqual([{ field: 'trimFraction', message: 'trims nothing when a round closes with minUpdates = 4 updates (⌊0.2 × 4⌋ = 0): use at least 0.25' }]);
    expect(issues({ aggregation: 'trimmed-mean', clientsPerRound: 10, minUpdates: 5, trimFraction: 0.2 })).toEqual([]);
    expect(issues({ aggregation: 'median', minUpdates: 2 })).toEqual([{ field: 'minUpdates', message: 'median needs minUpdates ≥ 3: a round may close with 2, and the median of two updates is their mean' }]);
    expect(issues({ trimFraction: 0.1 })).toEqual([{ field: 'trimFraction', message: 'has no effect: aggregation is fedavg, not trimmed-mean' }]);
    expect(issues({ updateCodec: 'q8', topkFraction: 0.05 })).toEqual([{ field: 'topkFraction', message: 'has no effect: the codec q8 has no topk stage' }]);
    expect(issues({ updateCodec: 'topk+q8', randFraction: 0.1, quantBlock: 64 })).toEqual([{ field: 'randFraction', message: 'has no effect: the codec topk+q8 has no rand stage' }]);
    expect(issues({ updateCodec: 'float16', quantBlock: 64 })).toEqual([{ field: 'quantBlock', message: 'has no effect: the codec float16 does not quantize' }]);
    // The defaults of fields a codec does not use are fine: the form sends every field.
    expect(issues({ updateCodec: 'q8', topkFraction: 0.01, randFraction: 0.25, quantBlock: 256, trimFraction: 0.2 })).toEqual([]);
  });
});

describe('device join tokens', () => {
  it('refuses what cannot go with secure aggregation, on its field', async () => {
    const { validateRunConfig } = await import('../shared/schemas.ts');
    const bad = validateRunConfig({ secureAggregation: true, aggregation: 'median', updateCodec: 'q8', minUpdates: 2, secAggNeighbours: 5 });
    expect(!bad.ok && [...new Set(bad.issues.map((i) => i.field))].sort()).toEqual(['aggregation', 'clipNorm', 'minUpdates', 'secAggNeighbours', 'updateCodec']);
    expect(!bad.ok && bad.issues.find((i) => i.field === 'clipNorm')?.message).toMatch(/needs clipNorm > 0/);
    const wraps = validateRunConfig({ secureAggregation: true, clipNorm: 1, clientsPerRound: 10_000, overSelect: 10, minUpdates: 3, maxExamplesPerDevice: 60_000 });
    expect(!wraps.ok && wraps.issues).toEqual([expect.objectContaining({ field: 'maxExamplesPerDevice', message: expect.stringMatching(/wrap/) })]);
    const minority = validateRunConfig({ secureAggregation: true, clipNorm: 1, clientsPerRound: 10, minUpdates: 3, secAggNeighbours: 6, secAggThreshold: 3 });
    expect(!minority.ok && minority.issues).toEqual([expect.objectContaining({ field: 'secAggThreshold', message: expect.stringMatching(/more than half/) })]);
    expect(validateRunConfig({ secAggThreshold: 3 })).toMatchObject({ ok: false, issues: [{ field: 'secAggThreshold', message: 'has no effect: secure aggregation is off' }] });
    expect(validateRunConfig({ secureAggregation: true, clipNorm: 5, clientsPerRound: 5, minUpdates: 3 })).toMatchObject({ ok: true });
  });

  it('a run that requires a token selects only the devices that presented it', () => {
    const h = new Harness();
    h.send({ type: 'device:joined', deviceId: 'with-token-1', examples: 10, joinToken: 'secret-token' });
    h.send({ type: 'device:joined', deviceId: 'with-token-2', examples: 10, joinToken: 'secret-token' });
    h.send({ type: 'device:joined', deviceId: 'wrong-token-1', examples: 10, joinToken: 'guess-guess' });
    h.join('no-token-1');
    h.start({ clientsPerRound: 2, overSelect: 2, joinToken: 'secret-token' });
    expect([...h.state.current!.selected].sort()).toEqual(['with-token-1', 'with-token-2']);
  });
});

describe('round coordinator: a secure round, as a clock and as an attacker', () => {
  const SECURE: RunConfigInput = { clientsPerRound: 5, overSelect: 1, minUpdates: 3, clipNorm: 5, secureAggregation: true, roundTimeoutMs: 120_000, selectionTimeoutMs: 0 };
  let message = 0;
  const secagg = (h: Harness, what: 'keys' | 'shares' | 'reveal', deviceId: string, extra: { invalid?: string; round?: number } = {}) =>
    h.send({ type: 'secagg:received', what, message: ++message, deviceId, bytes: 100, runId: 1, round: extra.round ?? h.state.run!.round, attempt: 1, ...(extra.invalid ? { invalid: extra.invalid } : {}) });
  const timers = (h: Harness) => h.effects.filter((e) => e.type === 'timer:set').map((e) => (e as { at: number | null }).at);
  const ids = devices(5);

  it('a device silent at the keys stage is left out when the stage ends; the round goes on with the others', async () => {
    const { SECAGG_STAGE_MS } = await import('../server/fl/coordinator.ts');
    const h = new Harness();
    h.join(...ids);
    h.start(SECURE);
    for (const id of ids.slice(0, 4)) secagg(h, 'keys', id);
    expect(timers(h).at(-1)).toBe(SECAGG_STAGE_MS); // waits for the fifth, no longer
    const next = h.send({ type: 'tick' }, SECAGG_STAGE_MS);
    const named = next.find((e) => e.type === 'secagg:neighbours');
    expect(named && Object.keys((named as { neighbours: object }).neighbours).sort()).toEqual(ids.slice(0, 4));
    // the silent device cannot join later, nor send an update
    expect(secagg(h, 'keys', ids[4]!)[0]).toMatchObject({ type: 'secagg:answer', error: { code: 'WRONG_ROUND' } });
    for (const id of ids.slice(0, 4)) secagg(h, 'shares', id);
    expect(h.update(ids[4]!)[0]).toMatchObject({ type: 'update:reject', code: 'NOT_SELECTED' });
    for (const id of ids.slice(0, 4)) h.update(id);
    expect(h.state.phase).toBe('aggregating');
    const reveals = ids.slice(0, 4).flatMap((id) => secagg(h, 'reveal', id));
    const aggregate = reveals.find((e) => e.type === 'round:aggregate');
    expect(aggregate).toMatchObject({ updates: 4, secagg: { t: 2, inputs: ids.slice(0, 4) } });
    h.finish(1);
    const record = h.effects.find((e) => e.type === 'round:record');
    expect(record).toMatchObject({ record: { status: 'completed', secureAggregation: { selected: 5, advertised: 4, shared: 4, inputs: 4, revealed: 4, neighbours: 3, threshold: 2 } } });
  });

  it('silence at the shares stage and during unmasking: each stage waits its time, then decides', async () => {
    const { SECAGG_STAGE_MS } = await import('../server/fl/coordinator.ts');
    const six = devices(6);
    const h = new Harness();
    h.join(...six);
    h.start({ ...SECURE, clientsPerRound: 6 }); // k = 5, t = 3: two may fall out of any neighbourhood
    for (const id of six) secagg(h, 'keys', id);
    for (const id of six.slice(0, 5)) secagg(h, 'shares', id); // the sixth never shares
    h.send({ type: 'tick' }, h.now + SECAGG_STAGE_MS - 1); // early: nothing yet
    expect(h.effects.some((e) => e.type === 'secagg:forward')).toBe(false);
    const forward = h.send({ type: 'tick' }, h.now + 1).find((e) => e.type === 'secagg:forward');
    expect(forward).toMatchObject({ survivors: six.slice(0, 5) });
    for (const id of six.slice(0, 5)) h.update(id);
    const t0 = h.now;
    // one of the five never reveals: after the unmask wait, the shares of the other four suffice
    for (const id of six.slice(0, 4)) secagg(h, 'reveal', id);
    expect(h.effects.some((e) => e.type === 'round:aggregate')).toBe(false);
    expect(timers(h).at(-1)).toBe(t0 + SECAGG_STAGE_MS);
    const after = h.send({ type: 'tick' }, t0 + SECAGG_STAGE_MS);
    expect(after.find((e) => e.type === 'round:aggregate')).toMatchObject({ updates: 5 });
  });

  it('fails the round with its reason when the survivors cannot rebuild a secret, and redoes it', () => {
    const h = new Harness();
    h.join(...ids);
    h.start({ ...SECURE, maxRoundRetries: 1 });
    for (const id of ids) secagg(h, 'keys', id);
    for (const id of ids) secagg(h, 'shares', id);
    for (const id of ids.slice(0, 3)) h.update(id);
    h.send({ type: 'device:left', deviceId: ids[3]! });
    h.send({ type: 'device:left', deviceId: ids[4]! }); // the round closes with three inputs
    const failed = [ids[0]!, ids[1]!, ids[2]!].flatMap((id) => secagg(h, 'reveal', id));
    expect(failed.find((e) => e.type === 'round:record')).toMatchObject({ record: { status: 'failed', reason: expect.stringMatching(/secure aggregation: 2 of the 3 shares needed to unmask/) }, willRetry: true });
    expect(failed.some((e) => e.type === 'round:notify-end')).toBe(true);
    expect(h.started().at(-1)).toMatchObject({ round: 1, attempt: 2 });
  });

  const askedToReveal = (h: Harness) => Object.keys((h.effects.findLast((e) => e.type === 'secagg:unmask') as { requests: object }).requests);
  /** 26 over-selected devices (K = 20, overSelect 1.3, so k = 10 and t = 6) through keys and shares; the ring the server drew */
  const overSelected = () => {
    const h = new Harness();
    const all = devices(26);
    h.join(...all);
    h.start({ ...SECURE, clientsPerRound: 20, overSelect: 1.3 });
    for (const id of all) secagg(h, 'keys', id);
    for (const id of all) secagg(h, 'shares', id);
    const named = h.effects.find((e) => e.type === 'secagg:neighbours') as { neighbours: Readonly<Record<string, readonly string[]>> };
    return { h, all, ring: named.neighbours };
  };

  it('over-selected: K inputs close the round only once every mask can be removed without the devices still training', () => {
    const { h, all, ring } = overSelected();
    // the six still training hold five of x's ten neighbours: with the first twenty inputs x's key has 5 of the 6 shares it needs
    const x = all[0]!;
    const training = [...ring[x]!.slice(0, 5), all.find((id) => id !== x && !ring[x]!.includes(id))!];
    const first = all.filter((id) => !training.includes(id));
    for (const id of first) h.update(id);
    expect(h.state.current!.accepted).toHaveLength(20);
    expect(h.state.phase).toBe('training'); // closing now would fail at unmasking
    expect(describeWaiting(h.state, h.now)).toMatch(/20 inputs in, waiting for more until every device's masks can be removed \(t = 6 of its 10 neighbours/);
    h.update(training[0]!); // x now has six neighbours in the sum
    expect(h.state.phase).toBe('aggregating');
    const reveals = askedToReveal(h).flatMap((id) => secagg(h, 'reveal', id));
    expect(reveals.find((e) => e.type === 'round:aggregate')).toMatchObject({ updates: 21 });
  });

  it('over-selected: whatever order the inputs come in, the round closes before the last of them and unmasks', () => {
    let early = 0;
    for (let seed = 1; seed <= 40; seed++) {
      const { h, all } = overSelected();
      const order = shuffleInPlace([...all], createRng(seed));
      for (const id of order) {
        if (h.state.phase !== 'training') break;
        h.update(id);
      }
      const inputs = h.state.current!.accepted.length;
      if (inputs < 26) early++;
      const end = askedToReveal(h).flatMap((id) => secagg(h, 'reveal', id));
      expect(end.find((e) => e.type === 'round:aggregate'), `seed ${seed}`).toMatchObject({ updates: inputs });
    }
    expect(early).toBeGreaterThan(30); // over-selection still spares most rounds their slowest devices
  });

  it('refuses what a selected device must not send: a forged message, one for another round, one twice, one at the wrong stage', () => {
    const h = new Harness();
    h.join(...ids);
    h.start(SECURE);
    expect(secagg(h, 'keys', ids[0]!, { invalid: 'the keys of x are not signed by its identity key for this round' })[0]).toMatchObject({ error: { code: 'BAD_MESSAGE' } });
    expect(h.state.current!.refused).toEqual([ids[0]]);
    expect(secagg(h, 'keys', ids[1]!, { round: 7 })[0]).toMatchObject({ error: { code: 'WRONG_ROUND' } });
    secagg(h, 'keys', ids[1]!);
    expect(secagg(h, 'keys', ids[1]!)[0]).toMatchObject({ error: { code: 'DUPLICATE' } });
    expect(secagg(h, 'shares', ids[1]!)[0]).toMatchObject({ error: { code: 'WRONG_ROUND', message: expect.stringContaining('keys stage') } });
    expect(secagg(h, 'reveal', ids[1]!)[0]).toMatchObject({ error: { code: 'WRONG_ROUND' } });
    expect(h.update(ids[1]!)[0]).toMatchObject({ type: 'update:reject', code: 'WRONG_ROUND' });
  });
});

describe('round coordinator: a differentially private run', () => {
  const DP: RunConfigInput = { clientsPerRound: 10, minUpdates: 1, rounds: 50, selectionTimeoutMs: 0, dp: { noiseMultiplier: 1, clipNorm: 1, targetDelta: 1e-5 } };
  const start = (h: Harness, config: RunConfigInput, samplingSeed = 42) => h.send({ type: 'run:start', runId: 1, config: runConfigSchema.parse(config), samplingSeed });
  const roundOnce = (h: Harness) => {
    const run = h.state.run!;
    for (const id of h.state.current!.selected) h.update(id, run.round, run.attempt);
    if (h.state.phase === 'training') h.send({ type: 'tick' }, h.now + 200_000); // the deadline, for a round nobody was sampled into
    if (h.state.phase === 'aggregating') h.finish(run.round, run.round + 1);
  };

  it('samples each present device with chance q = K / N, and records ε growing round after round', () => {
    const h = new Harness();
    h.join(...devices(100));
    start(h, DP);
    const sizes: number[] = [];
    for (let r = 0; r < 20 && h.state.phase === 'training'; r++) {
      sizes.push(h.state.current!.selected.length);
      expect(h.state.current!.privacy).toEqual({ q: 0.1, expected: 10, clip: 1, noiseStd: 1 });
      roundOnce(h);
    }
    // Poisson sampling: the round size varies around K = 10 (binomial, sd 3)
    expect(new Set(sizes).size).toBeGreaterThan(2);
    const mean = sizes.reduce((a, b) => a + b, 0) / sizes.length;
    expect(mean).toBeGreaterThan(7);
    expect(mean).toBeLessThan(13);
    const records = h.records();
    const eps = records.map((r) => r.privacy!.epsilon);
    for (let i = 1; i < eps.length; i++) expect(eps[i]).toBeGreaterThan(eps[i - 1]!);
    expect(records[0]!.privacy).toMatchObject({ delta: 1e-5, noiseMultiplier: 1, clipNorm: 1, samplingRate: 0.1, expectedDevices: 10 });
    expect(eps[0]).toBeCloseTo(epsilonAfter(0.1, 1, 1, 1e-5).epsilon, 9);
    expect(eps.at(-1)).toBeCloseTo(epsilonAfter(0.1, 1, eps.length, 1e-5).epsilon, 9);
  });

  it('stops before the round that would pass the ε budget, and says so', () => {
    const h = new Harness();
    h.join(...devices(100));
    const allowed = roundsWithin(3, 0.1, 1, 1e-5);
    expect(allowed).toBeGreaterThan(3);
    start(h, { ...DP, dp: { noiseMultiplier: 1, clipNorm: 1, epsilonBudget: 3 } });
    for (let r = 0; r < 100 && h.state.phase === 'training'; r++) roundOnce(h);
    expect(h.state.phase).toBe('done');
    const records = h.records();
    expect(records).toHaveLength(allowed);
    expect(records.at(-1)!.privacy!.epsilon).toBeLessThanOrEqual(3);
    expect(h.effects.find((e) => e.type === 'run:finished')).toMatchObject({ status: 'done', reason: expect.stringMatching(new RegExp(`privacy budget: round ${allowed + 1} would bring ε from .* over the budget of 3`)) });
  });

  it('a resumed run goes on from what its released rounds spent', () => {
    const h = new Harness();
    h.join(...devices(100));
    h.send({ type: 'run:start', runId: 1, config: runConfigSchema.parse(DP), samplingSeed: 7, fromRound: 6, released: [{ q: 0.1, rounds: 5 }] });
    roundOnce(h);
    const record = h.effects.find((e) => e.type === 'round:record') as { record: RoundRecord };
    expect(record.record.round).toBe(6);
    expect(record.record.privacy!.epsilon).toBeCloseTo(epsilonAfter(0.1, 1, 6, 1e-5).epsilon, 9);
  });

  it('adaptive clipping: the bound moves toward the target quantile of the norms, and the noise is split with the count', () => {
    const h = new Harness();
    h.join(...devices(100));
    start(h, { ...DP, dp: { noiseMultiplier: 1, clipNorm: 'adaptive', initialClipNorm: 0.1, targetQuantile: 0.5, clipLearningRate: 0.2 } });
    const first = h.state.current!.privacy!;
    // σ_b = max(10/20, z) = 1, so z_Δ = (1 − 1/4)^(−½) on the updates
    expect(first).toMatchObject({ clip: 0.1, noiseStd: expect.closeTo(0.1 / Math.sqrt(0.75), 12) });
    for (const id of h.state.current!.selected) h.update(id); // the harness's updates have norm 1: all above 0.1
    const aggregate = h.effects.find((e) => e.type === 'round:aggregate') as { clipCount: { unclipped: number; noiseStd: number; expected: number } };
    expect(aggregate.clipCount).toEqual({ unclipped: 0, noiseStd: 1, expected: 10 });
    // the service reports the noisy share left unclipped (here 0): the bound grows by e^{0.2 · 0.5}
    h.send({ type: 'round:aggregated', runId: 1, round: 1, attempt: 1, version: 2, unclippedShare: 0 });
    h.send({ type: 'round:evaluated', runId: 1, round: 1, attempt: 1, version: 2, accuracy: 0.5, loss: 1 });
    const record = h.effects.find((e) => e.type === 'round:record') as { record: RoundRecord };
    expect(record.record.privacy).toMatchObject({ clipNorm: 0.1, adaptiveClipping: true });
    expect(h.state.current!.privacy!.clip).toBeCloseTo(0.1 * Math.exp(0.1), 12);
  });

  it('samples from the secret seed, not the public one', () => {
    const pick = (samplingSeed: number) => {
      const h = new Harness();
      h.join(...devices(50));
      start(h, DP, samplingSeed);
      return h.state.current!.selected.join();
    };
    expect(pick(1)).toBe(pick(1));
    expect(pick(1)).not.toBe(pick(2));
  });

  it('refuses what the accounting does not cover, on its field', async () => {
    const { validateRunConfig } = await import('../shared/schemas.ts');
    const r = validateRunConfig({ dp: { noiseMultiplier: 1, clipNorm: 1 }, secureAggregation: true, aggregation: 'median', minUpdates: 3, clipNorm: 2 });
    expect(!r.ok && [...new Set(r.issues.map((i) => i.field))].sort()).toEqual(['aggregation', 'clipNorm']);
    // with secure aggregation the devices add the noise (distributed DP): a fixed bound, every device weighing 1
    expect(validateRunConfig({ dp: { noiseMultiplier: 1, clipNorm: 1 }, secureAggregation: true, minUpdates: 3 })).toMatchObject({ ok: true, config: { dp: { dropoutTolerance: 0.2 } } });
    expect(validateRunConfig({ dp: { noiseMultiplier: 1, clipNorm: 'adaptive' }, secureAggregation: true, minUpdates: 3 })).toMatchObject({ ok: false, issues: [{ field: 'dp.clipNorm', message: expect.stringMatching(/secure aggregation does not sum/) }] });
    expect(validateRunConfig({ dp: { noiseMultiplier: 1, clipNorm: 1, dropoutTolerance: 0.3 } })).toMatchObject({ ok: false, issues: [{ field: 'dp.dropoutTolerance', message: expect.stringMatching(/only under secure aggregation/) }] });
    expect(validateRunConfig({ dp: { noiseMultiplier: 1, clipNorm: 'auto' } })).toMatchObject({ ok: false, issues: [{ field: 'dp.clipNorm', message: 'must be a number > 0, or "adaptive"' }] });
    expect(validateRunConfig({ dp: { noiseMultiplier: 1, clipNorm: 1, targetQuantile: 0.7 } })).toMatchObject({ ok: false, issues: [{ field: 'dp.targetQuantile', message: 'has no effect: dp.clipNorm is not "adaptive"' }] });
    expect(validateRunConfig({ dp: { noiseMultiplier: 0, clipNorm: 1 } })).toMatchObject({ ok: false, issues: [{ field: 'dp.noiseMultiplier' }] });
  });
});
