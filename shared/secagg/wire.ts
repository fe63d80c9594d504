/**
 * Secure-aggregation messages on the wire. Their byte fields (keys, signatures, sealed shares) go
 * as base64 text: a neighbourhood's message holds dozens of them, and socket.io refuses a message
 * with more than 10 binary attachments (its parser's guard against attachment floods).
 */
import type { KeysAdvert, NeighbourKeys, Reveal, RevealedShare, SealedShare } from './device.ts';

export function toBase64(bytes: Uint8Array): string {
  let binary = '';
  for (let i = 0; i < bytes.length; i += 0x8000) binary += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  return btoa(binary);
}

/** Decodes base64 text; throws on anything else. */
export function fromBase64(text: string): Uint8Array<ArrayBuffer> {
  if (!/^[A-Za-z0-9+/]*={0,2}$/.test(text) || text.length % 4 !== 0) throw new Error('not base64');
  const binary = atob(text);
  const out = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i++) out[i] = binary.charCodeAt(i);
  return out;
}

type Wire<T> = { [K in keyof T]: T[K] extends Uint8Array ? string : T[K] };

export type KeysAdvertWire = Wire<Omit<KeysAdvert, 'deviceId'>>;
export type NeighbourKeysWire = Wire<NeighbourKeys>;
export type SealedShareWire = Wire<SealedShare>;
export type RevealedShareWire = Wire<RevealedShare>;

export const advertToWire = (a: Omit<KeysAdvert, 'deviceId'>): KeysAdvertWire => ({ curve: a.curve, maskPublicKey: toBase64(a.maskPublicKey), encPublicKey: toBase64(a.encPublicKey), seedCommitment: a.seedCommitment, keyCommitment: a.keyCommitment, signature: toBase64(a.signature) });
export const neighbourToWire = (n: NeighbourKeys): NeighbourKeysWire => ({ ...advertToWire(n), deviceId: n.deviceId, identityKey: toBase64(n.identityKey) });
export const neighbourFromWire = (n: NeighbourKeysWire): NeighbourKeys => ({ deviceId: n.deviceId, curve: n.curve, maskPublicKey: fromBase64(n.maskPublicKey), encPublicKey: fromBase64(n.encPublicKey), seedCommitment: n.seedCommitment, keyCommitment: n.keyCommitment, signature: fromBase64(n.signature), identityKey: fromBase64(n.identityKey) });
export const sharesToWire = (shares: readonly SealedShare[]): SealedShareWire[] => shares.map((s) => ({ peer: s.peer, sealed: toBase64(s.sealed) }));
export const sharesFromWire = (shares: readonly SealedShareWire[]): SealedShare[] => shares.map((s) => ({ peer: s.peer, sealed: fromBase64(s.sealed) }));
export const revealToWire = (r: Reveal): { seeds: RevealedShareWire[]; keys: RevealedShareWire[]; signature: string } => ({
  seeds: r.seeds.map((s) => ({ of: s.of, share: toBase64(s.share) })),
  keys: r.keys.map((s) => ({ of: s.of, share: toBase64(s.share) })),
  signature: toBase64(r.signature),
});
