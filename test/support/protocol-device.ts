/**
 * A device that speaks the protocol and nothing more: it proves an identity, joins, and answers
 * each round:start with a fixed, known update (no training), so that what the server stores can
 * be checked against what the devices sent. Given several server URLs, it goes to the next one
 * when its connection drops (a node of a cluster died), as a device behind a load balancer would.
 */
import { io } from 'socket.io-client';
import { createIdentity, type DeviceIdentity } from '../../shared/identity.ts';
import type { Result, RoundStart } from '../../shared/protocol.ts';
import { rebuildModel, type HeldModel } from '../../shared/device.ts';
import { encodeWeights } from '../../shared/weights.ts';
import { joinFederation, type DeviceSocket } from '../../web-client/fl/join.ts';
import { claims } from './server.ts';

export interface SentUpdate {
  runId: number;
  round: number;
  attempt: number;
  delta: Float32Array;
  numExamples: number;
  answer?: Result<{ accepted: true }>;
}

export class ProtocolDevice {
  socket: DeviceSocket | undefined;
  identity: DeviceIdentity | undefined;
  /** which of the URLs it is connected to */
  at: number;
  readonly sent: SentUpdate[] = [];
  readonly starts: RoundStart[] = [];
  /** the global model it holds (it reports the version, so the server may send it deltas) */
  model: HeldModel | undefined;
  /** round starts whose weights were a delta against the model it held */
  deltas = 0;
  /** a hostile device: what it does to its update before sending it (well-formed, selected, lying) */
  tamper: ((delta: Float32Array, msg: RoundStart) => { delta: Float32Array; numExamples?: number }) | undefined;
  /** while held, round starts wait (the update is sent when released) */
  private held: (() => void)[] | undefined;
  private closed = false;
  private moving: Promise<void> | undefined;

  constructor(
    readonly urls: readonly string[],
    first: number,
    /** distinguishes its updates from the others' */
    readonly index: number,
    readonly examples: number,
  ) {
    this.at = first;
  }

  get url(): string {
    return this.urls[this.at]!;
  }

  /** The update it sends in a round: every value distinct per device, round and position. */
  deltaFor(msg: RoundStart, size: number): Float32Array {
    return Float32Array.from({ length: size }, (_, i) => (((i * 31 + this.index * 7 + msg.round) % 17) - 8) * 1e-4);
  }

  async join(): Promise<void> {
    this.identity ??= await createIdentity();
    const socket: DeviceSocket = io(this.url, { transports: ['websocket'], forceNew: true, reconnection: false });
    await new Promise<void>((resolve, reject) => {
      socket.once('connect', () => resolve());
      socket.once('connect_error', reject);
    });
    const r = await joinFederation(socket, this.identity, claims(this.examples));
    if (!r.ok) throw new Error(`join refused: ${r.error.code}: ${r.error.message}`);
    this.socket = socket;
    socket.on('round:start', (msg) => void this.answer(socket, msg));
    socket.once('disconnect', () => {
      if (!this.closed) this.moving = this.moveOn();
    });
  }

  /** Goes to the next URL that answers (its node died). */
  private async moveOn(): Promise<void> {
    for (let tries = 0; tries < 60 && !this.closed; tries++) {
      this.at = (this.at + 1) % this.urls.length;
      try {
        await this.join();
        return;
      } catch {
        await new Promise((r) => setTimeout(r, 250));
      }
    }
  }

  /** settles once it is connected again after a drop */
  async settled(): Promise<void> {
    await this.moving;
  }

  hold(): void {
    this.held ??= [];
  }

  release(): void {
    const waiting = this.held ?? [];
    this.held = undefined;
    for (const go of waiting) go();
  }

  private async answer(socket: DeviceSocket, msg: RoundStart): Promise<void> {
    this.starts.push(msg);
    if (this.held) await new Promise<void>((r) => this.held!.push(r));
    this.model = { version: msg.modelVersion, model: msg.model, weights: rebuildModel(msg, this.model) };
    if (msg.baseVersion !== undefined) this.deltas++;
    socket.emit('device:state', { state: 'training', runId: msg.runId, round: msg.round, attempt: msg.attempt, modelVersion: msg.modelVersion });
    const specs = this.model.weights.specs;
    const honest = this.deltaFor(msg, specs.reduce((n, s) => n + s.shape.reduce((a, b) => a * b, 1), 0));
    const tampered = this.tamper?.(honest, msg);
    const delta = tampered?.delta ?? honest;
    const sent: SentUpdate = { runId: msg.runId, round: msg.round, attempt: msg.attempt, delta, numExamples: tampered?.numExamples ?? this.examples };
    this.sent.push(sent);
    const metrics = { accuracyBefore: 0.1, lossBefore: 2.3, accuracyAfter: 0.2, lossAfter: 2.1, downloadMs: 1, evaluateMs: 1, trainMs: 1 };
    sent.answer = await socket
      .timeout(60_000)
      .emitWithAck('update:submit', { runId: msg.runId, round: msg.round, attempt: msg.attempt, numExamples: sent.numExamples, delta: encodeWeights({ specs, values: delta }), metrics })
      .catch((err: unknown) => ({ ok: false as const, error: { code: 'INTERNAL' as const, message: String(err) } }));
  }

  close(): void {
    this.closed = true;
    this.socket?.disconnect();
  }
}
