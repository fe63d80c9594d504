/**
 * The socket.io protocol, typed on both ends:
 *   new Server<ClientToServerEvents, ServerToClientEvents>()  and  io() as Socket<ServerToClientEvents, ClientToServerEvents>.
 * Names read `domain:verb`. Acks carry a result union.
 */
import type { AdminSnapshot, FederationEvent } from './api.ts';
import type { CodecConfig } from './codec.ts';
import type { ModelName } from './models-names.ts';
import type { EvalReport, Hello, SecAggKeys, SecAggReveal, SecAggShares, StateReport, UpdateSubmit } from './schemas.ts';
import type { NeighbourKeysWire, SealedShareWire } from './secagg/wire.ts';
import type { SecAggRoundPlan } from './secagg/session.ts';

export const ERROR_CODES = {
  BAD_MESSAGE: 'BAD_MESSAGE',
  BAD_WEIGHTS: 'BAD_WEIGHTS',
  NOT_JOINED: 'NOT_JOINED',
  /** a connection claimed a device id without proving the key it derives from */
  IDENTITY: 'IDENTITY',
  /** an update claims more examples than the device declared when it joined */
  TOO_MANY_EXAMPLES: 'TOO_MANY_EXAMPLES',
  /** the device connected again elsewhere (proving the same key); this connection is closed */
  SUPERSEDED: 'SUPERSEDED',
  NO_ACTIVE_ROUND: 'NO_ACTIVE_ROUND',
  WRONG_ROUND: 'WRONG_ROUND',
  NOT_SELECTED: 'NOT_SELECTED',
  DUPLICATE: 'DUPLICATE',
  ROUND_FULL: 'ROUND_FULL',
  RATE_LIMITED: 'RATE_LIMITED',
  INTERNAL: 'INTERNAL',
} as const;
export type ErrorCode = (typeof ERROR_CODES)[keyof typeof ERROR_CODES];

export interface ProtocolError {
  code: ErrorCode;
  message: string;
}

export type Result<T> = { ok: true; data: T } | { ok: false; error: ProtocolError };
export type Ack<T> = (result: Result<T>) => void;

export interface TrainingPlan {
  localEpochs: number;
  batchSize: number;
  learningRate: number;
  /** seeds the device's shuffling and stochastic rounding, so a round can be replayed */
  seed: number;
  /** how the device encodes its update */
  codec: CodecConfig;
  /** FedProx: μ of the proximal term μ/2·‖w − w_global‖² added to the local loss (absent: none) */
  mu?: number;
}

export interface RoundStart {
  runId: number;
  round: number;
  /** 1 on the first try of a round, higher when a failed round is redone */
  attempt: number;
  model: ModelName;
  modelVersion: number;
  plan: TrainingPlan;
  /** epoch milliseconds after which the server stops accepting this round's updates */
  deadline: number;
  /** the global model: a binary weight payload (weights.ts), or with baseVersion a model delta (model-delta.ts) */
  weights: Uint8Array;
  /** set when `weights` is a delta against this version, which the device said it holds */
  baseVersion?: number;
  /** set when baseVersion is the run's seeded initial model: a device that does not hold it builds it from this seed (models.ts initialWeights) */
  baseSeed?: number;
  /** set when the round aggregates securely: the device advertises keys at once (secagg:keys) */
  secureAggregation?: SecAggRoundPlan;
  /** SCAFFOLD: the server's control variate c, a binary weight payload with the model's tensors (scaffold.ts) */
  control?: Uint8Array;
  /** the population's label distribution (the connected devices' histograms summed, at least 3 of them): a device's distance to it sets its personalization mix (personalize.ts) */
  population?: number[];
}

interface SecAggRef {
  runId: number;
  round: number;
  attempt: number;
}

/** secagg:neighbours — the devices this one shares its secrets with, and how many advertised keys */
export interface SecAggNeighbours extends SecAggRef {
  devices: number;
  neighbours: NeighbourKeysWire[];
}

/** secagg:shares — the shares its neighbours sealed for this device (`peer` = the sender) */
export interface SecAggSharesIn extends SecAggRef {
  shares: SealedShareWire[];
}

/** secagg:unmask — which neighbours' self-mask seeds, and which dropped neighbours' mask keys, to reveal */
export interface SecAggUnmask extends SecAggRef {
  survivors: string[];
  dropped: string[];
}

export interface RoundEnd {
  runId: number;
  round: number;
  attempt: number;
  outcome: 'completed' | 'failed' | 'stopped';
  /** whether this device's update was counted */
  counted: boolean;
}

/**
 * eval:start — evaluate stored versions on the device's held-out data, no training (evaluation
 * rounds, and the canary's comparison: then `models` is [live, candidate] and the device serves its
 * predictions from the candidate until the canary ends)
 */
export interface EvalStart {
  evalId: number;
  purpose: 'evaluate' | 'canary';
  /** epoch milliseconds after which the server stops taking reports */
  deadline: number;
  /** each version's architecture and its full weight payload (weights.ts) */
  models: { version: number; model: ModelName; weights: Uint8Array }[];
}

/** canary:end — the canary's outcome; a device that served the candidate goes back to the live model */
export interface CanaryEnd {
  evalId: number;
  outcome: 'promoted' | 'rolled back';
  live: number;
}

export interface ModelPublished {
  version: number;
  runId: number;
  round: number;
  testAccuracy: number | null;
  testLoss: number | null;
}

export interface ServerToClientEvents {
  'round:start': (msg: RoundStart) => void;
  'round:end': (msg: RoundEnd) => void;
  'secagg:neighbours': (msg: SecAggNeighbours) => void;
  'secagg:shares': (msg: SecAggSharesIn) => void;
  'secagg:unmask': (msg: SecAggUnmask) => void;
  'model:published': (msg: ModelPublished) => void;
  'eval:start': (msg: EvalStart) => void;
  'canary:end': (msg: CanaryEnd) => void;
  'server:error': (error: ProtocolError) => void;
}

export interface ClientToServerEvents {
  /** a fresh challenge for this connection, to be signed in device:hello (identity.ts) */
  'device:challenge': (ack: Ack<{ challenge: Uint8Array }>) => void;
  /** the answer names the latest global model, so a device that joins between rounds knows it */
  'device:hello': (msg: Hello, ack: Ack<{ deviceId: string; globalModel: ModelPublished | null }>) => void;
  /** the ack is optional: devices report progress without waiting; errors come as server:error then */
  'device:state': (msg: StateReport, ack?: Ack<null>) => void;
  'update:submit': (msg: UpdateSubmit, ack: Ack<{ accepted: true }>) => void;
  'secagg:keys': (msg: SecAggKeys, ack: Ack<null>) => void;
  'secagg:shares': (msg: SecAggShares, ack: Ack<null>) => void;
  'secagg:reveal': (msg: SecAggReveal, ack: Ack<null>) => void;
  'eval:report': (msg: EvalReport, ack: Ack<null>) => void;
}

export const SOCKET_PATH = '/socket.io';

/** The dashboard's live channel: a socket.io namespace for admin-token holders; it only pushes. */
export const ADMIN_NAMESPACE = '/admin';

export interface AdminServerToClientEvents {
  'admin:snapshot': (snapshot: AdminSnapshot) => void;
  /** the recent event log, on connection */
  'admin:events': (events: FederationEvent[]) => void;
  'admin:event': (event: FederationEvent) => void;
}

/** The admin channel accepts no commands: runs are started and stopped over the HTTP API. */
export type AdminClientToServerEvents = Record<string, never>;
