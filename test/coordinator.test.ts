import { describe, expect, it } from 'vitest';
import { runConfigSchema, type RunConfigInput } from '../shared/schemas.ts';
import { initialState, step, type CoordinatorEvent, type CoordinatorState, type Effect } from '../server/fl/coordinator.ts';

/** Drives the reducer like the service does, collecting effects; no sockets, no timers. */
class Harness {
  state: CoordinatorState = initialState();
  effects: Effect[] = [];
  now = 0;
  send(event: CoordinatorEvent, at = this.now): Effect[] {
    this.now = at;
    const r = step(this.state, event, at);
    this.state = r.state;
    this.effects.push(...r.effects);
    return r.effects;
  }
  join(...ids: string[]) {
    for (const id of ids) this.send({ type: 'device:joined', deviceId: id });
  }
  start(config: RunConfigInput, runId = 1) {
    return this.send({ type: 'run:start', runId, config: runConfigSchema.parse(config) });
  }
  started() {
    return this.effects.filter((e) => e.type === 'round:start');
  }
  update(deviceId: string, round = this.state.run!.round, attempt = this.state.run!.attempt, runId = this.state.run!.id) {
    return this.send({ type: 'update:received', deviceId, runId, round, attempt });
  }
}

const devices = (n: number) => Array.from({ length: n }, (_, i) => `device-${String(i).padStart(2, '0')}`);

describe('round coordinator', () => {
  it('over-selects ceil(K · overSelect) idle devices and waits for K', () => {
    const h = new Harness();
    h.join(...devices(10));
    const effects = h.start({ clientsPerRound: 4, overSelect: 1.3, roundTimeoutMs: 60_000 });
    const start = effects.find((e) => e.type === 'round:start');
    expect(start?.type === 'round:start' && start.deviceIds).toHaveLength(6);
    expect(h.state.phase).toBe('training');
    expect(effects).toContainEqual({ type: 'timer:set', at: 60_000 });
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
    expect(h.effects).toContainEqual({ type: 'timer:set', at: 5_000 });
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
    expect(h.update(selected[0]!)).toEqual([{ type: 'update:accept', deviceId: selected[0], round: 1 }]);
    h.update(selected[1]!);
    const closing = h.update(selected[2]!);
    expect(closing.map((e) => e.type)).toEqual(['update:accept', 'round:notify-end', 'round:close']);
    const close = closing.find((e) => e.type === 'round:close');
    expect(close?.type === 'round:close' && close.closed.accepted).toEqual(selected.slice(0, 3));
    expect(close?.type === 'round:close' && close.closed.closedBy).toBe('quorum');
    expect(h.state.phase).toBe('aggregating');
    const late = h.update(selected[3]!);
    expect(late).toEqual([{ type: 'update:reject', deviceId: selected[3], code: 'ROUND_FULL', message: expect.stringContaining('the round is closed') }]);
  });

  it('ignores duplicate and unsolicited updates, and updates for another round', () => {
    const h = new Harness();
    h.join(...devices(3), 'bystander-1');
    h.start({ clientsPerRound: 4, overSelect: 1, minUpdates: 2 });
    const [a] = h.state.current!.selected;
    h.update(a!);
    expect(h.update(a!)[0]).toMatchObject({ type: 'update:reject', code: 'DUPLICATE' });
    expect(h.update('stranger-9')[0]).toMatchObject({ type: 'update:reject', code: 'NOT_SELECTED' });
    expect(h.update(h.state.current!.selected[1]!, 7)[0]).toMatchObject({ type: 'update:reject', code: 'WRONG_ROUND' });
    expect(h.state.current!.accepted).toEqual([a]);
    expect(h.state.current!.rejected).toBe(2);
    expect(h.state.current!.late).toBe(1);
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
    const effects = h.send({ type: 'tick' }, 10_000);
    const close = effects.find((e) => e.type === 'round:close');
    expect(close?.type === 'round:close' && close.closed.closedBy).toBe('deadline');
    expect(h.state.phase).toBe('aggregating');
  });

  it('at the deadline with < minUpdates fails the round visibly and retries it, then fails the run', () => {
    const h = new Harness();
    h.join(...devices(2));
    h.start({ clientsPerRound: 2, minUpdates: 2, roundTimeoutMs: 1_000, maxRoundRetries: 1 });
    h.update(h.state.current!.selected[0]!);
    const first = h.send({ type: 'tick' }, 1_000);
    const failed = first.find((e) => e.type === 'round:failed');
    expect(failed).toMatchObject({ type: 'round:failed', round: 1, attempt: 1, willRetry: true, reason: 'deadline passed with 1 of the 2 required updates (0 dropped)' });
    expect(h.state.phase).toBe('training');
    expect(h.state.run).toMatchObject({ round: 1, attempt: 2 });
    const second = h.send({ type: 'tick' }, 2_000);
    expect(second.find((e) => e.type === 'round:failed')).toMatchObject({ willRetry: false });
    expect(second.find((e) => e.type === 'run:finished')).toMatchObject({ status: 'failed' });
    expect(h.state.phase).toBe('failed');
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
    expect(effects.find((e) => e.type === 'round:failed')).toMatchObject({ reason: expect.stringContaining('2 of 3 selected devices dropped out') });
    expect(h.state.phase).toBe('failed');
  });

  it('runs every round to done, freeing devices between rounds', () => {
    const h = new Harness();
    h.join(...devices(2));
    h.start({ rounds: 2, clientsPerRound: 2, minUpdates: 1 });
    for (let r = 1; r <= 2; r++) {
      for (const id of h.state.current!.selected) h.update(id);
      expect(h.state.phase).toBe('aggregating');
      h.send({ type: 'round:aggregated', runId: 1, round: r });
      expect(h.state.phase).toBe('evaluating');
      h.send({ type: 'round:evaluated', runId: 1, round: r });
    }
    expect(h.state.phase).toBe('done');
    expect(h.started().map((e) => e.type === 'round:start' && e.round)).toEqual([1, 2]);
    expect([...h.state.devices.values()].every((d) => !d.busy)).toBe(true);
    expect(h.effects.at(-1)).toMatchObject({ type: 'run:finished', status: 'done' });
  });

  it('stop ends the round and the run; a new run can start', () => {
    const h = new Harness();
    h.join(...devices(2));
    h.start({ clientsPerRound: 2 });
    const effects = h.send({ type: 'run:stop' });
    expect(effects.map((e) => e.type)).toEqual(['round:notify-end', 'run:finished']);
    expect(h.state.phase).toBe('stopped');
    expect(() => h.start({}, 2)).not.toThrow();
    expect(() => h.start({}, 3)).toThrow('cannot start run 3 while selecting');
  });

  it('rejects updates when no run is active', () => {
    const h = new Harness();
    expect(h.send({ type: 'update:received', deviceId: 'x-device-1', runId: 1, round: 1, attempt: 1 })[0]).toMatchObject({ code: 'NO_ACTIVE_ROUND' });
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
});

describe('device join tokens', () => {
  it('a run that requires a token selects only the devices that presented it', () => {
    const h = new Harness();
    h.send({ type: 'device:joined', deviceId: 'with-token-1', joinToken: 'secret-token' });
    h.send({ type: 'device:joined', deviceId: 'with-token-2', joinToken: 'secret-token' });
    h.send({ type: 'device:joined', deviceId: 'wrong-token-1', joinToken: 'guess-guess' });
    h.join('no-token-1');
    h.start({ clientsPerRound: 2, overSelect: 2, joinToken: 'secret-token' });
    expect([...h.state.current!.selected].sort()).toEqual(['with-token-1', 'with-token-2']);
  });
});
