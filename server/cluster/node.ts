/**
 * A cluster node's device side: what the device sockets of this node talk to (a DeviceGateway).
 * It relays device events to the coordinating node over the bus, and keeps each update its
 * devices send: the payload stays here, is validated here (in this node's work threads) when the
 * coordinator asks, added here to this node's share of the round's sum once accepted, and the
 * share leaves once per round. Model versions are read from the store, once per version.
 */
import type { ModelPublished, Result, RoundStart } from '../../shared/protocol.ts';
import type { DeviceHello, StateReport, UpdateSubmit } from '../../shared/schemas.ts';
import { WeightedDeltaSum } from '../../shared/fedavg.ts';
import { decodeWeights, WeightsFormatError, type TensorSpec } from '../../shared/weights.ts';
import type { DeviceGateway, DevicePort } from '../federation.ts';
import type { SecAggMessage } from '../fl/secagg.ts';
import type { Logger } from '../log.ts';
import { ModelBook, type DeltaEncoder, type Download } from '../model-book.ts';
import type { Store } from '../store/store.ts';
import type { KeptUpdate, ThreadSums } from '../work-pool.ts';
import type { Bus, ToAll, ToNode } from './bus.ts';

/** how long a round's share of the sum waits in Redis for the coordinator to read it */
const PARTIAL_TTL_MS = 120_000;
const SPECS_CACHE = 4;

interface Held {
  deviceId: string;
  /** the update as received, until it is validated */
  payload?: Uint8Array;
  /** validated and kept in the work threads, until it is added or dropped */
  kept?: KeptUpdate;
  answer: (r: Result<{ accepted: true }>) => void;
}

export interface NodeDeps {
  bus: Bus;
  store: Store;
  sums: ThreadSums;
  logger: Logger;
  encodeDelta?: DeltaEncoder;
}

export class ClusterNode implements DeviceGateway {
  readonly counters = { rejectedUpdates: 0, lateUpdates: 0, badMessages: 0 };
  /** the devices connected to this node: their hello is sent again to a new leader */
  private readonly devices = new Map<string, { hello: DeviceHello; key?: string }>();
  private readonly held = new Map<number, Held>();
  private nextId = 1;
  private latest: ModelPublished | null = null;
  private leader: { node: string; url: string; term: string } | undefined;
  private readonly specs = new Map<number, Promise<readonly TensorSpec[]>>();
  private readonly book: ModelBook;
  /** one download per (version, held version), shared by the devices that need it */
  private readonly downloads = new Map<string, Promise<Download>>();
  private readonly log: Logger;
  /** where this node sends what its devices are told (set once the sockets exist) */
  port: DevicePort | undefined;

  constructor(private readonly deps: NodeDeps) {
    this.log = deps.logger.child('cluster-node');
    this.book = new ModelBook(deps.store, this.log, deps.encodeDelta);
  }

  get node(): string {
    return this.deps.bus.node;
  }

  get leaderNow(): { node: string; url: string } | undefined {
    return this.leader;
  }

  async open(): Promise<void> {
    const m = await this.deps.store.latestModel();
    this.latest = m ? { version: m.version, runId: m.runId ?? 0, round: m.round, testAccuracy: m.testAccuracy, testLoss: m.testLoss } : null;
  }

  /** devices connected here, and updates held here */
  stats(): { devices: number; held: number } {
    return { devices: this.devices.size, held: this.held.size };
  }

  // ─── what the device sockets call ────────────────────────────────────────
  join(hello: DeviceHello, identityKey?: Uint8Array): void {
    const key = identityKey ? Buffer.from(identityKey).toString('base64') : undefined;
    this.devices.set(hello.deviceId, { hello, ...(key ? { key } : {}) });
    this.deps.bus.toLeader({ t: 'join', node: this.node, hello, ...(key ? { key } : {}) });
  }

  leave(deviceId: string): void {
    if (!this.devices.delete(deviceId)) return;
    this.deps.bus.toLeader({ t: 'leave', node: this.node, deviceId });
  }

  report(deviceId: string, report: StateReport): void {
    if (this.devices.has(deviceId)) this.deps.bus.toLeader({ t: 'report', node: this.node, deviceId, report });
  }

  latestModel(): ModelPublished | null {
    return this.latest;
  }

  submitUpdate(deviceId: string, msg: UpdateSubmit): Promise<Result<{ accepted: true }>> {
    const id = this.nextId++;
    const { delta, signature: _, ...meta } = msg;
    return new Promise((answer) => {
      this.held.set(id, { deviceId, payload: delta, answer });
      this.deps.bus.toLeader({ t: 'submit', node: this.node, id, deviceId, meta: { ...meta, bytes: delta.byteLength } });
    });
  }

  async secAggMessage(deviceId: string, _ref: { runId: number; round: number; attempt: number }, message: SecAggMessage): Promise<Result<null>> {
    this.counters.badMessages++;
    return { ok: false, error: { code: 'NO_ACTIVE_ROUND', message: `secagg:${message.what} from ${deviceId}: secure aggregation runs on one server node only, not across a cluster` } };
  }

  // ─── what the leader asks ────────────────────────────────────────────────
  handle(m: ToNode): void {
    switch (m.t) {
      case 'validate':
        return void this.validate(m);
      case 'add': {
        const h = this.held.get(m.id);
        if (!h?.kept) return this.log.error('asked to add an update this node does not hold', { id: m.id });
        this.deps.sums.add(h.kept, m.key, m.weight);
        h.kept = undefined;
        return;
      }
      case 'drop': {
        const h = this.held.get(m.id);
        if (h?.kept) this.deps.sums.drop(h.kept);
        if (h) {
          h.kept = undefined;
          h.payload = undefined;
        }
        return;
      }
      case 'answer': {
        const h = this.held.get(m.id);
        if (!h) return;
        this.held.delete(m.id);
        if (h.kept) this.deps.sums.drop(h.kept);
        if (!m.result.ok) this.counters.rejectedUpdates++;
        h.answer(m.result);
        return;
      }
      case 'take':
        return void this.take(m);
      case 'round:start':
        return void this.startRound(m.deviceId, m.msg);
    }
  }

  handleAll(m: ToAll): void {
    if (m.t === 'model') {
      this.latest = m.msg;
      return;
    }
    const changed = this.leader?.term !== m.term;
    this.leader = { node: m.node, url: m.url, term: m.term };
    if (!changed) return;
    // a new coordinator knows nothing of what the old one was doing: updates waiting for a verdict are answered, and devices introduced again
    for (const [id, h] of this.held) {
      if (h.kept) this.deps.sums.drop(h.kept);
      h.answer({ ok: false, error: { code: 'NO_ACTIVE_ROUND', message: 'the coordinating server node changed before this update was counted; the round is redone' } });
      this.held.delete(id);
    }
    for (const { hello, key } of this.devices.values()) this.deps.bus.toLeader({ t: 'join', node: this.node, hello, ...(key ? { key } : {}) });
    this.log.info('coordinator', { leader: m.node, url: m.url, devices: this.devices.size });
  }

  private async validate(m: Extract<ToNode, { t: 'validate' }>): Promise<void> {
    const h = this.held.get(m.id);
    const reply = (r: { ok: true; norm: number; clipped: boolean } | { ok: false; message: string; formatError: boolean }) => this.deps.bus.toLeader({ t: 'validated', node: this.node, req: m.req, ...r });
    if (!h?.payload) return reply({ ok: false, message: `update ${m.id} is not held by node ${this.node}`, formatError: false });
    const payload = h.payload;
    h.payload = undefined;
    try {
      const specs = await this.specsOf(m.version);
      const v = await this.deps.sums.validate(payload, specs, m.config);
      if (this.held.get(m.id) !== h) return this.deps.sums.drop(v.kept); // answered meanwhile
      h.kept = v.kept;
      reply({ ok: true, norm: v.norm, clipped: v.clipped });
    } catch (err) {
      reply({ ok: false, message: err instanceof Error ? err.message : String(err), formatError: err instanceof WeightsFormatError });
    }
  }

  private async take(m: Extract<ToNode, { t: 'take' }>): Promise<void> {
    try {
      const parts = await this.deps.sums.take(m.key, m.size);
      if (m.size === 0) return; // the round ended without aggregation: its share is discarded
      const sum = new WeightedDeltaSum(m.size);
      for (const p of parts) sum.merge(p);
      const p = sum.partial();
      const redisKey = this.deps.bus.names.partial(m.key, this.node, m.req);
      await this.deps.bus.redis.set(redisKey, Buffer.from(p.sum.buffer, p.sum.byteOffset, p.sum.byteLength), 'PX', PARTIAL_TTL_MS);
      this.deps.bus.toLeader({ t: 'partial', node: this.node, req: m.req, ok: true, redisKey, weight: p.weight, updates: p.updates });
    } catch (err) {
      this.deps.bus.toLeader({ t: 'partial', node: this.node, req: m.req, ok: false, message: err instanceof Error ? err.message : String(err) });
    }
  }

  private specsOf(version: number): Promise<readonly TensorSpec[]> {
    // the version its devices were sent is the one it holds (read once, at the round's start)
    if (this.book.current?.version === version) return Promise.resolve(this.book.current.weights.specs);
    let p = this.specs.get(version);
    if (!p) {
      p = this.deps.store.getModelWeights(version).then((w) => {
        if (!w) throw new Error(`model v${version} is not stored`);
        return decodeWeights(w).specs;
      });
      this.specs.set(version, p);
      p.catch(() => this.specs.delete(version));
      while (this.specs.size > SPECS_CACHE) this.specs.delete(this.specs.keys().next().value as number);
    }
    return p;
  }

  private async startRound(deviceId: string, msg: Omit<RoundStart, 'weights'>): Promise<void> {
    try {
      const held = msg.baseVersion ?? null;
      const key = `${msg.modelVersion}:${held}`;
      let download = this.downloads.get(key);
      if (!download) {
        download = (async () => {
          if (this.book.current?.version !== msg.modelVersion && !(await this.book.load(msg.modelVersion, msg.model, { optimizer: false }))) throw new Error(`model v${msg.modelVersion} is not stored`);
          return this.book.download(held);
        })();
        // a version's downloads are kept while it is the newest (a round's devices share them)
        for (const k of this.downloads.keys()) if (!k.startsWith(`${msg.modelVersion}:`)) this.downloads.delete(k);
        this.downloads.set(key, download);
        download.catch(() => this.downloads.delete(key));
      }
      const d = await download;
      const { baseVersion: _, ...rest } = msg;
      this.port?.sendRoundStart(deviceId, d.baseVersion === undefined ? { ...rest, weights: d.weights } : { ...rest, weights: d.weights, baseVersion: d.baseVersion, ...(d.baseSeed !== undefined ? { baseSeed: d.baseSeed } : {}) });
    } catch (err) {
      this.log.error('could not start a round for a device of this node', { deviceId, error: err instanceof Error ? err.message : String(err) });
    }
  }
}
