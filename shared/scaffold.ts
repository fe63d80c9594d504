/**
 * SCAFFOLD (Karimireddy et al. 2020, "SCAFFOLD: Stochastic Controlled Averaging for Federated
 * Learning", Algorithm 1 with option II): control variates correct each device's drift towards its
 * own optimum. The server keeps c, each device its own c_i (0 when it first trains in a run).
 *
 *   device, K local steps of rate η:   y ← y − η·(g_i(y) − c_i + c)
 *                                      c_i⁺ = c_i − c + (x − y)/(K·η)        (option II)
 *                                      sends Δy = y − x and Δc = c_i⁺ − c_i; keeps c_i⁺ once counted
 *   server, sampled set S of N:        x ← x + η_g · mean(Δy)
 *                                      c ← c + (|S|/N) · mean(Δc)
 *
 * Here both means are FedAvg's (weighted by examples, like every update), the two halves travel as
 * one update — Δy's tensors followed by Δc's, named `<tensor>#control` — so the codec, validation and
 * streaming sum take them as they take any update, and N is the number of devices connected when
 * the round is aggregated. Cost: a device downloads c with the model (+4 bytes per parameter) and
 * uploads Δc with Δy (twice the values through the run's codec). Pure: no TF.js.
 */
import type { TensorSpec } from './weights.ts';

/** The server's half of the state kept with each model version. */
export interface ScaffoldState {
  c: Float32Array;
}

export const CONTROL_SUFFIX = '#control';

/** The tensors of a SCAFFOLD update: the model's (Δy), then the same shapes again for Δc. */
export function scaffoldUpdateSpecs(specs: readonly TensorSpec[]): TensorSpec[] {
  return [...specs, ...specs.map((s) => ({ name: `${s.name}${CONTROL_SUFFIX}`, shape: s.shape }))];
}

/**
 * The device's new control variate after `steps` local steps of rate `learningRate` moved its
 * weights by `delta` (= y − x): c_i⁺ = c_i − c − Δy/(K·η), and the change it reports, Δc = c_i⁺ − c_i.
 */
export function deviceControlStep(local: Float32Array, server: Float32Array, delta: Float32Array, steps: number, learningRate: number): { next: Float32Array; change: Float32Array } {
  const n = delta.length;
  if (local.length !== n || server.length !== n) throw new RangeError(`scaffold: sizes differ (update ${n}, device control ${local.length}, server control ${server.length})`);
  if (!(steps > 0) || !(learningRate > 0)) throw new RangeError(`scaffold: the control variate needs at least one step of a positive rate (steps ${steps}, rate ${learningRate})`);
  const k = 1 / (steps * learningRate);
  const next = new Float32Array(n);
  const change = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    const c = -server[i]! - delta[i]! * k;
    change[i] = c;
    next[i] = local[i]! + c;
  }
  return { next, change };
}

/** The gradient correction a device trains with, c − c_i, per coordinate. */
export function controlCorrection(local: Float32Array, server: Float32Array): Float32Array {
  if (local.length !== server.length) throw new RangeError(`scaffold: device control has ${local.length} values, server control ${server.length}`);
  return server.map((c, i) => c - local[i]!);
}

/**
 * The server's step: from x and c, the round's mean update [mean Δy ; mean Δc] (`meanUpdate`, 2n
 * values), the server rate η_g and the share |S|/N of devices that took part, the new x and c.
 */
export function scaffoldServerStep(x: Float32Array, state: ScaffoldState, meanUpdate: Float32Array, serverLearningRate: number, share: number): { weights: Float32Array; state: ScaffoldState } {
  const n = x.length;
  if (state.c.length !== n || meanUpdate.length !== 2 * n) throw new RangeError(`scaffold: sizes differ (weights ${n}, control ${state.c.length}, update ${meanUpdate.length}, expected ${2 * n})`);
  if (!(share > 0 && share <= 1)) throw new RangeError(`scaffold: the share of devices in the round must be in (0, 1], got ${share}`);
  const weights = new Float32Array(n);
  const c = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    weights[i] = x[i]! + serverLearningRate * meanUpdate[i]!;
    c[i] = state.c[i]! + share * meanUpdate[n + i]!;
  }
  return { weights, state: { c } };
}
