/**
 * Hyper-parameter search over simulated federations (`npm run tune`), in the spirit of Katib:
 * a search space over the simulation's options, trials drawn from it at random, and asynchronous
 * successive halving (ASHA, Li et al. 2020, "A System for Massively Parallel Hyperparameter Tuning")
 * to spend the rounds on the trials that lead at each rung. Pure: the runner (scripts/tune.ts) runs the trials.
 *
 * The objective is rounds to a target accuracy on a validation split (fewer is better); a trial that
 * does not reach it ranks below every trial that does, by its best accuracy.
 */
import { z } from 'zod';
import type { Rng } from '../../shared/rng.ts';

/** the simulate:node options a search space may vary (the rest are fixed for all trials) */
export const TUNABLE = ['lr', 'epochs', 'batch', 'fraction', 'strategy', 'server-lr', 'beta1', 'beta2', 'tau', 'mu', 'q'] as const;
export type Tunable = (typeof TUNABLE)[number];
export type ParamValue = number | string;

const value = z.union([z.number(), z.string()]);
/** a parameter drawn only when the listed (unconditional) parameters took one of the listed values */
const when = z.record(z.string(), z.array(value).min(1)).optional();
const range = (positive: boolean) =>
  z.tuple([positive ? z.number().positive() : z.number(), positive ? z.number().positive() : z.number()]).refine(([lo, hi]) => lo <= hi, 'the range must be [low, high] with low ≤ high');
const distribution = z.union([
  z.strictObject({ choice: z.array(value).min(1), when }),
  z.strictObject({ uniform: range(false), when }),
  z.strictObject({ log: range(true), when }),
  z.strictObject({ int: range(false).refine(([lo, hi]) => Number.isInteger(lo) && Number.isInteger(hi), 'an int range takes whole numbers'), when }),
]);
export type Distribution = z.infer<typeof distribution>;

/** each tunable option: one distribution, or several conditioned ones (the first whose `when` holds is drawn) */
export const searchSpaceSchema = z
  .partialRecord(z.enum(TUNABLE), z.union([distribution, z.array(distribution).min(1)]))
  .superRefine((space, ctx) => {
    const entries = Object.entries(space) as [Tunable, Distribution | Distribution[]][];
    if (entries.length === 0) ctx.addIssue({ code: 'custom', message: 'the search space is empty: name at least one option to vary' });
    const unconditional = new Set(entries.filter(([, d]) => [d].flat().every((x) => !x.when)).map(([k]) => k));
    for (const [key, d] of entries) {
      for (const x of [d].flat()) {
        for (const on of Object.keys(x.when ?? {})) {
          if (!unconditional.has(on as Tunable)) ctx.addIssue({ code: 'custom', path: [key], message: `"${key}" depends on "${on}", which is not an unconditional option of the space` });
        }
      }
    }
  });
export type SearchSpace = z.infer<typeof searchSpaceSchema>;

/** 3 significant digits: a drawn learning rate reads 0.0734, not 0.07338219 */
const round3 = (v: number) => Number(v.toPrecision(3));

function draw(d: Distribution, rng: Rng): ParamValue {
  if ('choice' in d) return d.choice[Math.floor(rng() * d.choice.length)] as ParamValue;
  if ('uniform' in d) return round3(d.uniform[0] + rng() * (d.uniform[1] - d.uniform[0]));
  if ('log' in d) return round3(Math.exp(Math.log(d.log[0]) + rng() * (Math.log(d.log[1]) - Math.log(d.log[0]))));
  return d.int[0] + Math.floor(rng() * (d.int[1] - d.int[0] + 1));
}

/** One trial's parameters: the unconditional options first, then those whose condition holds. */
export function sampleTrial(space: SearchSpace, rng: Rng): Record<string, ParamValue> {
  const out: Record<string, ParamValue> = {};
  const entries = Object.entries(space) as [Tunable, Distribution | Distribution[]][];
  const conditional = (d: Distribution | Distribution[]) => [d].flat().some((x) => x.when);
  for (const [key, d] of entries) if (!conditional(d)) out[key] = draw([d].flat()[0] as Distribution, rng);
  for (const [key, d] of entries) {
    if (!conditional(d)) continue;
    const holds = [d].flat().find((x) => Object.entries(x.when ?? {}).every(([on, values]) => values.includes(out[on] as ParamValue)));
    if (holds) out[key] = draw(holds, rng);
  }
  return out;
}

export interface AshaOptions {
  /** rounds of the first rung (every trial runs at least these) */
  minRounds: number;
  /** a trial's last round */
  maxRounds: number;
  /** η: the share of trials going on past each rung is 1/η */
  reduction: number;
}

/** The rounds at which trials are judged: minRounds·η^k below maxRounds. */
export function rungsOf({ minRounds, maxRounds, reduction }: AshaOptions): number[] {
  if (!(Number.isInteger(minRounds) && minRounds >= 1)) throw new RangeError(`ASHA: the first rung must be a whole number of rounds ≥ 1, got ${minRounds}`);
  if (!(Number.isInteger(maxRounds) && maxRounds >= minRounds)) throw new RangeError(`ASHA: the last round (${maxRounds}) must be a whole number ≥ the first rung (${minRounds})`);
  if (!(reduction >= 2)) throw new RangeError(`ASHA: the reduction factor must be at least 2, got ${reduction}`);
  const rungs: number[] = [];
  for (let r = minRounds; r < maxRounds; r = Math.round(r * reduction)) rungs.push(r);
  return rungs;
}

/**
 * A trial's score after some rounds, higher is better: a trial that reached the target scores above 1,
 * the sooner the higher; one that did not scores its best accuracy so far.
 */
export function trialScore(bestAccuracy: number, reachedAt: number | null, maxRounds: number): number {
  return reachedAt === null ? bestAccuracy : 1 + (maxRounds - reachedAt + 1) / maxRounds;
}

export type Job = { kind: 'start' | 'resume'; id: number };

/**
 * Asynchronous successive halving (ASHA, Li et al. 2020, Algorithm 2) over a fixed set of trials.
 * A trial that reaches a rung pauses there. Whenever a worker is free it takes, from the highest rung
 * down, a paused trial that is in the top ⌊n/η⌋ of the n trials recorded at its rung and promotes it
 * (it resumes where it paused); failing that, it starts a new trial. No trial goes on without being
 * compared (with fewer than η trials at a rung, none is promoted), and no worker waits for a rung to
 * fill. The search is over when nothing runs and nothing can be taken: trials still paused stay
 * stopped at their rung.
 */
export class Asha {
  readonly rungs: number[];
  private readonly recorded = new Map<number, Map<number, number>>();
  private readonly paused = new Map<number, number>();
  private readonly promoted = new Set<string>();
  private readonly waiting: number[];

  constructor(readonly options: AshaOptions, trialIds: readonly number[]) {
    this.rungs = rungsOf(options);
    for (const r of this.rungs) this.recorded.set(r, new Map());
    this.waiting = [...trialIds];
  }

  /** After a trial's round: 'pause' at a rung (its score recorded there), else 'continue'. */
  report(id: number, round: number, score: number): 'continue' | 'pause' {
    const at = this.recorded.get(round);
    if (!at || this.promoted.has(`${round}:${id}`)) return 'continue';
    at.set(id, score);
    this.paused.set(id, round);
    return 'pause';
  }

  /** A trial ended by itself (the target, its last round, a failure): its final score counts at the rungs it never reached. */
  finished(id: number, lastRound: number, score: number | null): void {
    this.paused.delete(id);
    if (score === null) return;
    for (const r of this.rungs) if (r > lastRound) this.recorded.get(r)!.set(id, score);
  }

  /** What a free worker should run next; undefined: nothing now. */
  next(): Job | undefined {
    for (const rung of [...this.rungs].reverse()) {
      const at = [...this.recorded.get(rung)!].sort((a, b) => b[1] - a[1] || a[0] - b[0]);
      const top = at.slice(0, Math.floor(at.length / this.options.reduction));
      const take = top.find(([id]) => this.paused.get(id) === rung && !this.promoted.has(`${rung}:${id}`));
      if (take) {
        this.promoted.add(`${rung}:${take[0]}`);
        this.paused.delete(take[0]);
        return { kind: 'resume', id: take[0] };
      }
    }
    const id = this.waiting.shift();
    return id === undefined ? undefined : { kind: 'start', id };
  }

  /** the trials paused at a rung (at the end of the search: stopped there), by id */
  get pausedTrials(): ReadonlyMap<number, number> {
    return this.paused;
  }

  /** the scores recorded at each rung so far */
  get recordedScores(): { rung: number; scores: number[] }[] {
    return this.rungs.map((rung) => ({ rung, scores: [...this.recorded.get(rung)!.values()] }));
  }
}

export interface TrialOutcome {
  id: number;
  /** the round at which it reached the target (null: never) */
  reachedAt: number | null;
  bestAccuracy: number;
  rounds: number;
}

/** Trials best first: reached the target in fewer rounds, then higher best accuracy, then fewer rounds run. */
export function rankTrials<T extends TrialOutcome>(trials: readonly T[]): T[] {
  return [...trials].sort((a, b) => (a.reachedAt ?? Infinity) - (b.reachedAt ?? Infinity) || b.bestAccuracy - a.bestAccuracy || a.rounds - b.rounds || a.id - b.id);
}
