/**
 * Device identity with WebCrypto — the same code in the browser and in Node ≥ 20. A device makes an
 * ECDSA P-256 key pair whose private key cannot be exported (the browser keeps the CryptoKey in
 * IndexedDB), and its id is derived from the public key: nobody can claim an id without the key.
 * Each connection proves the key by signing a fresh challenge from the server; the signed bytes
 * name their purpose, so a signature made for anything else is refused.
 */

const KEY_ALGORITHM = { name: 'ECDSA', namedCurve: 'P-256' } as const;
const SIGNATURE_ALGORITHM = { name: 'ECDSA', hash: 'SHA-256' } as const;
/** bytes of the server's challenge */
export const CHALLENGE_BYTES = 32;
const HELLO_CONTEXT = 'fedbrowser/device-hello/v1';

export interface DeviceIdentity {
  deviceId: string;
  /** raw P-256 public key (65 bytes, uncompressed point) */
  publicKey: Uint8Array<ArrayBuffer>;
  keys: CryptoKeyPair;
}

const subtle = (): SubtleCrypto => {
  const s = globalThis.crypto?.subtle;
  if (!s) throw new Error('identity: WebCrypto is not available (a secure context is required)');
  return s;
};

function base64url(bytes: Uint8Array): string {
  let binary = '';
  for (const b of bytes) binary += String.fromCharCode(b);
  return btoa(binary).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
}

/** The id of the device holding this public key: "dev-" and 132 bits of its SHA-256, base64url. */
export async function deviceIdOf(publicKey: Uint8Array<ArrayBuffer>): Promise<string> {
  const digest = new Uint8Array(await subtle().digest('SHA-256', publicKey));
  return `dev-${base64url(digest).slice(0, 22)}`;
}

/** A new key pair: the private key is not extractable, so it can sign but never leave its store. */
export async function createKeys(): Promise<CryptoKeyPair> {
  return subtle().generateKey(KEY_ALGORITHM, false, ['sign', 'verify']);
}

export async function identityOf(keys: CryptoKeyPair): Promise<DeviceIdentity> {
  const publicKey = new Uint8Array(await subtle().exportKey('raw', keys.publicKey));
  return { deviceId: await deviceIdOf(publicKey), publicKey, keys };
}

export const createIdentity = async (): Promise<DeviceIdentity> => identityOf(await createKeys());

/** What a device signs to join: the purpose, the server's challenge and the id it claims. */
function helloMessage(challenge: Uint8Array, deviceId: string): Uint8Array<ArrayBuffer> {
  const text = new TextEncoder().encode(`${HELLO_CONTEXT}\n${deviceId}\n`);
  const out = new Uint8Array(text.length + challenge.length);
  out.set(text);
  out.set(challenge, text.length);
  return out;
}

export async function signHello(identity: DeviceIdentity, challenge: Uint8Array): Promise<Uint8Array<ArrayBuffer>> {
  return new Uint8Array(await subtle().sign(SIGNATURE_ALGORITHM, identity.keys.privateKey, helloMessage(challenge, identity.deviceId)));
}

/**
 * Checks that `deviceId` derives from `publicKey` and that `signature` signs this connection's
 * challenge with it. Returns the reason it does not, or undefined when the proof holds.
 */
export async function verifyHello(deviceId: string, publicKey: Uint8Array<ArrayBuffer>, signature: Uint8Array<ArrayBuffer>, challenge: Uint8Array): Promise<string | undefined> {
  if ((await deviceIdOf(publicKey)) !== deviceId) return `the id ${deviceId} does not belong to the public key presented`;
  let key: CryptoKey;
  try {
    key = await subtle().importKey('raw', publicKey, KEY_ALGORITHM, false, ['verify']);
  } catch {
    return 'the public key is not a valid P-256 point';
  }
  const ok = await subtle().verify(SIGNATURE_ALGORITHM, key, signature, helloMessage(challenge, deviceId));
  return ok ? undefined : 'the signature does not match the challenge of this connection';
}

/**
 * Length-prefixed concatenation of a message's parts: the bytes a device signs for a protocol
 * message, so no two different messages sign the same bytes.
 */
export function transcript(context: string, parts: readonly (string | number | Uint8Array)[]): Uint8Array<ArrayBuffer> {
  const encoded = [context, ...parts].map((p) => (p instanceof Uint8Array ? p : new TextEncoder().encode(String(p))));
  const out = new Uint8Array(encoded.reduce((n, p) => n + 4 + p.length, 0));
  const view = new DataView(out.buffer);
  let at = 0;
  for (const p of encoded) {
    view.setUint32(at, p.length);
    out.set(p, at + 4);
    at += 4 + p.length;
  }
  return out;
}

/** Signs a protocol message (its `transcript`) with the device's identity key. */
export async function signMessage(identity: DeviceIdentity, message: Uint8Array<ArrayBuffer>): Promise<Uint8Array<ArrayBuffer>> {
  return new Uint8Array(await subtle().sign(SIGNATURE_ALGORITHM, identity.keys.privateKey, message));
}

/** Whether `signature` signs `message` under this raw P-256 identity key. */
export async function verifyMessage(publicKey: Uint8Array<ArrayBuffer>, signature: Uint8Array<ArrayBuffer>, message: Uint8Array<ArrayBuffer>): Promise<boolean> {
  try {
    const key = await subtle().importKey('raw', publicKey, KEY_ALGORITHM, false, ['verify']);
    return await subtle().verify(SIGNATURE_ALGORITHM, key, signature, message);
  } catch {
    return false;
  }
}
