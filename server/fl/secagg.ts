/**
 * The server's side of secure aggregation: it checks what devices send (signatures, sizes, who may
 * send what), keeps only the running sum of masked inputs, and at the end of a round rebuilds
 * from the revealed shares exactly what it needs to remove the masks — the self seeds of the
 * devices whose input it holds and the mask keys of those that dropped after sharing — and so
 * learns Σ w·Δ and Σ w, never one device's input. Pure of sockets and timers: the interpreter
 * (federation.ts) calls it, the reducer (coordinator.ts) decides when.
 */
import { verifyMessage } from '../../shared/identity.ts';
import { importPrivateKey, maskStream, publicKeyBytes, sha256Hex, type Curve } from '../../shared/secagg/crypto.ts';
import { combine, inputTranscript, pairMaskSeed, revealTranscript, sharesTranscript, verifyAdvert, type NeighbourKeys, type Reveal, type SealedShare, type SharesMessage, type UnmaskRequest } from '../../shared/secagg/device.ts';
import { pairSign } from '../../shared/secagg/plan.ts';
export { unmaskRequest } from '../../shared/secagg/plan.ts';
import { skellamSensitivity } from '../../shared/privacy/skellam.ts';
import { addInto, dequantizeMean, dequantizeSum, quantErrorBound, quantLevels, quantScale, type QuantBounds } from '../../shared/secagg/quantize.ts';

export { verifyAdvert };

/** Checks a device's shares: one per neighbour, none twice, signed by the device for this round. */
export async function verifyShares(context: string, deviceId: string, identityKey: Uint8Array<ArrayBuffer>, msg: SharesMessage, neighbours: readonly string[]): Promise<string | undefined> {
  const to = msg.shares.map((s) => s.peer);
  if (to.length !== neighbours.length || new Set(to).size !== to.length || !to.every((id) => neighbours.includes(id))) return `${deviceId} must send exactly one share to each of its ${neighbours.length} neighbours`;
  if (!(await verifyMessage(identityKey, msg.signature, sharesTranscript(context, deviceId, msg.shares)))) return `the shares of ${deviceId} are not signed by its identity key for this round`;
  return undefined;
}

/** Checks a masked input: its size, and the device's signature of it for this round. */
export async function verifyInput(context: string, deviceId: string, identityKey: Uint8Array<ArrayBuffer>, payload: Uint8Array<ArrayBuffer>, signature: Uint8Array<ArrayBuffer>, words: number): Promise<string | undefined> {
  if (payload.byteLength !== words * 4) return `a masked input of this model has ${words * 4} bytes, got ${payload.byteLength}`;
  if (!(await verifyMessage(identityKey, signature, inputTranscript(context, deviceId, payload)))) return `the masked input of ${deviceId} is not signed by its identity key for this round`;
  return undefined;
}

/** Checks a reveal: exactly the shares asked of this device, signed by it for this round. */
export async function verifyReveal(context: string, deviceId: string, identityKey: Uint8Array<ArrayBuffer>, reveal: Reveal, asked: UnmaskRequest): Promise<string | undefined> {
  const same = (got: readonly { of: string }[], want: readonly string[]) => got.length === want.length && got.every((s, i) => s.of === want[i]);
  if (!same(reveal.seeds, asked.survivors) || !same(reveal.keys, asked.dropped)) return `${deviceId} revealed other shares than it was asked for`;
  if (!(await verifyMessage(identityKey, reveal.signature, revealTranscript(context, deviceId, reveal)))) return `the reveal of ${deviceId} is not signed by its identity key for this round`;
  return undefined;
}

/**
 * Rebuilds a secret from the shares revealed for it, and checks it against the owner's commitment.
 * With more shares than needed, a wrong one is found by leaving each out in turn.
 */
async function rebuild(shares: Uint8Array[], threshold: number, commitment: string, what: string): Promise<Uint8Array<ArrayBuffer>> {
  if (shares.length < threshold) throw new Error(`${what}: ${shares.length} of the ${threshold} shares needed arrived`);
  const attempts = [shares, ...(shares.length > threshold ? shares.map((_, i) => shares.filter((__, j) => j !== i)) : [])];
  for (const subset of attempts) {
    const secret = new Uint8Array(await combine(subset));
    if ((await sha256Hex(secret)) === commitment) return secret;
  }
  throw new Error(`${what}: the shares revealed do not rebuild the committed secret`);
}

export interface UnmaskInput {
  context: string;
  curve: Curve;
  threshold: number;
  /** every device that advertised keys, as relayed to its neighbours */
  adverts: ReadonlyMap<string, NeighbourKeys>;
  neighbours: ReadonlyMap<string, readonly string[]>;
  /** devices whose shares went out (U2), and those of them whose masked input is in the sum (U3) */
  shared: ReadonlySet<string>;
  inputs: ReadonlySet<string>;
  /** the reveals of the devices in U3 that answered */
  reveals: ReadonlyMap<string, Reveal>;
  /** Σ of the masked inputs of U3, mod 2^32 */
  sum: Uint32Array;
}

/** Removes every mask from the sum of masked inputs: what is left is Σ of the devices' inputs. */
export async function unmask(u: UnmaskInput): Promise<Uint32Array> {
  const sum = Uint32Array.from(u.sum);
  const revealedFor = (id: string, kind: 'seeds' | 'keys'): Uint8Array[] =>
    [...u.reveals.values()].flatMap((r) => r[kind].filter((s) => s.of === id).map((s) => s.share));
  for (const id of [...u.inputs].sort()) {
    const advert = u.adverts.get(id)!;
    const seed = await rebuild(revealedFor(id, 'seeds'), u.threshold, advert.seedCommitment, `the self-mask seed of ${id}`);
    addInto(sum, await maskStream(seed, sum.length), -1);
  }
  for (const id of [...u.shared].filter((x) => !u.inputs.has(x)).sort()) {
    const advert = u.adverts.get(id)!;
    const pkcs8 = await rebuild(revealedFor(id, 'keys'), u.threshold, advert.keyCommitment, `the mask key of ${id}, which dropped`);
    const key = await importPrivateKey(u.curve, pkcs8);
    // each surviving neighbour added ± the mask it shares with the dropped device: take it out
    for (const peer of (u.neighbours.get(id) ?? []).filter((x) => u.inputs.has(x))) {
      const seed = await pairMaskSeed(u.context, u.curve, key, id, peer, u.adverts.get(peer)!.maskPublicKey);
      addInto(sum, await maskStream(seed, sum.length), pairSign(peer, id) === 1 ? -1 : 1);
    }
  }
  return sum;
}

// ─── one round's material, as the federation service holds it ─────────────────
export type SecAggMessage =
  | { what: 'keys'; msg: Omit<NeighbourKeys, 'identityKey' | 'deviceId'> }
  | { what: 'shares'; msg: SharesMessage }
  | { what: 'reveal'; msg: Reveal };

/**
 * What the server keeps of a secure round: the adverts it relays, the sealed shares it forwards,
 * the running sum of masked inputs (one vector, whatever the number of devices) and the reveals.
 * It checks every message against the round before the coordinator sees it.
 */
export class SecureRound {
  readonly adverts = new Map<string, NeighbourKeys>();
  readonly shares = new Map<string, SharesMessage>();
  readonly reveals = new Map<string, Reveal>();
  neighbours: Readonly<Record<string, readonly string[]>> | undefined;
  requests: Readonly<Record<string, UnmaskRequest>> = {};
  readonly sum: Uint32Array;

  constructor(
    readonly key: string,
    readonly plan: { context: string; curve: Curve; bounds: QuantBounds },
    /** parameters of the model: the input has one more word, the weight */
    parameters: number,
    /** under distributed DP: what the noisy sum is divided by (the expected round size) */
    readonly divideBy?: number,
  ) {
    this.sum = new Uint32Array(parameters + 1);
  }

  /** Why a message does not hold (undefined: it does); messages the round is not at yet pass to the coordinator, which refuses them. */
  async check(deviceId: string, identityKey: Uint8Array<ArrayBuffer>, m: SecAggMessage): Promise<string | undefined> {
    const { context, curve } = this.plan;
    switch (m.what) {
      case 'keys':
        if (m.msg.maskPublicKey.byteLength !== publicKeyBytes(curve) || m.msg.encPublicKey.byteLength !== publicKeyBytes(curve)) return `a ${curve} public key has ${publicKeyBytes(curve)} bytes`;
        return verifyAdvert(context, { ...m.msg, deviceId }, identityKey, curve);
      case 'shares':
        return this.neighbours?.[deviceId] ? verifyShares(context, deviceId, identityKey, m.msg, this.neighbours[deviceId]) : undefined;
      case 'reveal':
        return this.requests[deviceId] ? verifyReveal(context, deviceId, identityKey, m.msg, this.requests[deviceId]) : undefined;
    }
  }

  /** Keeps a message the coordinator took. */
  keep(deviceId: string, identityKey: Uint8Array<ArrayBuffer>, m: SecAggMessage): void {
    if (m.what === 'keys') this.adverts.set(deviceId, { ...m.msg, deviceId, identityKey });
    else if (m.what === 'shares') this.shares.set(deviceId, m.msg);
    else this.reveals.set(deviceId, m.msg);
  }

  /** The adverts of a device's neighbours, to send it. */
  neighbourKeys(deviceId: string): NeighbourKeys[] {
    return (this.neighbours?.[deviceId] ?? []).map((id) => this.adverts.get(id)!);
  }

  /** The shares the device's surviving neighbours sealed for it. */
  sharesFor(deviceId: string, survivors: ReadonlySet<string>): SealedShare[] {
    return (this.neighbours?.[deviceId] ?? [])
      .filter((id) => survivors.has(id))
      .map((id) => ({ peer: id, sealed: this.shares.get(id)!.shares.find((s) => s.peer === deviceId)!.sealed }));
  }

  /** Adds a checked masked input to the sum (copied: a socket's buffer may be a view at any offset). */
  add(payload: Uint8Array): void {
    addInto(this.sum, new Uint32Array(new Uint8Array(payload).buffer));
  }

  /**
   * The round's FedAvg mean Δ̄, unmasked. Every honest device clipped its update to clipNorm, so
   * their weighted mean cannot exceed it: a larger one means some input broke the bounds, and the
   * round fails rather than publish it. Under distributed DP the sum is noisy and is divided by
   * `over` (the expected round size, fixed as DP-FedAvg's estimator asks), not by the weights.
   */
  async mean(a: { t: number; neighbours: Readonly<Record<string, readonly string[]>>; shared: readonly string[]; inputs: readonly string[] }, over?: number): Promise<{ mean: Float32Array; totalWeight: number }> {
    const sum = await unmask({ context: this.plan.context, curve: this.plan.curve, threshold: a.t, adverts: this.adverts, neighbours: new Map(Object.entries(a.neighbours)), shared: new Set(a.shared), inputs: new Set(a.inputs), reveals: this.reveals, sum: this.sum });
    const { bounds } = this.plan;
    if (bounds.noise) {
      if (!(over !== undefined && over > 0)) throw new Error('secure aggregation: a noisy sum needs the expected round size to divide by');
      const result = dequantizeSum(sum, a.inputs.length, bounds, over);
      const limit = noisySumBound(bounds, a.inputs.length) / over;
      const norm = l2(result.sum);
      if (norm > limit) throw new Error(`secure aggregation: the unmasked noisy sum has L2 norm ${(norm * over).toFixed(3)}, above the ${(limit * over).toFixed(3)} that ${a.inputs.length} clipped updates and their noise reach: an input broke the bounds`);
      return { mean: result.sum, totalWeight: result.totalWeight };
    }
    const result = dequantizeMean(sum, a.inputs.length, bounds);
    const slack = quantErrorBound(bounds, a.inputs.length, result.totalWeight) * Math.sqrt(result.mean.length);
    if (l2(result.mean) > bounds.clipNorm * (1 + 1e-6) + slack) throw new Error(`secure aggregation: the unmasked mean has L2 norm ${l2(result.mean).toFixed(3)}, above the bound ${bounds.clipNorm} every device clips to: an input broke the bounds`);
    return result;
  }
}

function l2(v: Float32Array): number {
  let sq = 0;
  for (const x of v) sq += x * x;
  return Math.sqrt(sq);
}

/**
 * The most a noisy sum of `inputs` honest inputs can measure, in update units: every input's
 * clipped and rounded vector, plus the noise's norm, which passes σ·√(d + 2√(40d) + 80) with
 * probability below e^−40 (Laurent & Massart 2000, with 10 % for Skellam's near-Gaussian tails).
 */
export function noisySumBound(bounds: QuantBounds, inputs: number): number {
  const noise = bounds.noise!;
  const levels = quantLevels(bounds);
  const { l2: perInput } = skellamSensitivity(levels, noise.parameters);
  const d = noise.parameters;
  const sigma = noise.noiseMultiplier * perInput * Math.sqrt(inputs / noise.minInputs);
  return (inputs * perInput + 1.1 * sigma * Math.sqrt(d + 2 * Math.sqrt(40 * d) + 80)) / quantScale(bounds);
}
