/**
 * Server optimizers (Reddi et al. 2021, "Adaptive Federated Optimization", Algorithm 2; Hsu et al.
 * 2019 for server momentum): the round's aggregated update Δ (the weighted mean of w_local −
 * w_global) is a pseudo-gradient, −Δ, and the server takes a step of its own with it.
 *
 *   FedAvgM     m ← β1·m + Δ                                  w ← w + η·m
 *   FedAdagrad  m ← β1·m + (1 − β1)·Δ,  v ← v + Δ²              w ← w + η·m / (√v + τ)
 *   FedAdam     m as Adagrad,           v ← β2·v + (1 − β2)·Δ²
 *   FedYogi     m as Adagrad,           v ← v − (1 − β2)·Δ²·sign(v − Δ²)
 *
 * v starts at τ² (the paper's v₋₁ ≥ τ²), m at 0; no bias correction, as in the paper. Everything
 * is per coordinate, in float64 on the way, stored as float32 with the model version, so a
 * resumed run goes on from exactly the state it stopped at. Pure: no TF.js.
 */

import type { ScaffoldState } from './scaffold.ts';
import { decodeWeights, encodeWeights } from './weights.ts';

export const SERVER_OPTIMIZERS = ['fedavgm', 'fedadagrad', 'fedadam', 'fedyogi'] as const;
export type ServerOptimizerName = (typeof SERVER_OPTIMIZERS)[number];

export interface ServerOptimizerParams {
  /** η, the server's learning rate */
  learningRate: number;
  /** β1: momentum (FedAvgM's β; the first moment of the adaptive ones) */
  beta1: number;
  /** β2: the second moment's decay (FedAdam, FedYogi) */
  beta2: number;
  /** τ: adaptivity, the smallest √v counts as */
  tau: number;
}

/** The state carried from round to round: momentum m, and v for the adaptive optimizers. */
export interface ServerOptimizerState {
  m: Float32Array;
  v?: Float32Array;
}

export const isServerOptimizer = (name: string): name is ServerOptimizerName => (SERVER_OPTIMIZERS as readonly string[]).includes(name);

/** The state before the first round. */
export function initialServerState(name: ServerOptimizerName, size: number, tau: number): ServerOptimizerState {
  return name === 'fedavgm' ? { m: new Float32Array(size) } : { m: new Float32Array(size), v: new Float32Array(size).fill(tau * tau) };
}

/**
 * One server step: from the global weights `w`, the round's aggregated update `delta` and the
 * state, the new weights and the new state (the inputs are not changed).
 */
export function serverStep(name: ServerOptimizerName, p: ServerOptimizerParams, w: Float32Array, delta: Float32Array, state: ServerOptimizerState): { weights: Float32Array; state: ServerOptimizerState } {
  const n = w.length;
  if (delta.length !== n || state.m.length !== n || (state.v && state.v.length !== n)) throw new RangeError(`server optimizer: sizes differ (weights ${n}, update ${delta.length}, state ${state.m.length})`);
  const weights = new Float32Array(n);
  const m = new Float32Array(n);
  const { learningRate: eta, beta1, beta2, tau } = p;
  if (name === 'fedavgm') {
    for (let i = 0; i < n; i++) {
      const mi = beta1 * state.m[i]! + delta[i]!;
      m[i] = mi;
      weights[i] = w[i]! + eta * mi;
    }
    return { weights, state: { m } };
  }
  if (!state.v) throw new Error(`server optimizer ${name}: the state has no second moment`);
  const v = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    const d = delta[i]!;
    const d2 = d * d;
    const mi = beta1 * state.m[i]! + (1 - beta1) * d;
    const prev = state.v[i]!;
    const vi = name === 'fedadagrad' ? prev + d2 : name === 'fedadam' ? beta2 * prev + (1 - beta2) * d2 : prev - (1 - beta2) * d2 * Math.sign(prev - d2);
    m[i] = mi;
    v[i] = vi;
    weights[i] = w[i]! + (eta * mi) / (Math.sqrt(vi) + tau);
  }
  return { weights, state: { m, v } };
}

/** What the server keeps with a model version for the run's strategy: a server optimizer's moments, or SCAFFOLD's control variate. */
export type ServerState = ServerOptimizerState | ScaffoldState;

const STATE_LAYOUTS = ['m', 'm,v', 'c'] as const;

/** The state as stored with a model version: a weights payload (weights.ts) with tensors `m` (and `v`), or `c`. */
export function encodeServerState(state: ServerState): Uint8Array {
  const parts: [string, Float32Array][] = 'c' in state ? [['c', state.c]] : state.v ? [['m', state.m], ['v', state.v]] : [['m', state.m]];
  const n = parts[0]![1].length;
  const values = new Float32Array(parts.length * n);
  parts.forEach(([, v], i) => values.set(v, i * n));
  return encodeWeights({ specs: parts.map(([name]) => ({ name, shape: [n] })), values });
}

export function decodeServerState(payload: Uint8Array, size: number): ServerState {
  const { specs, values } = decodeWeights(payload);
  const names = specs.map((s) => s.name).join(',');
  if (!(STATE_LAYOUTS as readonly string[]).includes(names) || specs.some((s) => s.shape.length !== 1 || s.shape[0] !== size)) throw new Error(`server state: expected m (and v), or c, of ${size} values, found ${specs.map((s) => `${s.name}[${s.shape.join('×')}]`).join(', ')}`);
  const part = (i: number) => values.slice(i * size, (i + 1) * size);
  return names === 'c' ? { c: part(0) } : names === 'm' ? { m: part(0) } : { m: part(0), v: part(1) };
}
