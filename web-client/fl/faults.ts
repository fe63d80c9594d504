/**
 * Fault injection for the browser simulation (`npm run simulate -- --silent P --late P`): a device
 * that, in a round it was selected for, stays connected but never answers (silent), or answers
 * only after the round's deadline (late). Each round's fault is drawn from a seed, the device's
 * slot and the round, so a run can be replayed. Tabs that close mid-round (--drop) are the
 * harness's doing: a page cannot close itself.
 */
import { createRng, hashString } from '../../shared/rng.ts';
import type { BeforeSubmit } from './client.ts';

export interface PageFaults {
  /** probability that the device stays silent in a round it was selected for */
  silent: number;
  /** probability that it answers after the round's deadline */
  late: number;
  seed: number;
  /** the device's slot in the simulation (its tab) */
  slot: number;
}

/** Reads the faults from the page's query (`faultSilent`, `faultLate`, `faultSeed`, `client`); undefined when there are none. */
export function faultsFromQuery(params: URLSearchParams): PageFaults | undefined {
  const p = (name: string) => Number(params.get(name) ?? 0);
  const faults = { silent: p('faultSilent'), late: p('faultLate'), seed: p('faultSeed'), slot: p('client') };
  for (const [name, v] of [['faultSilent', faults.silent], ['faultLate', faults.late]] as const) {
    if (!(v >= 0 && v <= 1)) throw new Error(`${name} must be a probability in [0, 1], got "${params.get(name)}"`);
  }
  if (faults.silent + faults.late > 1) throw new Error('faultSilent + faultLate must not exceed 1');
  return faults.silent > 0 || faults.late > 0 ? faults : undefined;
}

export type Fault = 'none' | 'silent' | 'late';

/** The fault of one round, a function of the seed, the slot and the round. */
export function faultOf(f: PageFaults, runId: number, round: number, attempt: number): Fault {
  const u = createRng(hashString(`${f.seed}:${f.slot}:${runId}:${round}:${attempt}`))();
  return u < f.silent ? 'silent' : u < f.silent + f.late ? 'late' : 'none';
}

/** A device that misbehaves as drawn: it sends nothing (silent), or sends after the deadline (late). */
export function faultyDevice(f: PageFaults, onFault: (fault: Fault, round: number, attempt: number) => void = () => undefined): BeforeSubmit {
  return async (submission, round) => {
    const fault = faultOf(f, round.runId, round.round, round.attempt);
    onFault(fault, round.round, round.attempt);
    if (fault === 'silent') return undefined;
    // Just after the deadline: the round has closed; its record counts the answer as late (rewritten when its model is evaluated).
    if (fault === 'late') await new Promise((r) => setTimeout(r, Math.max(0, round.deadline - Date.now()) + 100));
    return submission;
  };
}
