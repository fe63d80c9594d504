/**
 * The coordinating node's view of a cluster: the federation's device port and its remote updates
 * (federation.ts) over the bus. Device events from every node reach the federation as if its
 * devices were local; its verdicts go back to the node that holds each update; small messages to
 * devices go through socket.io's Redis adapter (a room per device); a round's start goes to the
 * device's node without its weights, which that node reads from the store. It also watches the
 * nodes' heartbeats: a node whose heartbeat expired is lost with its devices and its share of
 * the round's sum (Federation.nodeLost).
 */
import { randomUUID } from 'node:crypto';
import type { Server } from 'socket.io';
import type { PartialSum } from '../../shared/fedavg.ts';
import type { ModelPublished, RoundEnd, RoundStart, ServerToClientEvents } from '../../shared/protocol.ts';
import type { RunConfig } from '../../shared/schemas.ts';
import { WeightsFormatError } from '../../shared/weights.ts';
import type { DevicePort, Federation, RemoteRef, RemoteUpdates } from '../federation.ts';
import type { Logger } from '../log.ts';
import { deviceRoom } from '../transport/socket.ts';
import type { Bus, ToLeader } from './bus.ts';

/** a node's answer to a request, at most this late (a lost node's requests fail sooner, when its heartbeat expires) */
const REQUEST_TIMEOUT_MS = 120_000;

interface Pending {
  node: string;
  resolve: (m: Extract<ToLeader, { t: 'validated' | 'partial' }>) => void;
  reject: (err: Error) => void;
  timer: NodeJS.Timeout;
}

export class LeaderLink implements DevicePort, RemoteUpdates {
  /** each node makes its devices' downloads from the store (ClusterNode.startRound) */
  readonly downloadsElsewhere = true;
  federation: Federation | undefined;
  io: Server | undefined;
  private readonly deviceNode = new Map<string, string>();
  private readonly nodes = new Set<string>();
  private readonly pending = new Map<number, Pending>();
  private nextReq = 1;
  private watch: NodeJS.Timeout | undefined;
  private readonly log: Logger;

  constructor(
    private readonly bus: Bus,
    logger: Logger,
    private readonly heartbeatMs: number,
  ) {
    this.log = logger.child('cluster-leader');
  }

  /** Starts coordinating: takes the nodes' messages and watches their heartbeats. */
  async lead(federation: Federation, url: string): Promise<void> {
    this.federation = federation;
    await this.bus.lead(true);
    const announcement = { t: 'leader' as const, node: this.bus.node, url, term: randomUUID() };
    await this.bus.redis.set(this.bus.names.leaderInfo(), JSON.stringify(announcement));
    this.bus.toAll(announcement);
    this.watch = setInterval(() => void this.checkNodes(), this.heartbeatMs);
  }

  stop(): void {
    clearInterval(this.watch);
    for (const p of this.pending.values()) clearTimeout(p.timer);
  }

  /** nodes with devices or updates, and how many devices each */
  view(): Record<string, number> {
    const out: Record<string, number> = {};
    for (const n of this.nodes) out[n] = 0;
    for (const n of this.deviceNode.values()) out[n] = (out[n] ?? 0) + 1;
    return out;
  }

  handle(m: ToLeader): void {
    const f = this.federation;
    if (!f) return;
    this.nodes.add(m.node);
    switch (m.t) {
      case 'join': {
        const previous = this.deviceNode.get(m.hello.deviceId);
        this.deviceNode.set(m.hello.deviceId, m.node);
        // the same device came back through another node (its node died, or a reconnect): the old connection is gone
        if (previous !== undefined && previous !== m.node) f.leave(m.hello.deviceId);
        return f.join(m.hello, m.key ? Buffer.from(m.key, 'base64') : undefined);
      }
      case 'leave':
        if (this.deviceNode.get(m.deviceId) !== m.node) return; // it has joined through another node since
        this.deviceNode.delete(m.deviceId);
        return f.leave(m.deviceId);
      case 'report':
        if (this.deviceNode.get(m.deviceId) === m.node) f.report(m.deviceId, m.report);
        return;
      case 'submit':
        if (this.deviceNode.get(m.deviceId) !== m.node) {
          return this.bus.toNode(m.node, { t: 'answer', id: m.id, result: { ok: false, error: { code: 'NOT_JOINED', message: `update:submit from ${m.deviceId}: the device is not known through node ${m.node}` } } });
        }
        return f.submitRemoteUpdate(m.deviceId, m.meta, { node: m.node, id: m.id }, (result) => this.bus.toNode(m.node, { t: 'answer', id: m.id, result }));
      case 'validated':
      case 'partial': {
        const p = this.pending.get(m.req);
        if (!p || p.node !== m.node) return;
        this.pending.delete(m.req);
        clearTimeout(p.timer);
        return p.resolve(m);
      }
    }
  }

  private request(node: string, send: (req: number) => void): Promise<Extract<ToLeader, { t: 'validated' | 'partial' }>> {
    const req = this.nextReq++;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(req);
        reject(new Error(`node ${node} did not answer within ${REQUEST_TIMEOUT_MS / 1000} s`));
      }, REQUEST_TIMEOUT_MS);
      this.pending.set(req, { node, resolve, reject, timer });
      send(req);
    });
  }

  // ─── RemoteUpdates ───────────────────────────────────────────────────────
  async validate(ref: RemoteRef, version: number, config: RunConfig): Promise<{ norm: number; clipped: boolean }> {
    const r = await this.request(ref.node, (req) => this.bus.toNode(ref.node, { t: 'validate', req, id: ref.id, version, config }));
    if (r.t !== 'validated') throw new Error('cluster: a reply of the wrong kind');
    if (!r.ok) throw r.formatError ? new WeightsFormatError(r.message) : new Error(r.message);
    return { norm: r.norm, clipped: r.clipped };
  }

  add(ref: RemoteRef, key: string, weight: number): void {
    this.bus.toNode(ref.node, { t: 'add', id: ref.id, key, weight });
  }

  drop(ref: RemoteRef): void {
    this.bus.toNode(ref.node, { t: 'drop', id: ref.id });
  }

  async take(key: string, counted: ReadonlyMap<string, number>, size: number): Promise<PartialSum[]> {
    const nodes = [...counted.keys()];
    if (size === 0) {
      for (const node of nodes) this.bus.toNode(node, { t: 'take', req: 0, key, size: 0 });
      return [];
    }
    // each node's share arrives through one Redis key: O(nodes × model) here, read once and deleted
    return Promise.all(
      nodes.map(async (node) => {
        const r = await this.request(node, (req) => this.bus.toNode(node, { t: 'take', req, key, size }));
        if (r.t !== 'partial') throw new Error('cluster: a reply of the wrong kind');
        if (!r.ok) throw new Error(`node ${node} could not hand over its share of the sum: ${r.message}`);
        // pub/sub delivers at most once: a lost add must fail the round, not leave a counted update out of the sum
        if (r.updates !== counted.get(node)) throw new Error(`node ${node}'s share of the sum holds ${r.updates} updates, ${counted.get(node)} were counted from it`);
        const raw = await this.bus.redis.getBuffer(r.redisKey);
        await this.bus.redis.del(r.redisKey);
        if (!raw || raw.byteLength !== size * 8) throw new Error(`node ${node}'s share of the sum is missing or has the wrong size`);
        const sum = new Float64Array(size);
        new Uint8Array(sum.buffer).set(raw);
        return { sum, weight: r.weight, updates: r.updates };
      }),
    );
  }

  // ─── DevicePort ──────────────────────────────────────────────────────────
  sendRoundStart(deviceId: string, msg: RoundStart): void {
    const node = this.deviceNode.get(deviceId);
    if (!node) return;
    const { weights: _, ...rest } = msg;
    this.bus.toNode(node, { t: 'round:start', deviceId, msg: rest });
  }

  sendRoundEnd(deviceId: string, msg: RoundEnd): void {
    this.io?.to(deviceRoom(deviceId)).emit('round:end', msg);
  }

  broadcastModel(msg: ModelPublished): void {
    this.io?.emit('model:published', msg);
    this.bus.toAll({ t: 'model', msg });
  }

  sendSecAgg<E extends 'secagg:neighbours' | 'secagg:shares' | 'secagg:unmask'>(deviceId: string, event: E, msg: Parameters<ServerToClientEvents[E]>[0]): void {
    (this.io?.to(deviceRoom(deviceId)) as unknown as { emit(e: string, m: unknown): void } | undefined)?.emit(event, msg);
  }

  // ─── liveness ────────────────────────────────────────────────────────────
  private async checkNodes(): Promise<void> {
    const f = this.federation;
    if (!f) return;
    for (const node of [...this.nodes]) {
      let alive: number;
      try {
        alive = await this.bus.redis.exists(this.bus.names.alive(node));
      } catch {
        return; // Redis unreachable: nothing can be concluded about the nodes (the lease decides about this one)
      }
      if (alive || !this.nodes.has(node)) continue;
      this.nodes.delete(node);
      const devices = [...this.deviceNode].filter(([, n]) => n === node).map(([id]) => id);
      for (const id of devices) this.deviceNode.delete(id);
      for (const [req, p] of this.pending) {
        if (p.node !== node) continue;
        this.pending.delete(req);
        clearTimeout(p.timer);
        p.reject(new Error(`server node ${node} is gone`));
      }
      this.log.warn('a server node is gone', { node, devices: devices.length });
      f.nodeLost(node, devices);
    }
  }
}
