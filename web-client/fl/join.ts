/**
 * How a device joins over socket.io: it asks for the connection's challenge, signs it with its
 * identity key, and sends its hello with its public key and the signature. The browser's device
 * client, the Node load test and the tests' raw devices all join through this.
 */
import type { Socket } from 'socket.io-client';
import { signHello, type DeviceIdentity } from '../../shared/identity.ts';
import type { ClientToServerEvents, ModelPublished, Result, ServerToClientEvents } from '../../shared/protocol.ts';
import type { DeviceHello } from '../../shared/schemas.ts';
import { hasX25519 } from '../../shared/secagg/crypto.ts';

let x25519: Promise<boolean> | undefined;

export type DeviceSocket = Socket<ServerToClientEvents, ClientToServerEvents>;

/** The device's claims at hello; its id comes from the identity. */
export type HelloClaims = Omit<DeviceHello, 'deviceId'>;

export async function joinFederation(socket: DeviceSocket, identity: DeviceIdentity, claims: HelloClaims): Promise<Result<{ deviceId: string; globalModel: ModelPublished | null }>> {
  const issued = await socket.emitWithAck('device:challenge');
  if (!issued.ok) return issued;
  const signature = await signHello(identity, new Uint8Array(issued.data.challenge));
  // whether this runtime can take part in an X25519 secure round (else the round uses P-256)
  const curves = claims.x25519 === undefined ? { x25519: await (x25519 ??= hasX25519()) } : {};
  return socket.emitWithAck('device:hello', { ...claims, ...curves, deviceId: identity.deviceId, publicKey: identity.publicKey, signature });
}
