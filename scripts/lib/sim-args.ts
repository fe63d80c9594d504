/**
 * The options of a Node simulation as the command line names them (`npm run simulate:node -- --lr 0.1 …`),
 * and how they become the simulation's options: one schema for simulate:node and for the trials of
 * `npm run tune`, whose search spaces name the same options.
 */
import { z } from 'zod';
import { MODEL_NAMES } from '../../shared/models-names.ts';
import { PARTITIONS } from '../../shared/partition.ts';
import { AGGREGATIONS, describeIssues, STRATEGY_NAMES } from '../../shared/schemas.ts';
import { parseCorruptions } from '../../shared/data-quality.ts';
import type { SimulationOptions } from '../../server/sim/simulation.ts';

export const argsSchema = z.strictObject({
  clients: z.coerce.number().int().min(1).max(60_000).default(100),
  fraction: z.coerce.number().min(0).max(1).default(0.1),
  rounds: z.coerce.number().int().min(1).max(10_000).default(20),
  epochs: z.coerce.number().int().min(1).max(100).default(1),
  batch: z.coerce.number().int().min(1).max(10_000).default(10),
  lr: z.coerce.number().positive().max(10).default(0.1),
  partition: z.enum(PARTITIONS).default('iid'),
  alpha: z.coerce.number().positive().max(1000).default(0.5),
  model: z.enum(MODEL_NAMES).default('cnn-small'),
  seed: z.coerce.number().int().min(0).max(2 ** 31 - 1).default(1),
  target: z.coerce.number().gt(0).max(1).optional(),
  'keep-going': z.literal(true).optional(),
  examples: z.coerce.number().int().min(1).max(60_000).optional(),
  'held-out': z.coerce.number().min(0).lt(1).default(0),
  /** tuning: evaluate on N examples carved from the training set (seeded by --validation-seed), never on the test set */
  validation: z.coerce.number().int().min(1).max(30_000).optional(),
  'validation-seed': z.coerce.number().int().min(0).default(12345),
  /** data quality: corrupt a share of the clients' training data (labels:0.5,noise:0.2,…), and flag or exclude devices that fail the rules */
  corrupt: z.string().optional(),
  'corrupt-clients': z.coerce.number().gt(0).max(1).default(0.2),
  'quality-action': z.enum(['flag', 'exclude']).optional(),
  /** the update monitor: poisoning clients (−10 × their update), its cold start, its false-alarm budget, quarantine */
  poison: z.coerce.number().int().min(0).max(100).default(0),
  'monitor-warmup': z.coerce.number().int().min(1).max(1000).optional(),
  'false-alarms': z.coerce.number().positive().max(50).optional(),
  quarantine: z.enum(['true', 'false']).default('false').transform((v) => v === 'true'),
  'over-select': z.coerce.number().min(1).max(10).default(1),
  aggregation: z.enum(AGGREGATIONS).default('fedavg'),
  strategy: z.enum(STRATEGY_NAMES).default('fedavg'),
  'server-lr': z.coerce.number().positive().max(100).optional(),
  beta1: z.coerce.number().min(0).lt(1).optional(),
  beta2: z.coerce.number().min(0).lt(1).optional(),
  tau: z.coerce.number().positive().max(1).optional(),
  mu: z.coerce.number().positive().max(100).optional(),
  q: z.coerce.number().min(0).max(50).optional(),
  workers: z.coerce.number().int().min(1).max(64).optional(),
  codec: z.string().default('float32'),
  topk: z.coerce.number().gt(0).max(1).default(0.01),
  rand: z.coerce.number().gt(0).max(1).default(0.25),
  'quant-block': z.coerce.number().int().min(0).max(1 << 20).default(256),
  downlink: z.enum(['full', 'delta']).default('delta'),
  /** the downlink's codec (lossy: compressed steps with error feedback on the server) and its topk share */
  'downlink-codec': z.string().default('float32'),
  'downlink-topk': z.coerce.number().gt(0).max(1).default(0.01),
  'secure-aggregation': z.literal(true).optional(),
  drop: z.coerce.number().min(0).max(1).default(0),
  neighbours: z.coerce.number().int().min(0).max(254).default(0),
  'dp-noise': z.coerce.number().gt(0).max(100).optional(),
  'dp-clip': z.union([z.literal('adaptive'), z.coerce.number().gt(0).max(1e6)]).default(1),
  'dp-delta': z.coerce.number().gt(0).lt(0.1).default(1e-5),
  'dp-budget': z.coerce.number().gt(0).optional(),
  'dp-dropout-tolerance': z.coerce.number().min(0).max(0.9).optional(),
  threshold: z.coerce.number().int().min(0).max(254).default(0),
  'clip-norm': z.coerce.number().min(0).max(1e6).optional(),
  json: z.string().optional(),
  plot: z.string().optional(),
  quiet: z.literal(true).optional(),
  /** keep the run in this SQLite file; the same command again continues a run cut short from its last round */
  checkpoint: z.string().min(1).optional(),
  /** personalization is summarized over the counted devices of each window of this many rounds */
  'personal-window': z.coerce.number().int().min(1).max(10_000).default(10),
});

export type SimArgs = z.infer<typeof argsSchema>;

/** `--key value` pairs (a key alone is `true`) into raw options, unchecked. */
export function rawArgs(argv: string[]): Record<string, string | true> {
  const raw: Record<string, string | true> = {};
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i] as string;
    if (!a.startsWith('--')) throw new Error(`unexpected argument "${a}"`);
    const key = a.slice(2);
    const next = argv[i + 1];
    if (next === undefined || next.startsWith('--')) raw[key] = true;
    else {
      raw[key] = next;
      i++;
    }
  }
  return raw;
}

/** Checked options; an error names every bad one. */
export function parseSimArgs(raw: Record<string, unknown>, what = 'simulate:node'): SimArgs {
  const parsed = argsSchema.safeParse(raw);
  if (!parsed.success) throw new Error(`${what}: ${describeIssues(parsed.error)}`);
  return parsed.data;
}

/** The simulation's options from checked command-line options (a bad --corrupt throws). */
export function simulationOptions(args: SimArgs): SimulationOptions {
  const corruptions = args.corrupt === undefined ? undefined : parseCorruptions(args.corrupt);
  if (typeof corruptions === 'string') throw new Error(`--corrupt: ${corruptions}`);
  return {
    ...(args.checkpoint ? { checkpoint: args.checkpoint } : {}),
    clients: args.clients,
    fraction: args.fraction,
    rounds: args.rounds,
    epochs: args.epochs,
    batch: args.batch,
    lr: args.lr,
    partition: args.partition,
    alpha: args.alpha,
    model: args.model,
    seed: args.seed,
    target: args.target,
    stopAtTarget: args.target !== undefined && !args['keep-going'],
    heldOut: args['held-out'],
    ...(corruptions ? { corrupt: { clients: args['corrupt-clients'], corruptions } } : {}),
    ...(args['quality-action'] ? { qualityAction: args['quality-action'] } : {}),
    ...(args.poison ? { poison: args.poison } : {}),
    monitor: { ...(args['monitor-warmup'] ? { warmupRounds: args['monitor-warmup'] } : {}), ...(args['false-alarms'] ? { falseAlarmsPer100Rounds: args['false-alarms'] } : {}), ...(args.quarantine ? { quarantine: true } : {}) },
    ...(args.examples ? { examples: args.examples } : {}),
    overSelect: args['over-select'],
    aggregation: args.aggregation,
    strategy: { strategy: args.strategy, ...(args['server-lr'] !== undefined ? { serverLearningRate: args['server-lr'] } : {}), ...(args.beta1 !== undefined ? { beta1: args.beta1 } : {}), ...(args.beta2 !== undefined ? { beta2: args.beta2 } : {}), ...(args.tau !== undefined ? { tau: args.tau } : {}), ...(args.mu !== undefined ? { mu: args.mu } : {}), ...(args.q !== undefined ? { q: args.q } : {}) },
    ...(args.workers ? { workers: args.workers } : {}),
    codec: args.codec,
    topkFraction: args.topk,
    randFraction: args.rand,
    quantBlock: args['quant-block'],
    downlink: args.downlink,
    downlinkCodec: args['downlink-codec'],
    downlinkTopkFraction: args['downlink-topk'],
    ...(args['secure-aggregation'] ? { secureAggregation: true } : {}),
    ...(args['clip-norm'] !== undefined ? { clipNorm: args['clip-norm'] } : {}),
    ...(args.drop > 0 ? { dropout: args.drop } : {}),
    ...(args.neighbours ? { secAggNeighbours: args.neighbours } : {}),
    ...(args['dp-noise'] !== undefined ? { dp: { noiseMultiplier: args['dp-noise'], clipNorm: args['dp-clip'], targetDelta: args['dp-delta'], ...(args['dp-budget'] !== undefined ? { epsilonBudget: args['dp-budget'] } : {}), ...(args['dp-dropout-tolerance'] !== undefined ? { dropoutTolerance: args['dp-dropout-tolerance'] } : {}) } } : {}),
    ...(args.threshold ? { secAggThreshold: args.threshold } : {}),
    };
}
