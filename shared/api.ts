/**
 * The records the HTTP API and the dashboard's live channel return: one definition for the server
 * that writes them and the pages, scripts and tests that read them.
 */
import type { ModelName } from './models-names.ts';
import type { RoundPhases, RoundTimeline } from './phases.ts';
import type { Fairness } from './fairness.ts';
import type { NonInferiority } from './canary.ts';
import type { DataQuality } from './data-quality.ts';
import type { MonitorRecord } from './monitor.ts';
import type { Hello, RunConfig, StateReport } from './schemas.ts';

export type { RoundPhases, RoundTimeline } from './phases.ts';

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

/** A run as the runs list shows it: its record and what came of it. */
export interface RunSummary extends RunRecord {
  roundsCompleted: number;
  /** round attempts that failed (and were retried, or ended the run) */
  failedAttempts: number;
  /** the test accuracy and model of its last completed round */
  finalTestAccuracy: number | null;
  finalModelVersion: number | null;
  /** from its start to its end (or to now, while it runs) */
  durationMs: number;
}

/** What the model archive's model-card.json says of a version: where it came from and how it does. */
export interface ModelCard {
  version: number;
  model: ModelName;
  parameters: number;
  createdAt: number;
  runId: number | null;
  round: number;
  /** the version it was trained from (the run's previous round), null for a run's initial model */
  parentVersion: number | null;
  testAccuracy: number | null;
  testLoss: number | null;
  /** the run's configuration (a join token is masked) */
  config: RunConfig | null;
  /** the round that produced it: devices counted, examples and FedAvg weight */
  /** weight is null when the round aggregated securely: the server never learns single weights */
  training: { devices: number; examples: number; weight: number | null } | null;
  format: 'tfjs layers-model: model.json + weights.bin (float32, little-endian)';
  /** (ε, δ) of the run up to the round that made this version, and the DP settings (null: not private) */
  privacy: PrivacyRecord | null;
  // ─── the registry's record (server/registry.ts): what the admin says, and what federated learning adds
  name: string | null;
  description: string | null;
  owner: string | null;
  /** the run's labels with the version's own over them */
  labels: Record<string, string>;
  framework: { name: 'TensorFlow.js'; version: string };
  /** how it was trained: the run's strategy, aggregation rule, update codec and download */
  strategy: string | null;
  aggregation: string | null;
  codec: string | null;
  /** the round that made it, with the label distribution its counted devices declared (null: unknown, or a secure round's devices declared none) */
  trainedBy: { devices: number; examples: number; labelDistribution: number[] | null } | null;
  /** every round of its lineage, back to a fresh model: device-rounds, distinct devices, examples, label distribution (summed over the rounds that declared one) */
  lineage: { rounds: number; deviceRounds: number; devices: number; examples: number; labelDistribution: number[] | null; ancestors: number[] };
  /** how the devices did with it: their held-out accuracy of it as the next round began (Flower's evaluate), its spread over them */
  federatedEvaluation: (Fairness & { round: number }) | null;
  /** the versions made from it */
  children: number[];
}

/** How the counted devices spent their part of a round, as they reported it (medians over them). */
export interface DeviceTimings {
  downloadMs: number;
  /** evaluating the global model on held-out data, before and after training */
  evaluateMs: number;
  trainMs: number;
  /** arrival − start − download − evaluation − training */
  uploadMs: number;
}

/** What a round with secure aggregation did at each stage of its protocol. */
export interface SecAggRecord {
  /** neighbours per device and the shares that rebuild a secret, in this round */
  neighbours: number;
  threshold: number;
  /** devices at each stage: selected, advertised keys, shared (and could be unmasked), sent a masked input, revealed */
  selected: number;
  advertised: number;
  shared: number;
  inputs: number;
  revealed: number;
  /** how long each stage took (the unmask stage until every reveal was in) */
  stageMs: { keys: number; shares: number; inputs: number; unmask: number };
}

/** What a round under user-level DP spent: (ε, δ) of the run so far, with the settings that gave it. */
export interface PrivacyRecord {
  /** ε after this round, composed over the run's released rounds (RDP accountant) */
  epsilon: number;
  delta: number;
  noiseMultiplier: number;
  /** the bound this round clipped to (under adaptive clipping, where the bound had moved to) */
  clipNorm: number;
  adaptiveClipping: boolean;
  /** the standard deviation of the noise added to the sum of updates */
  noiseStd: number;
  /** q: every present device's chance to be in this round (Poisson sampling) */
  samplingRate: number;
  /** q × the devices present: what the noisy sum is divided by */
  expectedDevices: number;
  /** under secure aggregation the devices added the noise (Skellam); absent in rounds recorded before it existed */
  distributed?: DistributedPrivacyRecord | null;
}

/** Distributed DP's round: who added noise, and what the server itself could learn. */
export interface DistributedPrivacyRecord {
  /** the noise is calibrated for this many inputs (⌈(1 − dropoutTolerance) × sampled⌉); more add more noise */
  minInputs: number;
  /** inputs in the sum */
  inputs: number;
  /** sensitivity of one device's integer vector, in quantized units (the noise's standard deviation is z × l2) */
  l2Sensitivity: number;
  l1Sensitivity: number;
  /** ε against the server, which knows who was sampled (no amplification), for a device in every released round so far */
  epsilonAgainstServer: number;
}

export interface RoundRecord {
  runId: number;
  round: number;
  attempt: number;
  status: 'completed' | 'failed' | 'stopped';
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
  /** when its selection began */
  startedAt: number;
  /** from the start of its selection to its evaluated model (or its failure): the sum of its phases */
  durationMs: number;
  /** the round's phases on the server's clock (phases.ts) */
  phases: RoundPhases;
  /** how the counted devices spent their part (null when none counted) */
  timings: DeviceTimings | null;
  bytesUp: number;
  bytesDown: number;
  testAccuracy: number | null;
  testLoss: number | null;
  /** true while the round's model is evaluated off the critical path (the next round already runs); its metrics follow in a rewrite of this record */
  evaluationPending?: boolean;
  /** mean over the counted devices of their held-out accuracy before/after local training */
  localAccuracyBefore: number | null;
  localAccuracyAfter: number | null;
  /** the spread of the counted devices' held-out accuracy of the round's global model (mean, worst and best 10 %, variance); null when none reported */
  fairness: Fairness | null;
  /** the same spread for the devices' personal models (fine-tuned), their distance-aware mix and an even mix, with the mean label distance; null when the devices reported none */
  personalization: { meanDistance: number; global: Fairness; personal: Fairness; mixed: Fairness; halfMix: Fairness } | null;
  /** each counted device: the examples it claimed, what they weighed in FedAvg (capped by maxExamplesPerDevice; null under secure aggregation), its held-out accuracy before/after local training */
  devices: { id: string; numExamples: number; weight: number | null; accuracyBefore: number; accuracyAfter: number; trainMs: number; labelDistance?: number; accuracyMixed?: number; accuracyHalfMix?: number }[];
  /** the update monitor's judgement of the counted devices: features, z-scores, isolation scores, flags, and the KS tests (monitor.ts) */
  monitoring?: MonitorRecord;
  /** the counted devices' declared label histograms, summed: what the round trained on (null: none counted, or one declared none) */
  labelDistribution?: number[] | null;
  modelVersion: number | null;
  /** set when the round aggregated securely: then the server never saw a device's update or weight (weight is null) */
  secureAggregation: SecAggRecord | null;
  /** set when the run is differentially private */
  privacy: PrivacyRecord | null;
}

export interface ModelRecord {
  version: number;
  runId: number | null;
  round: number;
  model: ModelName;
  createdAt: number;
  testAccuracy: number | null;
  testLoss: number | null;
  /** the version it was trained from: the run's previous version, or for a run's initial model the version it started from (null: a fresh initialization) */
  parentVersion: number | null;
  /** what the admin says of it (registry.ts) */
  meta: ModelMeta;
}

/** A version's registry metadata, set by the admin (PATCH /api/models/:version): free text and labels, never used by training. */
export interface ModelMeta {
  name: string | null;
  description: string | null;
  owner: string | null;
  labels: Record<string, string>;
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
  /** the scores of its data (data-quality.ts): its own, and integrity against the connected devices' population; null when it reported none */
  quality: DataQuality | null;
  /** the scores below the rules (the run's, or the defaults between runs), and what they mean for it */
  qualityFlags: string[];
  qualityAction: 'flag' | 'exclude' | null;
  /** the update monitor's verdict in the current run: flagged in some round, and quarantined when the run quarantines (monitor.ts) */
  monitor: 'flagged' | 'quarantined' | null;
}

/** What the dashboard's event log shows; also pushed live to admins. */
export interface FederationEvent {
  at: number;
  level: 'info' | 'warn';
  kind: 'device:joined' | 'device:left' | 'run:started' | 'run:finished' | 'round:started' | 'round:completed' | 'round:evaluated' | 'round:failed' | 'round:stopped' | 'update:rejected';
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

/** What the federation is doing, in the words the dashboard shows (finer than the phase). */
export type Stage = 'idle' | 'waiting for devices' | 'devices at work' | 'waiting for the deadline' | 'aggregating' | 'evaluating' | 'done' | 'failed' | 'stopped';

/** `GET /api/status`: what anyone may see. Per-device details need the admin token (the admin snapshot). */
export interface FederationStatus {
  phase: Phase;
  stage: Stage;
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


/** What an evaluation round came to, as stored and served (GET /api/evaluations). */
export interface EvaluationRecord {
  id: number;
  purpose: 'evaluate' | 'canary';
  versions: number[];
  startedAt: number;
  endedAt: number;
  reason: string;
  selected: number;
  reported: number;
  /** per version: the example-weighted accuracy and loss over the reporting devices, and the spread of their accuracies */
  results: { version: number; examples: number; accuracy: number | null; loss: number | null; spread: Fairness | null }[];
  /** a canary's test and what became of the candidate */
  canary?: NonInferiority & { live: number; candidate: number; outcome: 'promoted' | 'rolled back' | 'decided by the admin' };
}


/** Which version is live (served as `latest`) and which is being tried (GET /api/canary). */
export interface Deployment {
  /** the live version: promoted by a canary, or the final version of a run that went live at once (null: none yet — `latest` is then the newest) */
  live: number | null;
  /** the candidate under a canary, its evaluation and its settings (null: none) */
  candidate: { version: number; evalId: number; startedAt: number; margin: number; alpha: number; share: number } | null;
  /** the last canary's outcome */
  last: EvaluationRecord | null;
}
