/**
 * Gradient inversion against a dense first layer with a bias — the 2NN's (McMahan et al. 2017) —
 * read straight off a model update (Phong et al. 2017; Geiping et al. 2020, section 4): for one SGD
 * step, the first layer's weight update for unit i is −η Σ_k δ_ki x_k and its bias update is
 * −η Σ_k δ_ki, so their ratio is an average of the inputs weighted by how much each moved unit i.
 * A unit that only one example of the batch activated (ReLU) gives that example exactly. Over
 * several steps the weights move between them and the recovery blurs; in a sum over devices (secure
 * aggregation) and under DP noise the units mix or drown what they carried. Nothing here trains: it
 * reads an update, as a curious server would.
 */

export interface FirstLayer {
  /** the kernel's update, [inputs × units] row-major (TF.js's dense kernel layout) */
  kernel: Float32Array;
  bias: Float32Array;
  inputs: number;
  units: number;
}

/** Every unit's candidate input: its kernel update over its bias update (units whose bias barely moved are skipped). */
export function candidateInputs(layer: FirstLayer, minBias = 1e-9): Float32Array[] {
  const out: Float32Array[] = [];
  for (let i = 0; i < layer.units; i++) {
    const b = layer.bias[i]!;
    if (!(Math.abs(b) > minBias)) continue;
    const x = new Float32Array(layer.inputs);
    for (let j = 0; j < layer.inputs; j++) x[j] = layer.kernel[j * layer.units + i]! / b;
    out.push(x);
  }
  return out;
}

/** Peak signal-to-noise ratio (dB) of `guess` against `truth`, both in [0, 1] (the guess is clamped to it). */
export function psnr(truth: Float32Array, guess: Float32Array): number {
  let se = 0;
  for (let j = 0; j < truth.length; j++) {
    const g = Math.min(1, Math.max(0, guess[j]!));
    se += (truth[j]! - g) ** 2;
  }
  const mse = se / truth.length;
  return mse === 0 ? Infinity : 10 * Math.log10(1 / mse);
}

export interface Recovery {
  /** for each original, the candidate closest to it and its PSNR */
  best: { candidate: Float32Array | undefined; psnr: number }[];
  meanPsnr: number;
  /** originals recovered above `goodDb` (a digit a person reads at once) */
  recovered: number;
}

/** How well the candidates rebuild each original: the best-matching candidate per original. */
export function matchOriginals(originals: readonly Float32Array[], candidates: readonly Float32Array[], goodDb = 20): Recovery {
  const best = originals.map((x) => {
    let top: { candidate: Float32Array | undefined; psnr: number } = { candidate: undefined, psnr: 0 };
    for (const c of candidates) {
      const p = psnr(x, c);
      if (p > top.psnr) top = { candidate: c, psnr: Math.min(p, 99) };
    }
    return top;
  });
  const meanPsnr = best.reduce((a, b) => a + b.psnr, 0) / Math.max(1, best.length);
  return { best, meanPsnr, recovered: best.filter((b) => b.psnr >= goodDb).length };
}
