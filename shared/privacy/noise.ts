/**
 * Gaussian noise for differential privacy, from the platform's cryptographic random source (a
 * seeded generator would let anyone who learns the seed subtract the noise). Box–Muller on
 * 53-bit uniforms in (0, 1].
 */

const BATCH = 8192; // uniforms per getRandomValues call (its limit is 65,536 bytes)

/** A source of uniforms in (0, 1] from the platform's cryptographic random source, 53 bits each. */
export function cryptoUniforms(): () => number {
  const words = new Uint32Array(BATCH * 2);
  let at = words.length;
  return (): number => {
    if (at >= words.length) {
      crypto.getRandomValues(words);
      at = 0;
    }
    const hi = words[at++]! >>> 5; // 27 bits
    const lo = words[at++]! >>> 6; // 26 bits
    return (hi * 67108864 + lo + 1) / 9007199254740992; // (0, 1]
  };
}

/** Adds N(0, std²) to every entry of `values`, in place; returns them. */
export function addGaussianNoise(values: Float32Array | Float64Array, std: number): Float32Array | Float64Array {
  if (!(std >= 0) || !Number.isFinite(std)) throw new RangeError(`noise: the standard deviation must be a finite number ≥ 0, got ${std}`);
  if (std === 0) return values;
  const uniform = cryptoUniforms();
  for (let i = 0; i < values.length; i += 2) {
    const r = std * Math.sqrt(-2 * Math.log(uniform()));
    const theta = 2 * Math.PI * uniform();
    values[i] = values[i]! + r * Math.cos(theta);
    if (i + 1 < values.length) values[i + 1] = values[i + 1]! + r * Math.sin(theta);
  }
  return values;
}
