/**
 * A device's secure-aggregation round as its transport drives it: the round starts with a signed
 * key advert; each server message (neighbours, shares, unmask request) goes to its handler, which
 * returns the reply to send; `maskedInput` turns the trained update into what is submitted once the
 * neighbours' shares are in. Used by the page, the Node simulation and the tests alike.
 */
import type { DeviceIdentity } from '../identity.ts';
import { createRng } from '../rng.ts';
import { clipToNorm } from '../robust.ts';
import type { Curve } from './crypto.ts';
import { SecAggDevice, type KeysAdvert, type NeighbourKeys, type Reveal, type SealedShare, type SharesMessage, type UnmaskRequest } from './device.ts';
import { roundShape } from './plan.ts';
import { quantizeInput, type QuantBounds } from './quantize.ts';

/** What round:start tells the devices of a secure-aggregation round. */
export interface SecAggRoundPlan {
  context: string;
  curve: Curve;
  /** what the run asks for (0: automatic); the round's k and t follow from how many devices advertised keys */
  neighbours: number;
  threshold: number;
  bounds: QuantBounds;
}

export type SecAggStage = 'keys' | 'shares' | 'masking' | 'unmasking' | 'done';

export class SecAggSession {
  private sharesIn!: (done: true) => void;
  private failedWith: ((err: Error) => void) | undefined;
  private readonly sharesReady: Promise<true>;
  stage: SecAggStage = 'keys';
  /** wall milliseconds this device spent in each step of the protocol (its CPU cost, on a device doing nothing else) */
  readonly spentMs = { keys: 0, shares: 0, mask: 0, reveal: 0 };

  private constructor(
    readonly plan: SecAggRoundPlan,
    private readonly device: SecAggDevice,
    readonly advert: KeysAdvert,
    private readonly onStage?: (stage: SecAggStage) => void,
  ) {
    this.sharesReady = new Promise<true>((resolve, reject) => {
      this.sharesIn = resolve;
      this.failedWith = reject;
    });
    this.sharesReady.catch(() => undefined);
  }

  /** Fresh keys for the round; send `session.advert` to the server. */
  static async begin(identity: DeviceIdentity, plan: SecAggRoundPlan, onStage?: (stage: SecAggStage) => void): Promise<SecAggSession> {
    const t0 = performance.now();
    const { device, advert } = await SecAggDevice.start(identity, plan.context, plan.curve);
    const session = new SecAggSession(plan, device, advert, onStage);
    session.spentMs.keys = performance.now() - t0;
    onStage?.('keys');
    return session;
  }

  private to(stage: SecAggStage): void {
    this.stage = stage;
    this.onStage?.(stage);
  }

  /** The server named this device's neighbours: check them and answer with the sealed shares. */
  async onNeighbours(msg: { neighbours: NeighbourKeys[]; devices: number }): Promise<SharesMessage> {
    const { k, t, problem } = roundShape(this.plan, msg.devices);
    if (problem) throw new Error(`secure aggregation: ${problem}`);
    if (msg.neighbours.length !== k) throw new Error(`secure aggregation: a round of ${msg.devices} devices gives ${k} neighbours, the server named ${msg.neighbours.length}`);
    this.to('shares');
    const t0 = performance.now();
    try {
      return await this.device.share(msg.neighbours, t);
    } catch (err) {
      this.failedWith?.(err as Error);
      throw err;
    } finally {
      this.spentMs.shares += performance.now() - t0;
    }
  }

  /** The shares neighbours sealed for this device arrived: the input can be masked now. */
  async onShares(shares: SealedShare[]): Promise<void> {
    const t0 = performance.now();
    try {
      await this.device.receive(shares);
      this.sharesIn(true);
    } catch (err) {
      this.failedWith?.(err as Error);
      throw err;
    } finally {
      this.spentMs.shares += performance.now() - t0;
    }
  }

  /** Clip, weigh, quantize and mask the update; waits for the neighbours' shares. */
  async maskedInput(delta: Float32Array, numExamples: number, seed: number): Promise<{ payload: Uint8Array<ArrayBuffer>; signature: Uint8Array<ArrayBuffer> }> {
    await this.sharesReady;
    this.to('masking');
    const t0 = performance.now();
    const { bounds } = this.plan;
    const input = quantizeInput(clipToNorm(delta, bounds.clipNorm).delta, Math.min(numExamples, bounds.maxWeight), bounds, createRng(seed));
    const masked = await this.device.mask(input);
    this.spentMs.mask = performance.now() - t0;
    this.to('unmasking');
    return masked;
  }

  /** Settles once the neighbours' shares are in (rejects if the round ended first). */
  async ready(): Promise<void> {
    await this.sharesReady;
  }

  /** The round ended (or the device left): a device still waiting for shares stops waiting. */
  abort(reason: string): void {
    this.failedWith?.(new Error(`secure aggregation: ${reason}`));
  }

  async onUnmask(request: UnmaskRequest): Promise<Reveal> {
    const t0 = performance.now();
    const reveal = await this.device.reveal(request);
    this.spentMs.reveal = performance.now() - t0;
    this.to('done');
    return reveal;
  }
}
