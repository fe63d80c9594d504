/**
 * A device's side of one secure-aggregation round (Bonawitz et al. 2017, with the neighbourhoods of
 * SecAgg+), the same code in the browser and in Node:
 *
 *   1. advertise   two fresh agreement key pairs (masks, shares), commitments to its secrets; signed
 *   2. share       Shamir-share (t of k) a fresh self-mask seed and the mask private key among its
 *                  neighbours, each share sealed with AES-GCM for one neighbour; signed
 *   3. receive     the sealed shares its neighbours made for it (those neighbours are the round's)
 *   4. mask        its quantized input + PRG(self seed) ± PRG(pair seed) for every such neighbour
 *   5. reveal      for each surviving neighbour a share of its self seed, for each dropped one a
 *                  share of its mask key — never both for one neighbour, and only once a round
 *
 * Every message names the round, and every key, seal and signature is bound to it, so nothing can
 * be replayed into another round. What the device signs, the server and the neighbours verify with
 * the identity key its id derives from (identity.ts).
 */
import { combine, split } from 'shamir-secret-sharing';
import { deviceIdOf, signMessage, transcript, verifyMessage, type DeviceIdentity } from '../identity.ts';
import { addInto } from './quantize.ts';
import { agree, createAgreementKeys, maskStream, open, randomBytes, seal, SEED_BYTES, sha256Hex, type AgreementKeys, type Curve } from './crypto.ts';
import { pairSign } from './plan.ts';

export { combine };

/** What a device advertises in step 1. */
export interface KeysAdvert {
  deviceId: string;
  curve: Curve;
  maskPublicKey: Uint8Array<ArrayBuffer>;
  encPublicKey: Uint8Array<ArrayBuffer>;
  /** SHA-256 of its self-mask seed and of its mask private key (PKCS#8): a rebuilt secret is checked against them */
  seedCommitment: string;
  keyCommitment: string;
  signature: Uint8Array<ArrayBuffer>;
}

/** A neighbour's advert as the server relays it, with the identity key that proves its id. */
export interface NeighbourKeys extends KeysAdvert {
  identityKey: Uint8Array<ArrayBuffer>;
}

export interface SealedShare {
  /** the other end: the receiver in what a device sends, the sender in what it receives */
  peer: string;
  sealed: Uint8Array<ArrayBuffer>;
}

export interface SharesMessage {
  shares: SealedShare[];
  signature: Uint8Array<ArrayBuffer>;
}

export interface UnmaskRequest {
  /** its neighbours whose masked input the server holds: reveal their self-seed shares */
  survivors: string[];
  /** its neighbours that shared keys but sent no input: reveal their mask-key shares */
  dropped: string[];
}

export interface RevealedShare {
  of: string;
  share: Uint8Array<ArrayBuffer>;
}

export interface Reveal {
  seeds: RevealedShare[];
  keys: RevealedShare[];
  signature: Uint8Array<ArrayBuffer>;
}

const KEYS = 'fedbrowser/secagg/keys';
const SHARES = 'fedbrowser/secagg/shares';
const INPUT = 'fedbrowser/secagg/input';
const REVEAL = 'fedbrowser/secagg/reveal';

export const advertTranscript = (context: string, a: Omit<KeysAdvert, 'signature'>) => transcript(KEYS, [context, a.deviceId, a.curve, a.maskPublicKey, a.encPublicKey, a.seedCommitment, a.keyCommitment]);
export const sharesTranscript = (context: string, deviceId: string, shares: readonly SealedShare[]) => transcript(SHARES, [context, deviceId, ...shares.flatMap((s) => [s.peer, s.sealed])]);
export const inputTranscript = (context: string, deviceId: string, payload: Uint8Array) => transcript(INPUT, [context, deviceId, payload]);
export const revealTranscript = (context: string, deviceId: string, r: Omit<Reveal, 'signature'>) =>
  transcript(REVEAL, [context, deviceId, 'seeds', ...r.seeds.flatMap((s) => [s.of, s.share]), 'keys', ...r.keys.flatMap((s) => [s.of, s.share])]);

/** The key that seals shares between two devices, and the seed of their pairwise mask: both ends derive the same. */
const pairInfo = (context: string, purpose: 'shares' | 'mask', a: string, b: string) => `${context}/${purpose}/${a < b ? `${a}/${b}` : `${b}/${a}`}`;
export const pairMaskSeed = (context: string, curve: Curve, privateKey: CryptoKey, self: string, peer: string, peerMaskKey: Uint8Array<ArrayBuffer>) =>
  agree(curve, privateKey, peerMaskKey, pairInfo(context, 'mask', self, peer));
const sealBinding = (context: string, from: string, to: string) => `${context}/share/${from}->${to}`;

/** A share's plaintext: the share of the self-mask seed, then the share of the mask private key. */
function packShares(seed: Uint8Array, key: Uint8Array): Uint8Array<ArrayBuffer> {
  const out = new Uint8Array(2 + seed.length + key.length);
  new DataView(out.buffer).setUint16(0, seed.length);
  out.set(seed, 2);
  out.set(key, 2 + seed.length);
  return out;
}

function unpackShares(bytes: Uint8Array<ArrayBuffer>): { seed: Uint8Array<ArrayBuffer>; key: Uint8Array<ArrayBuffer> } {
  const seedLength = new DataView(bytes.buffer, bytes.byteOffset).getUint16(0);
  if (seedLength !== SEED_BYTES + 1 || bytes.length <= 2 + seedLength + 1) throw new Error('secure aggregation: a share has the wrong layout');
  return { seed: bytes.slice(2, 2 + seedLength), key: bytes.slice(2 + seedLength) };
}

/** Checks a neighbour's advert: its id derives from its identity key, and that key signed it for this round. */
export async function verifyAdvert(context: string, advert: KeysAdvert, identityKey: Uint8Array<ArrayBuffer>, curve: Curve): Promise<string | undefined> {
  if (advert.curve !== curve) return `advertised ${advert.curve} keys in a ${curve} round`;
  if ((await deviceIdOf(identityKey)) !== advert.deviceId) return `the identity key does not belong to ${advert.deviceId}`;
  if (!(await verifyMessage(identityKey, advert.signature, advertTranscript(context, advert)))) return `the keys of ${advert.deviceId} are not signed by its identity key for this round`;
  return undefined;
}

export class SecAggDevice {
  private neighbours = new Map<string, NeighbourKeys>();
  /** the neighbours whose shares reached this device: the round's pairwise masks are with them */
  private held = new Map<string, { seed: Uint8Array<ArrayBuffer>; key: Uint8Array<ArrayBuffer> }>();
  private revealed = false;

  private constructor(
    readonly identity: DeviceIdentity,
    readonly context: string,
    readonly curve: Curve,
    private readonly maskKeys: AgreementKeys,
    private readonly encKeys: AgreementKeys,
    private readonly selfSeed: Uint8Array<ArrayBuffer>,
  ) {}

  /** Step 1: fresh keys and seed for this round, and the signed advert. */
  static async start(identity: DeviceIdentity, context: string, curve: Curve): Promise<{ device: SecAggDevice; advert: KeysAdvert }> {
    const [maskKeys, encKeys] = await Promise.all([createAgreementKeys(curve), createAgreementKeys(curve)]);
    const selfSeed = randomBytes(SEED_BYTES);
    const body = { deviceId: identity.deviceId, curve, maskPublicKey: maskKeys.publicKey, encPublicKey: encKeys.publicKey, seedCommitment: await sha256Hex(selfSeed), keyCommitment: await sha256Hex(maskKeys.privatePkcs8) };
    const signature = await signMessage(identity, advertTranscript(context, body));
    return { device: new SecAggDevice(identity, context, curve, maskKeys, encKeys, selfSeed), advert: { ...body, signature } };
  }

  get id(): string {
    return this.identity.deviceId;
  }

  /** Step 2: checks every neighbour's advert, then seals a t-of-k share of both secrets for each. */
  async share(neighbours: readonly NeighbourKeys[], threshold: number): Promise<SharesMessage> {
    if (this.neighbours.size) throw new Error('secure aggregation: shares were already made this round');
    if (neighbours.length < 2 || threshold < 2 || threshold > neighbours.length || 2 * threshold <= neighbours.length) throw new Error(`secure aggregation: refusing a threshold of ${threshold} among ${neighbours.length} neighbours`);
    for (const n of neighbours) {
      if (n.deviceId === this.id || this.neighbours.has(n.deviceId)) throw new Error(`secure aggregation: ${n.deviceId} is listed twice or is this device`);
      const problem = await verifyAdvert(this.context, n, n.identityKey, this.curve);
      if (problem) throw new Error(`secure aggregation: ${problem}`);
      this.neighbours.set(n.deviceId, n);
    }
    const [seedShares, keyShares] = await Promise.all([split(this.selfSeed, neighbours.length, threshold), split(this.maskKeys.privatePkcs8, neighbours.length, threshold)]);
    const shares = await Promise.all(
      neighbours.map(async (n, i) => {
        const key = await agree(this.curve, this.encKeys.privateKey, n.encPublicKey, pairInfo(this.context, 'shares', this.id, n.deviceId));
        return { peer: n.deviceId, sealed: await seal(key, packShares(seedShares[i]!, keyShares[i]!), sealBinding(this.context, this.id, n.deviceId)) };
      }),
    );
    return { shares, signature: await signMessage(this.identity, sharesTranscript(this.context, this.id, shares)) };
  }

  /** Step 3: opens the shares neighbours sealed for this device; a neighbour without one is out of the round. */
  async receive(incoming: readonly SealedShare[]): Promise<void> {
    if (this.held.size) throw new Error('secure aggregation: shares were already received this round');
    for (const { peer, sealed } of incoming) {
      const n = this.neighbours.get(peer);
      if (!n || this.held.has(peer)) throw new Error(`secure aggregation: a share from ${peer}, which is not a neighbour or sent twice`);
      const key = await agree(this.curve, this.encKeys.privateKey, n.encPublicKey, pairInfo(this.context, 'shares', this.id, peer));
      this.held.set(peer, unpackShares(await open(key, sealed, sealBinding(this.context, peer, this.id))));
    }
  }

  /** the neighbours this device's pairwise masks are with */
  get peers(): string[] {
    return [...this.held.keys()].sort();
  }

  /** Step 4: the input, masked; what the device sends instead of its update. */
  async mask(input: Uint32Array): Promise<{ payload: Uint8Array<ArrayBuffer>; signature: Uint8Array<ArrayBuffer> }> {
    if (!this.held.size) throw new Error('secure aggregation: no shares from neighbours yet');
    const masked = Uint32Array.from(input);
    addInto(masked, await maskStream(this.selfSeed, masked.length));
    for (const peer of this.peers) {
      const seed = await pairMaskSeed(this.context, this.curve, this.maskKeys.privateKey, this.id, peer, this.neighbours.get(peer)!.maskPublicKey);
      addInto(masked, await maskStream(seed, masked.length), pairSign(this.id, peer));
    }
    const payload = new Uint8Array(masked.buffer);
    return { payload, signature: await signMessage(this.identity, inputTranscript(this.context, this.id, payload)) };
  }

  /** Step 5: once, and never both secrets of one neighbour. */
  async reveal(request: UnmaskRequest): Promise<Reveal> {
    if (this.revealed) throw new Error('secure aggregation: this round was already unmasked');
    const both = request.survivors.filter((id) => request.dropped.includes(id));
    if (both.length) throw new Error(`secure aggregation: asked for both secrets of ${both.join(', ')}`);
    for (const id of [...request.survivors, ...request.dropped]) if (!this.held.has(id)) throw new Error(`secure aggregation: ${id} is not a neighbour that shared with this device`);
    this.revealed = true;
    const body = {
      seeds: request.survivors.map((of) => ({ of, share: this.held.get(of)!.seed })),
      keys: request.dropped.map((of) => ({ of, share: this.held.get(of)!.key })),
    };
    return { ...body, signature: await signMessage(this.identity, revealTranscript(this.context, this.id, body)) };
  }
}
