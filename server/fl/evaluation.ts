/**
 * Evaluation rounds (Flower's configure_evaluate / aggregate_evaluate without training): stored
 * versions go to a share of the devices, each evaluates them on its held-out data and reports
 * aggregates; the round closes when every selected device has answered or left, or at its deadline.
 * A canary is an evaluation round of [live, candidate] whose paired counts decide promotion
 * (shared/canary.ts). Pure: time comes in, the record goes out; the federation performs the I/O.
 */
import type { EvaluationRecord } from '../../shared/api.ts';
import { fairnessOf } from '../../shared/fairness.ts';
import { nonInferiority, type PairedCounts } from '../../shared/canary.ts';
import type { EvalReport } from '../../shared/schemas.ts';
import { hashString } from '../../shared/rng.ts';

export interface EvaluationPlan {
  id: number;
  purpose: 'evaluate' | 'canary';
  versions: number[];
  selected: string[];
  startedAt: number;
  deadline: number;
  /** the canary's test: the live version first in `versions`, the candidate second */
  canary?: { margin: number; alpha: number };
}

export interface EvaluationState {
  plan: EvaluationPlan;
  reports: { deviceId: string; report: EvalReport }[];
  left: string[];
}

/** The share of the idle devices an evaluation asks: at least one, picked by a hash of the evaluation and the device (no device is favoured across evaluations). */
export function pickDevices(idle: readonly string[], share: number, evalId: number): string[] {
  const count = Math.min(idle.length, Math.max(1, Math.ceil(share * idle.length - 1e-9)));
  return [...idle].sort((a, b) => hashString(`${evalId}:${a}`) - hashString(`${evalId}:${b}`) || a.localeCompare(b)).slice(0, count);
}

/** Why a device's report cannot count (undefined: it can). `heldOut`: the examples the device declared it holds aside. */
export function refusal(state: EvaluationState, deviceId: string, report: EvalReport, heldOut: number | undefined): string | undefined {
  const { plan } = state;
  const what = `evaluation ${plan.id} report from ${deviceId}`;
  if (report.evalId !== plan.id) return `${what}: it names evaluation ${report.evalId}`;
  if (!plan.selected.includes(deviceId)) return `${what}: the device was not asked`;
  if (state.reports.some((r) => r.deviceId === deviceId)) return `${what}: the device has already reported`;
  if (state.left.includes(deviceId)) return `${what}: the device left`;
  const versions = report.results.map((r) => r.version);
  if (versions.length !== plan.versions.length || versions.some((v, i) => v !== plan.versions[i])) return `${what}: results for ${versions.join(', ')}, expected ${plan.versions.join(', ')}`;
  if (heldOut === undefined || report.examples > heldOut) return `${what}: ${report.examples} examples, the device declared ${heldOut ?? 0} held out`;
  if (plan.canary && !report.paired) return `${what}: a canary report needs the paired counts`;
  return undefined;
}

/** Whether the round can close now, and why. */
export function closing(state: EvaluationState, now: number): string | undefined {
  const answered = state.reports.length + state.left.length;
  if (answered >= state.plan.selected.length) return `every selected device answered (${state.reports.length} reported)`;
  if (now >= state.plan.deadline) return `closed at the deadline with ${state.reports.length} of ${state.plan.selected.length} reports`;
  return undefined;
}

/** The round's record: the weighted metrics, their spread over devices, and a canary's test. */
export function evaluationRecord(state: EvaluationState, now: number, reason: string): EvaluationRecord {
  const { plan, reports } = state;
  const results = plan.versions.map((version, i) => {
    const of = reports.map((r) => ({ n: r.report.examples, ...r.report.results[i]! }));
    const examples = of.reduce((a, x) => a + x.n, 0);
    return {
      version,
      examples,
      accuracy: examples ? of.reduce((a, x) => a + x.n * x.accuracy, 0) / examples : null,
      loss: examples ? of.reduce((a, x) => a + x.n * x.loss, 0) / examples : null,
      spread: fairnessOf(of.map((x) => x.accuracy)),
    };
  });
  const record: EvaluationRecord = { id: plan.id, purpose: plan.purpose, versions: plan.versions, startedAt: plan.startedAt, endedAt: now, reason, selected: plan.selected.length, reported: reports.length, results };
  if (plan.canary) {
    const counts: PairedCounts[] = reports.map((r) => ({ n: r.report.examples, b: r.report.paired!.b, c: r.report.paired!.c }));
    const test = nonInferiority(counts, plan.canary.margin, plan.canary.alpha);
    record.canary = { ...test, live: plan.versions[0]!, candidate: plan.versions[1]!, outcome: test.decision === 'promote' ? 'promoted' : 'rolled back' };
  }
  return record;
}
