/**
 * The shape of a secure-aggregation round (SecAgg+, Bell et al. 2020): every device shares its
 * secrets with k neighbours on a shuffled ring, any t of which can rebuild them. Both the server
 * and the devices derive the round's k and t from the run's settings and the number of devices
 * that advertised keys, so a device can check what the server asks of it.
 */
import type { Curve } from './crypto.ts';
import type { UnmaskRequest } from './device.ts';
import type { QuantBounds } from './quantize.ts';

export interface SecAggPlan {
  curve: Curve;
  /** neighbours per device the run asks for (0: automatic), and the threshold (0: a majority of them) */
  neighbours: number;
  threshold: number;
  bounds: QuantBounds;
}

/** The neighbours a run asks for by default: about 2·log2(n), at least 4 (all of them in small rounds). */
export const defaultNeighbours = (devices: number): number => Math.max(4, 2 * Math.ceil(Math.log2(Math.max(2, devices))));

/** The round's k (neighbours per device) and t (shares needed), for `devices` that advertised keys. */
export function roundShape(plan: Pick<SecAggPlan, 'neighbours' | 'threshold'>, devices: number): { k: number; t: number; problem?: string } {
  const asked = plan.neighbours > 0 ? plan.neighbours : defaultNeighbours(devices);
  // a ring gives each device the same number on both sides; in a small round everyone is a neighbour
  const k = devices - 1 <= asked ? devices - 1 : 2 * Math.floor(asked / 2);
  const t = Math.min(plan.threshold > 0 ? plan.threshold : Math.floor(k / 2) + 1, k);
  if (devices < 3) return { k, t, problem: `secure aggregation needs at least 3 devices in a round, ${devices} advertised keys` };
  if (t < 2 || 2 * t <= k) return { k, t, problem: `with ${devices} devices each has ${k} neighbours; a threshold of ${t} is not a majority of them` };
  return { k, t };
}

/** Why these settings cannot work for a round of up to `devices` devices, naming the field; undefined when they can. */
export function planProblem(neighbours: number, threshold: number, devices: number): { field: 'secAggNeighbours' | 'secAggThreshold'; message: string } | undefined {
  if (neighbours > 0 && neighbours % 2 === 1) return { field: 'secAggNeighbours', message: 'must be even: neighbours sit on both sides of a ring' };
  const { k } = roundShape({ neighbours, threshold: 0 }, devices);
  if (threshold > 0 && threshold > k) return { field: 'secAggThreshold', message: `must be at most the ${k} neighbours a device has in a round of ${devices}` };
  if (threshold > 0 && 2 * threshold <= k) return { field: 'secAggThreshold', message: `must be more than half of the ${k} neighbours a device has in a round of ${devices}, or a server could rebuild both secrets of one device` };
  return undefined;
}

/**
 * Neighbours on a ring shuffled by `seed`: each device gets ⌊k/2⌋ on each side (everyone when the
 * round is small), so the relation is symmetric.
 */
export function ringNeighbours(deviceIds: readonly string[], k: number, shuffle: (ids: string[]) => string[]): Map<string, string[]> {
  const ring = shuffle([...deviceIds].sort());
  const n = ring.length;
  const out = new Map<string, string[]>();
  const half = k >= n - 1 ? n : Math.floor(k / 2);
  ring.forEach((id, i) => {
    const near = new Set<string>();
    for (let d = 1; d <= half && near.size < n - 1; d++) {
      near.add(ring[(i + d) % n]!);
      near.add(ring[(i - d + n) % n]!);
    }
    near.delete(id);
    out.set(id, [...near].sort());
  });
  return out;
}

/** The round's context, bound into every signature, key derivation and sealed share. */
export const roundContext = (runId: number, round: number, attempt: number): string => `fedbrowser/secagg/v1/run-${runId}/round-${round}.${attempt}`;

/** Which of a pair adds the pairwise mask (the other subtracts it). */
export const pairSign = (self: string, other: string): 1 | -1 => (self < other ? 1 : -1);

/** What one device must reveal at the end of a round: for its neighbours in the sum their self-seed shares, for those that shared and dropped their mask-key shares. */
export function unmaskRequest(device: string, neighbours: Readonly<Record<string, readonly string[]>>, shared: ReadonlySet<string>, inputs: ReadonlySet<string>): UnmaskRequest {
  const near = (neighbours[device] ?? []).filter((id) => shared.has(id));
  return { survivors: near.filter((id) => inputs.has(id)), dropped: near.filter((id) => !inputs.has(id)) };
}

/**
 * The devices whose secrets can be rebuilt: each must have at least t neighbours among them to
 * hold its shares. Devices short of that are left out, which may leave others short: repeated
 * until it holds for all.
 */
export function keepRebuildable(devices: readonly string[], neighbours: Readonly<Record<string, readonly string[]>>, t: number): string[] {
  let kept = new Set(devices);
  for (;;) {
    const next = new Set([...kept].filter((id) => (neighbours[id] ?? []).filter((n) => kept.has(n)).length >= t));
    if (next.size === kept.size) return [...kept].sort();
    kept = next;
  }
}
