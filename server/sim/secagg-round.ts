/**
 * One secure-aggregation round driven in memory, with the real device and server code and no
 * sockets: what the server would receive is kept, devices can drop out at any stage, and the CPU
 * time of each stage is measured on each side (the tests and `npm run bench` use it).
 */
import { createIdentity, type DeviceIdentity } from '../../shared/identity.ts';
import type { Curve } from '../../shared/secagg/crypto.ts';
import { SecAggDevice, type KeysAdvert, type NeighbourKeys, type Reveal, type SharesMessage } from '../../shared/secagg/device.ts';
import { ringNeighbours, roundContext, roundShape } from '../../shared/secagg/plan.ts';
import { addInto } from '../../shared/secagg/quantize.ts';
import { createRng, shuffleInPlace } from '../../shared/rng.ts';
import { unmask, unmaskRequest, verifyAdvert, verifyInput, verifyReveal, verifyShares } from '../fl/secagg.ts';

export type Stage = 'keys' | 'shares' | 'input' | 'reveal';

export interface Captured {
  adverts: KeysAdvert[];
  shares: SharesMessage[];
  inputs: { deviceId: string; payload: Uint8Array }[];
  reveals: Reveal[];
}

/** CPU milliseconds spent in each stage, summed over the devices (client) and on the server */
export interface StageTimes {
  client: { keys: number; shares: number; mask: number; reveal: number };
  server: { keys: number; shares: number; inputs: number; unmask: number };
}

export const identities = (n: number): Promise<DeviceIdentity[]> => Promise.all(Array.from({ length: n }, () => createIdentity()));

/**
 * Runs a round over `inputs` (one per identity); `dropAt` names the stage at which a device stops
 * answering (it does that stage's step no more). Returns the unmasked sum and every byte the server saw.
 */
export async function secAggRound(ids: DeviceIdentity[], inputs: Uint32Array[], opts: { dropAt?: Record<string, Stage>; neighbours?: number; threshold?: number; curve?: Curve; runId?: number; round?: number } = {}) {
  const context = roundContext(opts.runId ?? 1, opts.round ?? 1, 1);
  const curve = opts.curve ?? 'X25519';
  const drops = opts.dropAt ?? {};
  const alive = (id: string, stage: Stage) => drops[id] !== stage && !(['keys', 'shares', 'input', 'reveal'] as Stage[]).slice(0, ['keys', 'shares', 'input', 'reveal'].indexOf(stage)).some((s) => drops[id] === s);
  const captured: Captured = { adverts: [], shares: [], inputs: [], reveals: [] };
  const cpu: StageTimes = { client: { keys: 0, shares: 0, mask: 0, reveal: 0 }, server: { keys: 0, shares: 0, inputs: 0, unmask: 0 } };
  const timed = async <T>(side: 'client' | 'server', stage: string, work: () => Promise<T>): Promise<T> => {
    const t0 = performance.now();
    try {
      return await work();
    } finally {
      (cpu[side] as Record<string, number>)[stage]! += performance.now() - t0;
    }
  };
  const identityKey = new Map(ids.map((i) => [i.deviceId, i.publicKey]));
  const devices = new Map<string, SecAggDevice>();
  const adverts = new Map<string, NeighbourKeys>();
  for (const identity of ids) {
    if (!alive(identity.deviceId, 'keys')) continue;
    const { device, advert } = await timed('client', 'keys', () => SecAggDevice.start(identity, context, curve));
    captured.adverts.push(advert);
    const problem = await timed('server', 'keys', () => verifyAdvert(context, advert, identity.publicKey, curve));
    if (problem) throw new Error(problem);
    devices.set(identity.deviceId, device);
    adverts.set(identity.deviceId, { ...advert, identityKey: identity.publicKey });
  }
  const shape = roundShape({ neighbours: opts.neighbours ?? 0, threshold: opts.threshold ?? 0 }, adverts.size);
  if (shape.problem) throw new Error(shape.problem);
  const neighbours = ringNeighbours([...adverts.keys()], shape.k, (xs) => shuffleInPlace(xs, createRng(7)));
  const outbox = new Map<string, { from: string; sealed: Uint8Array<ArrayBuffer> }[]>();
  const shared = new Set<string>();
  for (const [id, device] of devices) {
    if (!alive(id, 'shares')) continue;
    const msg = await timed('client', 'shares', () => device.share(neighbours.get(id)!.map((n) => adverts.get(n)!), shape.t));
    captured.shares.push(msg);
    const problem = await timed('server', 'shares', () => verifyShares(context, id, identityKey.get(id)!, msg, neighbours.get(id)!));
    if (problem) throw new Error(problem);
    shared.add(id);
    for (const s of msg.shares) outbox.set(s.peer, [...(outbox.get(s.peer) ?? []), { from: id, sealed: s.sealed }]);
  }
  for (const id of shared) await timed('client', 'shares', () => devices.get(id)!.receive((outbox.get(id) ?? []).filter((s) => shared.has(s.from)).map((s) => ({ peer: s.from, sealed: s.sealed }))));
  const sum = new Uint32Array(inputs[0]!.length);
  const withInput = new Set<string>();
  for (const [i, identity] of ids.entries()) {
    const id = identity.deviceId;
    if (!shared.has(id) || !alive(id, 'input')) continue;
    const { payload, signature } = await timed('client', 'mask', () => devices.get(id)!.mask(inputs[i]!));
    captured.inputs.push({ deviceId: id, payload });
    const problem = await timed('server', 'inputs', () => verifyInput(context, id, identity.publicKey, payload, signature, sum.length));
    if (problem) throw new Error(problem);
    await timed('server', 'inputs', async () => addInto(sum, new Uint32Array(payload.buffer)));
    withInput.add(id);
  }
  const reveals = new Map<string, Reveal>();
  for (const id of withInput) {
    if (!alive(id, 'reveal')) continue;
    const asked = unmaskRequest(id, Object.fromEntries(neighbours), shared, withInput);
    const reveal = await timed('client', 'reveal', () => devices.get(id)!.reveal(asked));
    captured.reveals.push(reveal);
    const problem = await timed('server', 'unmask', () => verifyReveal(context, id, identityKey.get(id)!, reveal, asked));
    if (problem) throw new Error(problem);
    reveals.set(id, reveal);
  }
  const result = await timed('server', 'unmask', () => unmask({ context, curve, threshold: shape.t, adverts, neighbours, shared, inputs: withInput, reveals, sum }));
  return { sum: result, masked: sum, captured, counted: withInput, shape, neighbours, devices, adverts, context, cpu };
}

/** Pearson's χ² of a byte histogram against uniform bytes (255 degrees of freedom): ~255 for random bytes. */
export function chiSquareOfBytes(bytes: Uint8Array): number {
  const counts = new Array<number>(256).fill(0);
  for (const b of bytes) counts[b]!++;
  const expected = bytes.length / 256;
  return counts.reduce((a, c) => a + (c - expected) ** 2 / expected, 0);
}
