/**
 * The cryptography of secure aggregation, on WebCrypto only, so that the browser and Node compute
 * the same bytes: key agreement (X25519, or P-256 where a browser lacks it), HKDF-SHA-256, AES-GCM
 * for the shares sent through the server, and an AES-256-CTR keystream as the mask generator (its
 * seed is a full 256-bit key, never a short integer).
 */

export const CURVES = ['X25519', 'P-256'] as const;
export type Curve = (typeof CURVES)[number];

/** bytes of every seed and derived key */
export const SEED_BYTES = 32;
const GCM_IV_BYTES = 12;

type Bytes = Uint8Array<ArrayBuffer>;

const subtle = (): SubtleCrypto => {
  const s = globalThis.crypto?.subtle;
  if (!s) throw new Error('secure aggregation: WebCrypto is not available (a secure context is required)');
  return s;
};

const algorithm = (curve: Curve): EcKeyImportParams | Algorithm => (curve === 'X25519' ? { name: 'X25519' } : { name: 'ECDH', namedCurve: 'P-256' });

export const randomBytes = (n: number): Bytes => crypto.getRandomValues(new Uint8Array(n));

/** Whether this runtime's WebCrypto does X25519 (Chromium and Node 20 do; some browsers do not yet). */
export async function hasX25519(): Promise<boolean> {
  try {
    await subtle().generateKey({ name: 'X25519' }, true, ['deriveBits']);
    return true;
  } catch {
    return false;
  }
}

/** An agreement key pair: the public key raw, the private key as PKCS#8 bytes (it is secret-shared). */
export interface AgreementKeys {
  curve: Curve;
  publicKey: Bytes;
  privateKey: CryptoKey;
  /** PKCS#8 of the private key: what a device Shamir-shares so that its masks can be removed if it drops */
  privatePkcs8: Bytes;
}

export async function createAgreementKeys(curve: Curve): Promise<AgreementKeys> {
  const pair = (await subtle().generateKey(algorithm(curve), true, ['deriveBits'])) as CryptoKeyPair;
  return {
    curve,
    publicKey: new Uint8Array(await subtle().exportKey('raw', pair.publicKey)),
    privateKey: pair.privateKey,
    privatePkcs8: new Uint8Array(await subtle().exportKey('pkcs8', pair.privateKey)),
  };
}

export const importPrivateKey = async (curve: Curve, pkcs8: Bytes): Promise<CryptoKey> => subtle().importKey('pkcs8', pkcs8, algorithm(curve), false, ['deriveBits']);

/** The public key's expected raw length: refuse anything else before WebCrypto sees it. */
export const publicKeyBytes = (curve: Curve): number => (curve === 'X25519' ? 32 : 65);

/**
 * A 32-byte key that only the two holders of these key pairs can compute: HKDF-SHA-256 of their
 * ECDH secret, bound to a purpose and to the round (`info`), so a key for one use or round is
 * useless for any other.
 */
export async function agree(curve: Curve, privateKey: CryptoKey, peerPublicKey: Bytes, info: string): Promise<Bytes> {
  if (peerPublicKey.byteLength !== publicKeyBytes(curve)) throw new Error(`secure aggregation: a ${curve} public key has ${publicKeyBytes(curve)} bytes, got ${peerPublicKey.byteLength}`);
  const peer = await subtle().importKey('raw', peerPublicKey, algorithm(curve), false, []);
  const shared = await subtle().deriveBits({ name: curve === 'X25519' ? 'X25519' : 'ECDH', public: peer } as EcdhKeyDeriveParams, privateKey, 256);
  return hkdf(new Uint8Array(shared), info);
}

async function hkdf(secret: Bytes, info: string): Promise<Bytes> {
  const key = await subtle().importKey('raw', secret, 'HKDF', false, ['deriveBits']);
  const salt = new Uint8Array(SEED_BYTES);
  return new Uint8Array(await subtle().deriveBits({ name: 'HKDF', hash: 'SHA-256', salt, info: new TextEncoder().encode(info) }, key, SEED_BYTES * 8));
}

/** AES-256-GCM with a fresh IV (prepended); `aad` binds the ciphertext to its sender, receiver and round. */
export async function seal(key: Bytes, plaintext: Bytes, aad: string): Promise<Bytes> {
  const k = await subtle().importKey('raw', key, 'AES-GCM', false, ['encrypt']);
  const iv = randomBytes(GCM_IV_BYTES);
  const body = new Uint8Array(await subtle().encrypt({ name: 'AES-GCM', iv, additionalData: new TextEncoder().encode(aad) }, k, plaintext));
  const out = new Uint8Array(iv.length + body.length);
  out.set(iv);
  out.set(body, iv.length);
  return out;
}

/** Opens what `seal` made; throws when the key, the bytes or the binding do not match. */
export async function open(key: Bytes, sealed: Uint8Array, aad: string): Promise<Bytes> {
  if (sealed.byteLength < GCM_IV_BYTES + 16) throw new Error('secure aggregation: a sealed share is too short');
  const k = await subtle().importKey('raw', key, 'AES-GCM', false, ['decrypt']);
  const bytes = new Uint8Array(sealed);
  return new Uint8Array(await subtle().decrypt({ name: 'AES-GCM', iv: bytes.subarray(0, GCM_IV_BYTES), additionalData: new TextEncoder().encode(aad) }, k, bytes.subarray(GCM_IV_BYTES)));
}

/**
 * The mask generator: `length` uint32 words of the AES-256-CTR keystream under `seed` (counter
 * from zero). Identical in every WebCrypto; a 256-bit seed, so masks cannot be guessed.
 */
export async function maskStream(seed: Bytes, length: number): Promise<Uint32Array> {
  if (seed.byteLength !== SEED_BYTES) throw new Error(`secure aggregation: a mask seed has ${SEED_BYTES} bytes, got ${seed.byteLength}`);
  const key = await subtle().importKey('raw', seed, 'AES-CTR', false, ['encrypt']);
  const stream = await subtle().encrypt({ name: 'AES-CTR', counter: new Uint8Array(16), length: 64 }, key, new Uint8Array(length * 4));
  return new Uint32Array(stream);
}

/** SHA-256, hex: commitments to secrets, so a wrong reconstruction is caught. */
export async function sha256Hex(bytes: Uint8Array<ArrayBuffer>): Promise<string> {
  const digest = new Uint8Array(await subtle().digest('SHA-256', bytes));
  return Array.from(digest, (b) => b.toString(16).padStart(2, '0')).join('');
}
