/**
 * A round's phases, on the server's clock — one definition for the record of a round, the
 * dashboard's live timeline and its charts, so they always agree:
 *
 *   waiting for devices   from the start of selection until the round's devices are selected
 *   devices at work       until the last update that counted arrived (download, training, upload)
 *   waiting for the close from then until the round closed: for the deadline, or the last answers
 *   aggregation           until the new model is stored
 *   evaluation            until it is evaluated on the test set
 *
 * They add up to the round's duration. How the devices spent their part (download, evaluation,
 * training, upload) is what they report, a detail of "devices at work".
 */

export const ROUND_PHASES = ['waiting for devices', 'devices at work', 'waiting for the close', 'aggregation', 'evaluation'] as const;
export type RoundPhase = (typeof ROUND_PHASES)[number];

/** The moments that divide a round, as the coordinator records them. */
export interface RoundTimeline {
  runId: number;
  round: number;
  attempt: number;
  selectionStartedAt: number;
  selectedAt?: number;
  /** when the last update that counted arrived */
  lastUpdateAt?: number;
  closedAt?: number;
  aggregatedAt?: number;
  evaluatedAt?: number;
  /** the round failed or was stopped at this moment */
  endedAt?: number;
  outcome?: 'completed' | 'failed' | 'stopped';
}

export interface PhaseSpan {
  phase: RoundPhase;
  start: number;
  end: number;
  /** false while the phase is still going on (its end is `now`) */
  done: boolean;
}

/** The phases a round has gone through so far, each with its start and end (`now` for the one under way). */
export function phaseSpans(t: RoundTimeline, now: number): PhaseSpan[] {
  const stop = t.endedAt ?? now;
  const spans: PhaseSpan[] = [];
  const add = (phase: RoundPhase, start: number, end: number | undefined) => {
    spans.push({ phase, start, end: end ?? stop, done: end !== undefined });
    return end !== undefined;
  };
  if (!add('waiting for devices', t.selectionStartedAt, t.selectedAt) || t.selectedAt === undefined) return spans;
  const lastUpdate = t.lastUpdateAt;
  if (t.closedAt === undefined) {
    // Under way (or failed before closing): at work until the last counted update, waiting since.
    add('devices at work', t.selectedAt, lastUpdate ?? t.endedAt);
    if (lastUpdate !== undefined) add('waiting for the close', lastUpdate, t.endedAt);
    return spans;
  }
  add('devices at work', t.selectedAt, lastUpdate ?? t.closedAt);
  add('waiting for the close', lastUpdate ?? t.closedAt, t.closedAt);
  if (!add('aggregation', t.closedAt, t.aggregatedAt) || t.aggregatedAt === undefined) return spans;
  add('evaluation', t.aggregatedAt, t.evaluatedAt);
  return spans;
}

/** The duration of each phase of a finished round; they add up to its duration. */
export interface RoundPhases {
  waitingForDevicesMs: number;
  devicesAtWorkMs: number;
  waitingForCloseMs: number;
  aggregationMs: number;
  evaluationMs: number;
}

const KEYS: Record<RoundPhase, keyof RoundPhases> = {
  'waiting for devices': 'waitingForDevicesMs',
  'devices at work': 'devicesAtWorkMs',
  'waiting for the close': 'waitingForCloseMs',
  aggregation: 'aggregationMs',
  evaluation: 'evaluationMs',
};

export const phaseKey = (phase: RoundPhase): keyof RoundPhases => KEYS[phase];

export function phaseDurations(t: RoundTimeline, now: number): RoundPhases {
  const out: RoundPhases = { waitingForDevicesMs: 0, devicesAtWorkMs: 0, waitingForCloseMs: 0, aggregationMs: 0, evaluationMs: 0 };
  for (const s of phaseSpans(t, now)) out[KEYS[s.phase]] += Math.max(0, s.end - s.start);
  return out;
}
