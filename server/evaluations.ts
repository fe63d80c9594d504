/**
 * Evaluation rounds and the canary, as a service beside the training coordinator: it picks the
 * devices, sends them the versions, takes their reports through the pure rules of fl/evaluation.ts,
 * closes the round on its clock, stores the record, and keeps the deployment — which version is
 * live (served as `latest`) and which is the candidate. One round at a time, and never during a
 * training run (a device does one thing at a time).
 */
import type { Deployment, DeviceInfo, EvaluationRecord, FederationEvent } from '../shared/api.ts';
import type { CanaryEnd, EvalStart, Result } from '../shared/protocol.ts';
import type { CanarySettings, EvalReport, RunConfig } from '../shared/schemas.ts';
import { closing, evaluationRecord, pickDevices, refusal, type EvaluationState } from './fl/evaluation.ts';
import type { Logger } from './log.ts';
import type { Store } from './store/store.ts';

/** How the service reaches devices (the socket transport; absent: evaluation rounds are not offered). */
export interface EvaluationPort {
  sendEvalStart(deviceId: string, msg: EvalStart): void;
  sendCanaryEnd(deviceId: string, msg: CanaryEnd): void;
}

export class EvaluationConflict extends Error {}
export class EvaluationRequestError extends Error {}

const DEPLOYMENT = 'deployment';
const EMPTY: Deployment = { live: null, candidate: null, last: null };

/** The live version as the store holds it (every node of a cluster reads the same): the promoted one, else the newest. */
export async function liveVersion(store: Store): Promise<number | undefined> {
  const stored = (await store.getSetting(DEPLOYMENT)) as Partial<Deployment> | undefined;
  return stored?.live ?? (await store.latestModel())?.version;
}

export interface EvaluationDeps {
  store: Store;
  clock: { now(): number; setTimer(at: number, fn: () => void): () => void };
  port: EvaluationPort | undefined;
  log: Logger;
  /** the connected devices as the registry knows them */
  devices: () => DeviceInfo[];
  /** why devices cannot be asked now (a training run is active), or undefined */
  busy: () => string | undefined;
  note: (level: FederationEvent['level'], kind: FederationEvent['kind'], message: string, fields: Record<string, unknown>) => void;
}

export class EvaluationService {
  private state: EvaluationState | undefined;
  private cancelTimer: (() => void) | undefined;
  /** the deployment as stored; writes go through `persist` in order */
  private deployment: Deployment = { ...EMPTY };
  private writes: Promise<void> = Promise.resolve();

  constructor(private readonly deps: EvaluationDeps) {}

  async open(): Promise<void> {
    const stored = (await this.deps.store.getSetting(DEPLOYMENT)) as Partial<Deployment> | undefined;
    // a canary cut short by a restart cannot finish: its candidate stays a candidate until the admin decides
    this.deployment = { ...EMPTY, ...(stored ?? {}) };
  }

  current(): Deployment {
    return this.deployment;
  }

  /** Whether an evaluation round is under way (then no training run may start). */
  running(): string | undefined {
    return this.state ? `evaluation ${this.state.plan.id} is under way until ${new Date(this.state.plan.deadline).toISOString()}` : undefined;
  }

  /** Starts an evaluation round of stored versions on a share of the idle connected devices; returns its number. */
  async start(request: { versions: number[]; share: number; timeoutMs: number; canary?: Pick<CanarySettings, 'margin' | 'alpha'> }): Promise<number> {
    const port = this.deps.port;
    if (!port) throw new EvaluationRequestError('evaluation rounds need the devices connected to this server (not offered by a cluster node or the simulation)');
    const why = this.running() ?? this.deps.busy();
    if (why) throw new EvaluationConflict(why);
    const models = await Promise.all(request.versions.map(async (v) => ({ v, record: await this.deps.store.getModel(v), weights: await this.deps.store.getModelWeights(v) })));
    const missing = models.find((m) => !m.record || !m.weights);
    if (missing) throw new EvaluationRequestError(`versions: model version ${missing.v} is not stored`);
    if (new Set(models.map((m) => m.record!.model)).size > 1) throw new EvaluationRequestError('versions: they must be of one model architecture');
    const idle = this.deps.devices().filter((d) => d.connected && d.heldOut > 0).map((d) => d.id);
    if (idle.length === 0) throw new EvaluationConflict('no connected device holds held-out data to evaluate on');
    const now = this.deps.clock.now();
    const id = await this.deps.store.createEvaluation(now);
    const selected = pickDevices(idle, request.share, id);
    const purpose = request.canary ? 'canary' : 'evaluate';
    this.state = { plan: { id, purpose, versions: request.versions, selected, startedAt: now, deadline: now + request.timeoutMs, ...(request.canary ? { canary: request.canary } : {}) }, reports: [], left: [] };
    const msg: EvalStart = { evalId: id, purpose, deadline: now + request.timeoutMs, models: models.map((m) => ({ version: m.v, model: m.record!.model, weights: m.weights! })) };
    for (const device of selected) port.sendEvalStart(device, msg);
    this.deps.note('info', 'round:started', `${purpose === 'canary' ? `canary ${id}: v${request.versions[1]} against live v${request.versions[0]}` : `evaluation ${id} of ${request.versions.map((v) => `v${v}`).join(', ')}`} on ${selected.length} of ${idle.length} devices`, { evalId: id, devices: selected.length });
    this.cancelTimer = this.deps.clock.setTimer(this.state.plan.deadline, () => this.tick());
    return id;
  }

  /** A device's report: counted, or refused with the reason. */
  report(deviceId: string, report: EvalReport): Result<null> {
    const state = this.state;
    if (!state) return { ok: false, error: { code: 'NO_ACTIVE_ROUND', message: `evaluation ${report.evalId} report from ${deviceId}: no evaluation round is under way` } };
    const heldOut = this.deps.devices().find((d) => d.id === deviceId)?.heldOut;
    const problem = refusal(state, deviceId, report, heldOut);
    if (problem) {
      this.deps.log.warn('evaluation report refused', { deviceId, reason: problem });
      return { ok: false, error: { code: report.evalId !== state.plan.id ? 'WRONG_ROUND' : state.reports.some((r) => r.deviceId === deviceId) ? 'DUPLICATE' : 'BAD_MESSAGE', message: problem } };
    }
    state.reports.push({ deviceId, report });
    this.tick();
    return { ok: true, data: null };
  }

  left(deviceId: string): void {
    const state = this.state;
    if (!state || !state.plan.selected.includes(deviceId) || state.left.includes(deviceId) || state.reports.some((r) => r.deviceId === deviceId)) return;
    state.left.push(deviceId);
    this.tick();
  }

  /** A training run ended: its final version goes live at once, or becomes a candidate when the run asked for a canary and something is live to compare with. */
  async runFinished(config: RunConfig, finalVersion: number): Promise<void> {
    const live = this.deployment.live;
    if (!config.canary || live === null || live === finalVersion) return this.setLive(finalVersion, 'the run finished');
    await this.startCanary(finalVersion, config.canary).catch((err: unknown) => {
      // no device to try it on: it waits as a candidate for the admin
      this.deps.log.warn('canary could not start', { version: finalVersion, error: err instanceof Error ? err.message : String(err) });
      this.persist({ ...this.deployment, candidate: { version: finalVersion, evalId: 0, startedAt: this.deps.clock.now(), ...config.canary! } });
    });
  }

  /** Tries `version` against the live one on a share of the devices. */
  async startCanary(version: number, settings: CanarySettings): Promise<number> {
    const live = this.deployment.live ?? (await this.deps.store.latestModel())?.version;
    if (live === undefined || live === version) throw new EvaluationRequestError(`version: v${version} is ${live === undefined ? 'the only model: nothing is live to compare it with' : 'already live'}`);
    const id = await this.start({ versions: [live, version], share: settings.share, timeoutMs: settings.timeoutMs, canary: { margin: settings.margin, alpha: settings.alpha } });
    this.persist({ ...this.deployment, live, candidate: { version, evalId: id, startedAt: this.deps.clock.now(), margin: settings.margin, alpha: settings.alpha, share: settings.share } });
    return id;
  }

  /** The admin's decision, at any time: the candidate goes live (promote) or is dropped (roll back). */
  decide(outcome: 'promoted' | 'rolled back'): Deployment {
    const candidate = this.deployment.candidate;
    if (!candidate) throw new EvaluationConflict('there is no candidate to decide on');
    if (this.state?.plan.id === candidate.evalId) this.close('decided by the admin before the canary ended', outcome);
    else this.apply(outcome, candidate.version, null);
    return this.deployment;
  }

  /** Stops timers (the process is going away). */
  shutdown(): void {
    this.cancelTimer?.();
    this.cancelTimer = undefined;
  }

  private tick(): void {
    const state = this.state;
    if (!state) return;
    const reason = closing(state, this.deps.clock.now());
    if (reason) this.close(reason);
  }

  private close(reason: string, adminOutcome?: 'promoted' | 'rolled back'): void {
    const state = this.state;
    if (!state) return;
    this.state = undefined;
    this.cancelTimer?.();
    this.cancelTimer = undefined;
    const record: EvaluationRecord = evaluationRecord(state, this.deps.clock.now(), reason);
    if (record.canary && adminOutcome) record.canary.outcome = 'decided by the admin';
    this.writes = this.writes.then(() => this.deps.store.saveEvaluation(record)).catch((err: unknown) => this.deps.log.error('could not store an evaluation', { evalId: record.id, error: String(err) }));
    const summary = record.results.map((r) => `v${r.version} ${r.accuracy === null ? 'no report' : `${(r.accuracy * 100).toFixed(2)} %`}`).join(', ');
    this.deps.note('info', 'round:evaluated', `${record.purpose} ${record.id} ${reason}: ${summary}`, { evalId: record.id });
    if (!record.canary) return;
    const outcome = adminOutcome ?? (record.canary.outcome as 'promoted' | 'rolled back');
    this.apply(outcome, record.canary.candidate, record);
    const end: CanaryEnd = { evalId: record.id, outcome, live: this.deployment.live ?? record.canary.live };
    for (const device of state.plan.selected) this.deps.port?.sendCanaryEnd(device, end);
  }

  private apply(outcome: 'promoted' | 'rolled back', version: number, record: EvaluationRecord | null): void {
    const live = outcome === 'promoted' ? version : this.deployment.live;
    this.persist({ live, candidate: null, last: record ?? this.deployment.last });
    this.deps.note(outcome === 'promoted' ? 'info' : 'warn', 'run:finished', `candidate v${version} ${outcome}${record?.canary ? `: difference ${(record.canary.difference * 100).toFixed(2)} pp, lower bound ${(record.canary.lowerBound * 100).toFixed(2)} pp against a margin of −${(record.canary.margin * 100).toFixed(2)} pp over ${record.canary.n} examples` : ' by the admin'}`, { version, outcome });
  }

  private setLive(version: number, why: string): void {
    this.persist({ ...this.deployment, live: version });
    this.deps.log.info('live model', { version, why });
  }

  private persist(next: Deployment): void {
    this.deployment = next;
    this.writes = this.writes.then(() => this.deps.store.setSetting(DEPLOYMENT, next)).catch((err: unknown) => this.deps.log.error('could not store the deployment', { error: String(err) }));
  }

  /** Resolves once every write asked for so far has landed. */
  flushed(): Promise<void> {
    return this.writes;
  }
}
