/**
 * The records the HTTP API and the dashboard's live channel return: one definition for the server
 * that writes them and the pages, scripts and tests that read them.
 */
import type { ModelName } from './models-names.ts';
import type { Hello, RunConfig, StateReport } from './schemas.ts';

export type RunStatus = 'running' | 'done' | 'failed' | 'stopped';

/** The federation's phases (the round coordinator's state machine). */
export const PHASES = ['idle', 'selecting', 'training', 'aggregating', 'evaluating', 'done', 'failed', 'stopped'] as const;
export type Phase = (typeof PHASES)[number];

export interface RunRecord {
  id: number;
  config: RunConfig;
  status: RunStatus;
  reason: string | null;
  createdAt: number;
  finishedAt: number | null;
}

export interface PhaseTimings {
  /** waiting for enough devices before the round began */
  selectionMs: number;
  /** median over the counted devices, as each reported it */
  downloadMs: number;
  evaluateMs: number;
  trainMs: number;
  /** median over the counted devices of (arrival − start − download − evaluate − train) */
  uploadMs: number;
  aggregationMs: number;
  evaluationMs: number;
}

export interface RoundRecord {
  runId: number;
  round: number;
  attempt: number;
  status: 'completed' | 'failed';
  reason: string | null;
  /** devices selected */
  participants: number;
  /** updates counted */
  completed: number;
  /** selected devices whose update was refused (malformed, or claiming more examples than declared) */
  refused: number;
  /** selected devices that had neither answered nor dropped out when the round closed (silent or slow) */
  unanswered: number;
  dropped: number;
  /** updates for this round that arrived after it closed (while it was aggregated and evaluated) */
  late: number;
  rejected: number;
  /** counted updates that were scaled down to the run's L2 bound (clipNorm) */
  clipped: number;
  startedAt: number;
  durationMs: number;
  timings: PhaseTimings | null;
  bytesUp: number;
  bytesDown: number;
  testAccuracy: number | null;
  testLoss: number | null;
  /** mean over the counted devices of their held-out accuracy before/after local training */
  localAccuracyBefore: number | null;
  localAccuracyAfter: number | null;
  /** each counted device: the examples it claimed, what they weighed in FedAvg (capped by maxExamplesPerDevice), its held-out accuracy before/after local training */
  devices: { id: string; numExamples: number; weight: number; accuracyBefore: number; accuracyAfter: number; trainMs: number }[];
  modelVersion: number | null;
}

export interface ModelRecord {
  version: number;
  runId: number | null;
  round: number;
  model: ModelName;
  createdAt: number;
  testAccuracy: number | null;
  testLoss: number | null;
}

export interface DeviceInfo {
  id: string;
  backend: Hello['backend'];
  backendReason: string;
  examples: number;
  heldOut: number;
  labelHistogram: number[];
  state: StateReport['state'];
  progress: number | null;
  loss: number | null;
  connected: boolean;
  joinedAt: number;
  lastSeen: number;
  rounds: number;
  lastAccuracyBefore: number | null;
  lastAccuracyAfter: number | null;
  /** the global model version the device holds (null: none), for delta downloads */
  modelVersion: number | null;
}

/** What the dashboard's event log shows; also pushed live to admins. */
export interface FederationEvent {
  at: number;
  level: 'info' | 'warn';
  kind: 'device:joined' | 'device:left' | 'run:started' | 'run:finished' | 'round:started' | 'round:completed' | 'round:failed' | 'update:rejected';
  message: string;
}

/** The round under way, in counts. */
export interface RoundStatus {
  round: number;
  attempt: number;
  selected: number;
  /** updates counted so far */
  accepted: number;
  /** updates in, being decoded and validated */
  validating: number;
  /** selected devices whose update was refused */
  refused: number;
  dropped: number;
  deadline: number;
}

/** `GET /api/status`: what anyone may see. Per-device details need the admin token (the admin snapshot). */
export interface FederationStatus {
  phase: Phase;
  run: { id: number; config: RunConfig; round: number; attempt: number; reason: string | null } | null;
  round: RoundStatus | null;
  /** why the federation is waiting, in words (null when it is not) */
  waiting: string | null;
  modelVersion: number | null;
  /** connected devices */
  devices: number;
  counters: { rejectedUpdates: number; lateUpdates: number; badMessages: number };
}

/** What the dashboard's live channel pushes: the status, every known device and the round's timeline. */
export interface AdminSnapshot extends Omit<FederationStatus, 'devices'> {
  devices: DeviceInfo[];
  timeline: RoundTimeline | null;
  /** the server's clock, so the page can show countdowns without trusting its own */
  now: number;
}

export interface RoundTimeline {
  runId: number;
  round: number;
  attempt: number;
  selectionStartedAt: number;
  selectedAt?: number;
  /** the first device of the round to start evaluating or training (its download is done) */
  trainingStartedAt?: number;
  /** the first device of the round to start uploading */
  uploadStartedAt?: number;
  closedAt?: number;
  aggregatedAt?: number;
  evaluatedAt?: number;
  failedAt?: number;
}
