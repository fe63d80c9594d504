/**
 * One runtime schema per inbound payload; the TypeScript types are inferred from them.
 * The server parses every client message with these before any other code sees it.
 */
import { z } from 'zod';
import { codecSpec, isLossy, parseCodec, type CodecConfig } from './codec.ts';
import { downlinkCodecProblem } from './model-steps.ts';
import { CURVES } from './secagg/crypto.ts';
import { planProblem } from './secagg/plan.ts';
import { fromBase64 } from './secagg/wire.ts';
import { quantProblem } from './secagg/quantize.ts';
import { MODEL_NAMES } from './models-names.ts';
import { PARTITIONS } from './partition.ts';
import { parseCorruptions } from './data-quality.ts';

export const DEVICE_STATES = ['idle', 'selected', 'downloading', 'evaluating', 'training', 'uploading'] as const;
export const BACKENDS = ['webgl', 'webgpu', 'wasm', 'cpu'] as const;

const deviceId = z.string().regex(/^[A-Za-z0-9_-]{8,64}$/, 'must be 8–64 characters of A–Z, a–z, 0–9, _ or -');
const finiteMetric = z.number().finite();
/** a duration a device reports: at most a day (a round's deadline is at most a day) */
const durationMs = finiteMetric.min(0).max(24 * 3600_000);

/**
 * device:hello: what a device says about itself (every claim bounded, the counts in agreement), and
 * the proof that it holds the private key its id derives from (identity.ts): its public key and its
 * signature of the connection's challenge.
 */
export const helloSchema = z
  .strictObject({
    deviceId,
    backend: z.enum(BACKENDS),
    backendReason: z.string().max(300),
    /** training examples: the most this device may claim in an update */
    examples: z.number().int().min(1).max(60_000),
    heldOut: z.number().int().min(0).max(60_000),
    labelHistogram: z.array(z.number().int().min(0).max(60_000)).length(10),
    /** presented to runs that require a device join token */
    joinToken: z.string().max(200).optional(),
    /** the global model version this device holds (0 or absent: none), so rounds can send it a delta */
    modelVersion: z.number().int().min(0).max(2 ** 31 - 1).optional(),
    /** the device's ECDSA P-256 public key, raw (65 bytes, an uncompressed point) */
    publicKey: z.instanceof(Uint8Array).refine((k) => k.byteLength === 65, 'must be a 65-byte raw P-256 public key'),
    /** its ECDSA P-256 / SHA-256 signature (64 bytes, r‖s) of the connection's challenge */
    signature: z.instanceof(Uint8Array).refine((s) => s.byteLength === 64, 'must be a 64-byte ECDSA signature'),
    /** whether its WebCrypto does X25519 (secure aggregation falls back to P-256 for a round where one device cannot) */
    x25519: z.boolean().optional(),
    /** the scores of its training data it measured itself (data-quality.ts; integrity is the server's, from the histogram) */
    quality: z.strictObject({ conformity: z.number().min(0).max(1), uniqueness: z.number().min(0).max(1), completeness: z.number().min(0).max(1), coherence: z.number().min(0).max(1).nullable() }).optional(),
  })
  .refine((h) => h.labelHistogram.reduce((a, b) => a + b, 0) === h.examples, { message: 'must add up to examples', path: ['labelHistogram'] });
export type Hello = z.infer<typeof helloSchema>;
/** A device's claims once its identity is proven: what the federation keeps of a hello. */
export type DeviceHello = Omit<Hello, 'publicKey' | 'signature'>;

export const stateReportSchema = z.strictObject({
  state: z.enum(DEVICE_STATES),
  runId: z.number().int().positive().optional(),
  round: z.number().int().positive().optional(),
  attempt: z.number().int().positive().optional(),
  /** 0..1 progress through local training */
  progress: z.number().min(0).max(1).optional(),
  loss: finiteMetric.optional(),
  /** the global model version the device now holds (0: none) */
  modelVersion: z.number().int().min(0).max(2 ** 31 - 1).optional(),
});
export type StateReport = z.infer<typeof stateReportSchema>;

export const updateMetricsSchema = z.strictObject({
  accuracyBefore: z.number().min(0).max(1),
  lossBefore: finiteMetric.min(0).max(1e6),
  accuracyAfter: z.number().min(0).max(1),
  lossAfter: finiteMetric.min(0).max(1e6),
  downloadMs: durationMs,
  evaluateMs: durationMs,
  trainMs: durationMs,
  /** personalization (personalize.ts): the device's label distance to the population, and the held-out accuracy of its distance-aware mix and of an even mix */
  labelDistance: z.number().min(0).max(1).optional(),
  accuracyMixed: z.number().min(0).max(1).optional(),
  accuracyHalfMix: z.number().min(0).max(1).optional(),
});
export type UpdateMetrics = z.infer<typeof updateMetricsSchema>;

export const updateSubmitSchema = z.strictObject({
  runId: z.number().int().positive(),
  round: z.number().int().positive(),
  attempt: z.number().int().min(1),
  numExamples: z.number().int().min(1).max(60_000),
  /** Δ = w_local − w_global, encoded with the run's update codec (codec.ts; float32: weights.ts) */
  delta: z.instanceof(Uint8Array),
  metrics: updateMetricsSchema,
  /** under secure aggregation `delta` is the masked input, signed by the device for its round (secagg/device.ts) */
  signature: z.instanceof(Uint8Array).refine((s) => s.byteLength === 64, 'must be a 64-byte ECDSA signature').optional(),
});

/** eval:report — a device's evaluation of the versions it was sent, on its held-out data: aggregates only */
export const evalReportSchema = z
  .strictObject({
    evalId: z.number().int().positive(),
    /** held-out examples evaluated (at most what the device declared when it joined) */
    examples: z.number().int().min(1).max(60_000),
    results: z.array(z.strictObject({ version: z.number().int().positive(), accuracy: z.number().min(0).max(1), loss: finiteMetric.min(0).max(1e6) })).min(1).max(8),
    /** a canary's two models on the same examples: b = the candidate right and the live one wrong, c = the reverse */
    paired: z.strictObject({ b: z.number().int().min(0), c: z.number().int().min(0) }).optional(),
  })
  .refine((r) => !r.paired || r.paired.b + r.paired.c <= r.examples, { message: 'b + c must not exceed examples', path: ['paired'] });
export type EvalReport = z.infer<typeof evalReportSchema>;

// ─── secure aggregation (secagg/) ────────────────────────────────────────────
/** bytes as base64 text (wire.ts): decoded here, their length bounded */
const sized = (min: number, max: number) =>
  z
    .string()
    .max(Math.ceil(max / 3) * 4)
    .transform((text, ctx) => {
      try {
        return fromBase64(text);
      } catch {
        ctx.addIssue({ code: 'custom', message: 'must be base64' });
        return z.NEVER;
      }
    })
    .refine((b) => b.byteLength >= min && b.byteLength <= max, `must be ${min === max ? min : `${min}–${max}`} bytes`);
const roundRef = { runId: z.number().int().positive(), round: z.number().int().positive(), attempt: z.number().int().min(1) };
const ecdsaSignature = sized(64, 64);
/** at most 254 neighbours: Shamir shares over GF(2^8) */
const MAX_NEIGHBOURS = 254;

export const secAggKeysSchema = z.strictObject({
  ...roundRef,
  curve: z.enum(CURVES),
  maskPublicKey: sized(32, 65),
  encPublicKey: sized(32, 65),
  seedCommitment: z.string().regex(/^[0-9a-f]{64}$/, 'must be a SHA-256 in hex'),
  keyCommitment: z.string().regex(/^[0-9a-f]{64}$/, 'must be a SHA-256 in hex'),
  signature: ecdsaSignature,
});
export type SecAggKeys = z.input<typeof secAggKeysSchema>;

export const secAggSharesSchema = z.strictObject({
  ...roundRef,
  /** one sealed share for each neighbour: 12-byte IV, the shares (≤ 2 + 33 + 139 bytes), 16-byte tag */
  shares: z.array(z.strictObject({ peer: deviceId, sealed: sized(28, 512) })).max(MAX_NEIGHBOURS),
  signature: ecdsaSignature,
});
export type SecAggShares = z.input<typeof secAggSharesSchema>;

const revealed = z.array(z.strictObject({ of: deviceId, share: sized(2, 256) })).max(MAX_NEIGHBOURS);
export const secAggRevealSchema = z.strictObject({ ...roundRef, seeds: revealed, keys: revealed, signature: ecdsaSignature });
export type SecAggReveal = z.input<typeof secAggRevealSchema>;
export type UpdateSubmit = z.infer<typeof updateSubmitSchema>;

/** Readable field rules: these messages appear next to the admin form's fields and in API errors. */
const whole = (min: number, max: number) =>
  z.number({ error: 'must be a number' }).int({ error: 'must be a whole number' }).min(min, { error: `must be at least ${min}` }).max(max, { error: `must be at most ${max}` });
const between = (min: number, max: number, exclusiveMin = false) =>
  (exclusiveMin ? z.number({ error: 'must be a number' }).gt(min, { error: `must be greater than ${min}` }) : z.number({ error: 'must be a number' }).min(min, { error: `must be at least ${min}` })).max(max, { error: `must be at most ${max}` });

export const AGGREGATIONS = ['fedavg', 'median', 'trimmed-mean'] as const;
export const DOWNLINKS = ['full', 'delta'] as const;
export type Aggregation = (typeof AGGREGATIONS)[number];

/**
 * How a round's training is configured and its results turned into the next model (non-IID data):
 * FedAvg; a server optimizer on FedAvg's mean (Reddi et al. 2021); FedProx's proximal term on the
 * devices (Li et al. 2020); SCAFFOLD's control variates (Karimireddy et al. 2020); q-FFL's fairness
 * weighting (Li et al. 2020, ICLR).
 */
export const STRATEGY_NAMES = ['fedavg', 'fedavgm', 'fedadagrad', 'fedadam', 'fedyogi', 'fedprox', 'scaffold', 'qffl'] as const;
export type StrategyName = (typeof STRATEGY_NAMES)[number];

/** The server learning rate a server optimizer (or SCAFFOLD, η_g) uses when the config leaves it out. */
export const DEFAULT_SERVER_LEARNING_RATE: Record<'fedavgm' | 'fedadagrad' | 'fedadam' | 'fedyogi' | 'scaffold', number> = { fedavgm: 1, fedadagrad: 0.1, fedadam: 0.01, fedyogi: 0.01, scaffold: 1 };

const MIN_UPDATES_RULE = 'minUpdates must not exceed clientsPerRound';

// ─── the model registry ──────────────────────────────────────────────────────
/** Labels as Kubeflow's: keys of letters, digits and . _ / - (up to 63), short text values; at most 32 of them. */
const LABEL_KEY_RULE = 'label keys are 1–63 letters, digits, . _ / or -, starting and ending with a letter or digit';
export const labelsSchema = z
  .record(
    z.string().regex(/^[A-Za-z0-9](?:[A-Za-z0-9._/-]{0,61}[A-Za-z0-9])?$/),
    z.string({ error: 'label values must be strings' }).max(200, { error: 'label values are at most 200 characters' }),
    { error: (issue) => (issue.code === 'invalid_type' ? 'must be an object of string labels' : issue.code === 'invalid_key' ? LABEL_KEY_RULE : undefined) },
  )
  .refine((o) => Object.keys(o).length <= 32, { error: 'at most 32 labels' });

const text = (max: number) => z.string({ error: 'must be a string or null' }).trim().max(max, { error: `must be at most ${max} characters` }).nullable();
/** What the admin may say of a model version (PATCH /api/models/:version): every field optional; null clears it; labels replace the old ones. */
export const modelMetaSchema = z.strictObject({ name: text(100), description: text(2000), owner: text(100), labels: labelsSchema }).partial();
export type ModelMetaPatch = z.infer<typeof modelMetaSchema>;

/** What a run does with the devices' data-quality scores: the least each may be, and whether a device below one is only flagged or left out of selection. */
export const dataQualityRulesSchema = z.strictObject({
  action: z.enum(['flag', 'exclude'], { error: 'must be flag or exclude' }).default('flag'),
  conformity: z.number({ error: 'must be a number' }).min(0, { error: 'must be at least 0' }).max(1, { error: 'must be at most 1' }).default(0.9),
  uniqueness: z.number({ error: 'must be a number' }).min(0, { error: 'must be at least 0' }).max(1, { error: 'must be at most 1' }).default(0.9),
  completeness: z.number({ error: 'must be a number' }).min(0, { error: 'must be at least 0' }).max(1, { error: 'must be at most 1' }).default(0.9),
  /** off by default: a device of a non-IID federation is far from the population by design */
  integrity: z.number({ error: 'must be a number' }).min(0, { error: 'must be at least 0' }).max(1, { error: 'must be at most 1' }).default(0),
  coherence: z.number({ error: 'must be a number' }).min(0, { error: 'must be at least 0' }).max(1, { error: 'must be at most 1' }).default(0.55),
});
export type DataQualityRules = z.infer<typeof dataQualityRulesSchema>;

/** A canary's settings (canary.ts): the share of devices that try the candidate, the test's margin and level, how long they have. */
export const canarySettingsSchema = z.strictObject({
  share: z.number({ error: 'must be a number' }).gt(0, { error: 'must be greater than 0' }).max(1, { error: 'must be at most 1' }).default(0.1),
  margin: z.number({ error: 'must be a number' }).min(0, { error: 'must be at least 0' }).lt(1, { error: 'must be less than 1' }).default(0.01),
  alpha: z.number({ error: 'must be a number' }).gt(0, { error: 'must be greater than 0' }).lt(0.5, { error: 'must be less than 0.5' }).default(0.05),
  timeoutMs: z.number({ error: 'must be a number' }).int({ error: 'must be a whole number' }).min(1_000, { error: 'must be at least 1000' }).max(24 * 3600_000, { error: 'must be at most 86400000' }).default(120_000),
});
export type CanarySettings = z.infer<typeof canarySettingsSchema>;

/** POST /api/evaluations: which stored versions, on what share of the connected devices, for how long */
export const evaluationRequestSchema = z.strictObject({
  versions: z.array(z.number({ error: 'must be model versions' }).int().positive(), { error: 'must be a list of model versions' }).min(1, { error: 'name at least one version' }).max(4, { error: 'at most 4 versions at once' }),
  share: canarySettingsSchema.shape.share.default(1),
  timeoutMs: canarySettingsSchema.shape.timeoutMs.default(60_000),
});

/** POST /api/canary: a stored version to try against the live one */
export const canaryRequestSchema = canarySettingsSchema.extend({ version: z.number({ error: 'must be a model version' }).int().positive() });

export const runConfigSchema = z.strictObject({
  model: z.enum(MODEL_NAMES, { error: `must be one of ${MODEL_NAMES.join(', ')}` }).default('cnn-small'),
  rounds: whole(1, 10_000).default(5),
  clientsPerRound: whole(1, 10_000).default(4),
  overSelect: between(1, 10).default(1.3),
  minUpdates: whole(1, 10_000).default(2),
  localEpochs: whole(1, 100).default(1),
  batchSize: whole(1, 10_000).default(10),
  learningRate: between(0, 10, true).default(0.1),
  roundTimeoutMs: whole(1_000, 24 * 3600_000).default(120_000),
  /** how long selection waits for clientsPerRound idle devices before starting with ≥ minUpdates */
  selectionTimeoutMs: whole(0, 24 * 3600_000).default(10_000),
  /** how many times a failed round is retried before the run stops as failed */
  maxRoundRetries: whole(0, 100).default(2),
  seed: whole(0, 2 ** 31 - 1).default(1),
  /** how a round is configured and its updates turned into the next model (non-IID data) */
  strategy: z.enum(STRATEGY_NAMES, { error: `must be one of ${STRATEGY_NAMES.join(', ')}` }).default('fedavg'),
  /** η of the server optimizer (fedavgm, fedadagrad, fedadam, fedyogi) or SCAFFOLD's η_g; default per strategy (DEFAULT_SERVER_LEARNING_RATE) */
  serverLearningRate: between(0, 100, true).optional(),
  /** β1: server momentum (fedavgm) or the first moment (fedadagrad, fedadam, fedyogi) */
  beta1: z.number({ error: 'must be a number' }).min(0, { error: 'must be at least 0' }).lt(1, { error: 'must be less than 1' }).default(0.9),
  /** β2: the second moment's decay (fedadam, fedyogi) */
  beta2: z.number({ error: 'must be a number' }).min(0, { error: 'must be at least 0' }).lt(1, { error: 'must be less than 1' }).default(0.99),
  /** τ: the adaptive optimizers' degree of adaptivity */
  tau: between(0, 1, true).default(1e-3),
  /** μ of FedProx's proximal term μ/2·‖w − w_global‖² in local training */
  mu: between(0, 100, true).default(0.01),
  /** q of q-FFL: 0 is FedAvg with equal weights; larger q weighs devices with a higher loss more */
  q: between(0, 50).default(1),
  /** how updates are combined: FedAvg, or a robust rule against hostile updates */
  aggregation: z.enum(AGGREGATIONS, { error: `must be one of ${AGGREGATIONS.join(', ')}` }).default('fedavg'),
  /** fraction trimmed at each end per coordinate by `trimmed-mean` */
  trimFraction: z.number({ error: 'must be a number' }).min(0, { error: 'must be at least 0' }).lt(0.5, { error: 'must be less than 0.5' }).default(0.2),
  /** L2 bound on each update (larger ones are scaled down to it); 0 = no bound */
  clipNorm: between(0, 1e6).default(0),
  /** the most examples one device's update is weighted by in FedAvg: a device cannot outweigh the round by claiming more */
  maxExamplesPerDevice: whole(1, 60_000).default(1_000),
  /** when set, only devices that joined with this token are selected (never shown by the API) */
  joinToken: z.string({ error: 'must be a string' }).min(8, { error: 'must be at least 8 characters' }).max(200, { error: 'must be at most 200 characters' }).optional(),
  /** how devices encode their updates: [topk+](float32|float16|q8|q4)[+deflate] (codec.ts) */
  updateCodec: z
    .string({ error: 'must be a string' })
    .default('float32')
    .superRefine((name, ctx) => {
      const c = parseCodec(name);
      if (typeof c === 'string') ctx.addIssue({ code: 'custom', message: c });
    }),
  /** share of the entries a topk codec sends each round */
  topkFraction: z.number({ error: 'must be a number' }).gt(0, { error: 'must be greater than 0' }).max(1, { error: 'must be at most 1' }).default(0.01),
  /** share of the entries a rand codec sends each round (a seeded random mask, unbiased) */
  randFraction: z.number({ error: 'must be a number' }).gt(0, { error: 'must be greater than 0' }).max(1, { error: 'must be at most 1' }).default(0.25),
  /** values per quantization block of q8/q4/q2 (0: one block per tensor) */
  quantBlock: whole(0, 1 << 20).default(256),
  /** how the global model reaches a device that holds an older version: in full, or as a lossless delta */
  downlink: z.enum(DOWNLINKS, { error: `must be one of ${DOWNLINKS.join(', ')}` }).default('delta'),
  /**
   * how each new global model is compressed for the devices that hold an earlier one: float32 sends
   * it exactly (a lossless delta); a lossy codec ([topk+](float16|q8|q4|q2)[+deflate]) publishes it as
   * a compressed step that devices and server apply alike, with error feedback on the server (model-steps.ts)
   */
  downlinkCodec: z
    .string({ error: 'must be a string' })
    .default('float32')
    .superRefine((name, ctx) => {
      const problem = downlinkCodecProblem(name);
      if (problem) ctx.addIssue({ code: 'custom', message: problem });
    }),
  /** share of the entries a topk downlink codec sends each round */
  downlinkTopkFraction: z.number({ error: 'must be a number' }).gt(0, { error: 'must be greater than 0' }).max(1, { error: 'must be at most 1' }).default(0.01),
  /** masks every update so that the server learns only their sum (SecAgg+; secagg/) */
  secureAggregation: z.boolean({ error: 'must be true or false' }).default(false),
  /** neighbours each device shares its secrets with (even; 0: about 2·log2 of the round's devices, at least 4) */
  secAggNeighbours: whole(0, 254).default(0),
  /** shares that rebuild a secret (more than half the neighbours; 0: a bare majority) */
  secAggThreshold: whole(0, 254).default(0),
  /** start from this stored version of the same model instead of a fresh initialization (its descendant in the registry's lineage) */
  initialVersion: z.number({ error: 'must be a model version' }).int({ error: 'must be a whole number' }).positive({ error: 'must be a model version' }).optional(),
  /** the update monitor (monitor.ts): its cold start, the false alarms accepted per 100 rounds, and whether a flagged device is quarantined */
  monitor: z
    .strictObject({
      warmupRounds: whole(1, 1_000).default(10),
      falseAlarmsPer100Rounds: between(0, 50, true).default(1),
      quarantine: z.boolean({ error: 'must be true or false' }).default(false),
    })
    .default({ warmupRounds: 10, falseAlarmsPer100Rounds: 1, quarantine: false }),
  /** the data-quality rules: scores below them flag a device, or leave it out of selection (data-quality.ts) */
  dataQuality: dataQualityRulesSchema.default(dataQualityRulesSchema.parse({})),
  /** when set, the run's final version becomes a candidate tried on a share of devices against the live model (canary.ts), instead of going live at once */
  canary: canarySettingsSchema.optional(),
  /** labels every version the run makes carries in the registry (e.g. the partition of a simulation) */
  labels: labelsSchema.default({}),
  /** user-level differential privacy (DP-FedAvg): clip, sample, add noise, account (privacy/); with secureAggregation the devices add the noise */
  dp: z
    .strictObject({
      /** z: the noise's standard deviation over the clip bound */
      noiseMultiplier: z.number({ error: 'must be a number' }).gt(0, { error: 'must be greater than 0' }).max(100, { error: 'must be at most 100' }),
      /** S: every update is clipped to this L2 norm, or 'adaptive': S follows a quantile of the updates' norms (Andrew et al. 2021) */
      clipNorm: z.union([z.number().gt(0, { error: 'must be greater than 0' }).max(1e6, { error: 'must be at most 1000000' }), z.literal('adaptive')], { error: 'must be a number > 0, or "adaptive"' }),
      /** adaptive clipping: the share of updates the bound should leave unclipped, where it starts, and how fast it moves */
      targetQuantile: z.number({ error: 'must be a number' }).gt(0, { error: 'must be greater than 0' }).lt(1, { error: 'must be less than 1' }).default(0.5),
      initialClipNorm: z.number({ error: 'must be a number' }).gt(0, { error: 'must be greater than 0' }).max(1e6, { error: 'must be at most 1000000' }).default(0.1),
      clipLearningRate: z.number({ error: 'must be a number' }).gt(0, { error: 'must be greater than 0' }).max(10, { error: 'must be at most 10' }).default(0.2),
      /** δ of the (ε, δ) reported */
      targetDelta: z.number({ error: 'must be a number' }).gt(0, { error: 'must be greater than 0' }).lt(0.1, { error: 'must be less than 0.1' }).default(1e-5),
      /** distributed DP (with secure aggregation): the share of a round's sampled devices that may drop and leave the sum its full noise */
      dropoutTolerance: z.number({ error: 'must be a number' }).min(0, { error: 'must be at least 0' }).max(0.9, { error: 'must be at most 0.9' }).default(0.2),
      /** the run stops before the round that would spend more ε than this */
      epsilonBudget: z.number({ error: 'must be a number' }).gt(0, { error: 'must be greater than 0' }).max(1e6, { error: 'must be at most 1000000' }).optional(),
    }, { error: 'must be an object: { noiseMultiplier, clipNorm, targetDelta?, epsilonBudget? }' })
    .optional(),
}).refine((c) => c.minUpdates <= c.clientsPerRound, { message: MIN_UPDATES_RULE, path: ['minUpdates'] });
export type RunConfig = z.infer<typeof runConfigSchema>;
export type RunConfigInput = z.input<typeof runConfigSchema>;

/** The update codec part of a run's config. */
export const codecConfig = (config: RunConfig): CodecConfig => ({ codec: config.updateCodec, topkFraction: config.topkFraction, randFraction: config.randFraction, quantBlock: config.quantBlock });
/** The downlink's codec (model-steps.ts); undefined when models are sent exactly. */
export const downlinkCodecConfig = (config: RunConfig): CodecConfig | undefined => (isLossy(codecSpec(config.downlinkCodec)) ? { codec: codecSpec(config.downlinkCodec).name, topkFraction: config.downlinkTopkFraction, quantBlock: config.quantBlock } : undefined);

/** The config as the API and logs show it: a join token is replaced by a mark. */
export function publicConfig(config: RunConfig): RunConfig {
  return config.joinToken === undefined ? config : { ...config, joinToken: '(set)' };
}

export interface FieldIssue {
  field: string;
  message: string;
}

/** The defaults of every run config field. */
export const RUN_CONFIG_DEFAULTS: RunConfig = runConfigSchema.parse({});

/**
 * Settings that would silently do nothing: a robust rule that cannot reject anything with the
 * round's smallest number of updates, or a codec parameter changed from its default for a codec
 * without that stage. Each is reported on its field.
 */
function silentNoOps(c: RunConfig): FieldIssue[] {
  const issues: FieldIssue[] = [];
  if (c.aggregation === 'median' && c.minUpdates < 3) {
    issues.push({ field: 'minUpdates', message: `median needs minUpdates ≥ 3: a round may close with ${c.minUpdates}, and the median of ${c.minUpdates === 1 ? 'one update is that update' : 'two updates is their mean'}` });
  }
  if (c.aggregation === 'trimmed-mean') {
    if (c.minUpdates < 3) issues.push({ field: 'minUpdates', message: `trimmed-mean needs minUpdates ≥ 3: with ${c.minUpdates} update${c.minUpdates === 1 ? '' : 's'} it cannot trim one at each end` });
    else if (Math.floor(c.trimFraction * c.minUpdates) < 1) {
      issues.push({ field: 'trimFraction', message: `trims nothing when a round closes with minUpdates = ${c.minUpdates} updates (⌊${c.trimFraction} × ${c.minUpdates}⌋ = 0): use at least ${(1 / c.minUpdates).toFixed(3).replace(/0+$/, '')}` });
    }
  } else if (c.trimFraction !== RUN_CONFIG_DEFAULTS.trimFraction) {
    issues.push({ field: 'trimFraction', message: `has no effect: aggregation is ${c.aggregation}, not trimmed-mean` });
  }
  const codec = parseCodec(c.updateCodec);
  if (typeof codec !== 'string') {
    if (c.topkFraction !== RUN_CONFIG_DEFAULTS.topkFraction && !(codec.sparse && !codec.random)) issues.push({ field: 'topkFraction', message: `has no effect: the codec ${codec.name} has no topk stage` });
    if (c.randFraction !== RUN_CONFIG_DEFAULTS.randFraction && !codec.random) issues.push({ field: 'randFraction', message: `has no effect: the codec ${codec.name} has no rand stage` });
    const down = parseCodec(c.downlinkCodec);
    const downQuantizes = typeof down !== 'string' && ['q8', 'q4', 'q2'].includes(down.values);
    if (c.quantBlock !== RUN_CONFIG_DEFAULTS.quantBlock && !['q8', 'q4', 'q2'].includes(codec.values) && !downQuantizes) issues.push({ field: 'quantBlock', message: `has no effect: the codec ${codec.name} does not quantize` });
  }
  const down = parseCodec(c.downlinkCodec);
  if (typeof down !== 'string') {
    if (c.downlinkTopkFraction !== RUN_CONFIG_DEFAULTS.downlinkTopkFraction && !down.sparse) issues.push({ field: 'downlinkTopkFraction', message: `has no effect: the downlink codec ${down.name} has no topk stage` });
    if (isLossy(down) && c.downlink === 'full') issues.push({ field: 'downlinkCodec', message: `${down.name} compresses the steps between versions, which downlink "full" never sends: use downlink "delta"` });
  }
  return [...issues, ...strategyIssues(c), ...secureAggregationIssues(c), ...privacyIssues(c)];
}

/** The strategy's own parameters set for a strategy that does not use them, and what cannot go with it. */
function strategyIssues(c: RunConfig): FieldIssue[] {
  const issues: FieldIssue[] = [];
  const optimizer = c.strategy === 'fedavgm' || c.strategy === 'fedadagrad' || c.strategy === 'fedadam' || c.strategy === 'fedyogi';
  const uses: Record<'serverLearningRate' | 'beta1' | 'beta2' | 'tau' | 'mu' | 'q', boolean> = {
    serverLearningRate: optimizer || c.strategy === 'scaffold',
    beta1: optimizer,
    beta2: c.strategy === 'fedadam' || c.strategy === 'fedyogi',
    tau: optimizer && c.strategy !== 'fedavgm',
    mu: c.strategy === 'fedprox',
    q: c.strategy === 'qffl',
  };
  for (const field of Object.keys(uses) as (keyof typeof uses)[]) {
    if (!uses[field] && c[field] !== RUN_CONFIG_DEFAULTS[field]) issues.push({ field, message: `has no effect: strategy ${c.strategy} does not use it` });
  }
  if (c.strategy === 'qffl') {
    if (c.aggregation !== 'fedavg') issues.push({ field: 'strategy', message: `qffl weighs each update by its device's loss; ${c.aggregation} ignores weights: use aggregation fedavg` });
    if (c.dp) issues.push({ field: 'strategy', message: 'qffl weighs updates by what devices report, which DP-FedAvg\'s accounting does not allow (every update weighs 1)' });
    if (c.secureAggregation) issues.push({ field: 'strategy', message: 'qffl needs each device\'s update norm, which secure aggregation hides' });
  }
  if (c.strategy === 'scaffold') {
    // the update carries the control variate's change after Δ (scaffold.ts): rules that look at, bound or mask it as one vector would mix the two
    if (c.aggregation !== 'fedavg') issues.push({ field: 'strategy', message: `scaffold averages the devices' control variates with their updates; ${c.aggregation} would not: use aggregation fedavg` });
    if (c.clipNorm !== 0) issues.push({ field: 'clipNorm', message: 'scaffold sends the control variate\'s change with the update, which one bound on both would distort: leave clipNorm at 0' });
    if (c.dp) issues.push({ field: 'strategy', message: 'scaffold\'s control variates are not covered by DP-FedAvg\'s clipping and noise' });
    if (c.secureAggregation) issues.push({ field: 'strategy', message: 'scaffold\'s control variates are not masked by secure aggregation here' });
  }
  return issues;
}

/** The L2 bound updates are clipped to: the privacy bound when the run is private (a round's own under adaptive clipping), else clipNorm (0: none). */
export const effectiveClipNorm = (c: RunConfig): number => {
  if (!c.dp) return c.clipNorm;
  // the service hands the validator a config with the round's own bound in place of 'adaptive'
  if (c.dp.clipNorm === 'adaptive') throw new Error('adaptive clipping: no bound for this round');
  return c.dp.clipNorm;
};

/** What cannot go with DP-FedAvg as built here. */
function privacyIssues(c: RunConfig): FieldIssue[] {
  if (!c.dp) return [];
  const issues: FieldIssue[] = [];
  if (c.secureAggregation && c.dp.clipNorm === 'adaptive') issues.push({ field: 'dp.clipNorm', message: 'adaptive clipping needs a noisy count of unclipped updates, which secure aggregation does not sum: use a number' });
  if (!c.secureAggregation && c.dp.dropoutTolerance !== 0.2) issues.push({ field: 'dp.dropoutTolerance', message: 'has no effect: the devices add noise only under secure aggregation' });
  if (c.aggregation !== 'fedavg') issues.push({ field: 'aggregation', message: `the privacy accounting holds for fedavg's noisy sum, not for ${c.aggregation}` });
  if (c.clipNorm !== 0 && c.clipNorm !== c.dp.clipNorm) issues.push({ field: 'clipNorm', message: 'under dp the bound is dp.clipNorm: leave clipNorm at 0' });
  if (c.dp.clipNorm !== 'adaptive') {
    const defaults = { targetQuantile: 0.5, initialClipNorm: 0.1, clipLearningRate: 0.2 } as const;
    for (const f of Object.keys(defaults) as (keyof typeof defaults)[]) if (c.dp[f] !== defaults[f]) issues.push({ field: `dp.${f}`, message: 'has no effect: dp.clipNorm is not "adaptive"' });
  }
  return issues;
}

/**
 * What cannot go with secure aggregation: the server sees only the sum, so rules that look at
 * single updates cannot run, the masked vector is dense 32-bit integers (no codec), and the
 * devices must clip so that the sum of a full round cannot wrap.
 */
function secureAggregationIssues(c: RunConfig): FieldIssue[] {
  if (!c.secureAggregation) {
    return (['secAggNeighbours', 'secAggThreshold'] as const).filter((f) => c[f] !== RUN_CONFIG_DEFAULTS[f]).map((field) => ({ field, message: 'has no effect: secure aggregation is off' }));
  }
  const issues: FieldIssue[] = [];
  if (c.aggregation !== 'fedavg') issues.push({ field: 'aggregation', message: `${c.aggregation} must see every update; under secure aggregation the server sees only their sum: use fedavg` });
  if (c.updateCodec !== 'float32') issues.push({ field: 'updateCodec', message: 'under secure aggregation a device sends its masked update as dense 32-bit integers: use float32' });
  if (c.minUpdates < 3) issues.push({ field: 'minUpdates', message: 'secure aggregation needs at least 3 devices in a round' });
  const devices = Math.ceil(c.clientsPerRound * c.overSelect - 1e-9);
  // under DP every device weighs 1 and clips to dp.clipNorm; the round's bounds follow from its Poisson sample
  const bounds = c.dp ? undefined : quantProblem({ maxInputs: devices, maxWeight: c.maxExamplesPerDevice, clipNorm: c.clipNorm });
  if (bounds) issues.push({ field: c.clipNorm > 0 ? 'maxExamplesPerDevice' : 'clipNorm', message: bounds });
  const shape = planProblem(c.secAggNeighbours, c.secAggThreshold, devices);
  if (shape) issues.push(shape);
  return issues;
}

/**
 * Validates a run config and reports every problem at once, one per field: zod skips the
 * cross-field rule while any field is wrong, so it is checked here on the raw values too.
 * The API and the admin form both use this, so they show the same messages.
 */
export function validateRunConfig(input: unknown): { ok: true; config: RunConfig } | { ok: false; issues: FieldIssue[]; message: string } {
  const parsed = runConfigSchema.safeParse(input);
  const issues = parsed.success ? silentNoOps(parsed.data) : parsed.error.issues.map((i) => ({ field: i.path.length ? i.path.join('.') : 'config', message: i.message }));
  if (parsed.success && issues.length === 0) return { ok: true, config: parsed.data };
  const raw = (input ?? {}) as { minUpdates?: unknown; clientsPerRound?: unknown };
  const k = raw.clientsPerRound === undefined ? RUN_CONFIG_DEFAULTS.clientsPerRound : raw.clientsPerRound;
  if (!issues.some((i) => i.field === 'minUpdates') && typeof raw.minUpdates === 'number' && typeof k === 'number' && raw.minUpdates > k) {
    issues.push({ field: 'minUpdates', message: MIN_UPDATES_RULE });
  }
  return { ok: false, issues, message: issues.map((i) => `${i.field}: ${i.message}`).join('; ') };
}

export const sliceQuerySchema = z.strictObject({
  partition: z.enum(PARTITIONS).default('iid'),
  clients: z.coerce.number().int().min(1).max(10_000).default(4),
  client: z.coerce.number().int().min(0).default(0),
  examples: z.coerce.number().int().min(1).max(60_000).default(600),
  seed: z.coerce.number().int().min(0).max(2 ** 31 - 1).default(1),
  alpha: z.coerce.number().positive().max(1000).default(0.5),
  /** to measure the data-quality checks: seeded corruptions of the slice's training examples, `labels:0.5,noise:0.2,duplicates:0.3,blank:0.1` (data-quality.ts) */
  corrupt: z
    .string()
    .max(200)
    .transform((text, ctx) => {
      const parsed = parseCorruptions(text);
      if (typeof parsed === 'string') {
        ctx.addIssue({ code: 'custom', message: parsed });
        return z.NEVER;
      }
      return parsed;
    })
    .optional(),
}).refine((q) => q.client < q.clients, { message: 'client must be less than clients', path: ['client'] });
export type SliceQuery = z.infer<typeof sliceQuerySchema>;

/** A readable one-line summary of every issue: `rounds: must be ≥ 1; model: invalid option`. */
export function describeIssues(error: z.ZodError): string {
  return error.issues.map((i) => `${i.path.length ? i.path.join('.') : 'payload'}: ${i.message}`).join('; ');
}
