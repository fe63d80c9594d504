/**
 * The records the HTTP API and the dashboard's live channel return: one definition for the server
 * that writes them and the pages, scripts and tests that read them.
 */
import type { ModelName } from './models-names.ts';
import type { Hello, RunConfig, StateReport } from './schemas.ts';

export type RunStatus = 'running' | 'done' | 'failed' | 'stopped';

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
  participants: number;
  completed: number;
  dropped: number;
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
  /** each counted device: its example count and held-out accuracy before/after local training */
  devices: { id: string; numExamples: number; accuracyBefore: number; accuracyAfter: number; trainMs: number }[];
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
