/**
 * The messages the nodes of a cluster exchange over Redis pub/sub, and the bus that carries them.
 * All of them are small: device events and verdicts, requests and replies. What is large never
 * travels here — model versions are read from the store, once per version and node; a round's
 * share of the sum goes through one Redis key per node (written once, read once, deleted).
 */
import { Redis } from 'ioredis';
import type { ModelPublished, Result, RoundStart } from '../../shared/protocol.ts';
import type { DeviceHello, RunConfig, StateReport, UpdateSubmit } from '../../shared/schemas.ts';

/** From any node to the coordinating one (the leader). */
export type ToLeader =
  | { t: 'join'; node: string; hello: DeviceHello; key?: string }
  | { t: 'leave'; node: string; deviceId: string }
  | { t: 'report'; node: string; deviceId: string; report: StateReport }
  | { t: 'submit'; node: string; id: number; deviceId: string; meta: Omit<UpdateSubmit, 'delta' | 'signature'> & { bytes: number } }
  | { t: 'validated'; node: string; req: number; ok: true; norm: number; clipped: boolean }
  | { t: 'validated'; node: string; req: number; ok: false; message: string; formatError: boolean }
  | { t: 'partial'; node: string; req: number; ok: true; redisKey: string; weight: number; updates: number }
  | { t: 'partial'; node: string; req: number; ok: false; message: string };

/** From the leader to one node. */
export type ToNode =
  | { t: 'validate'; req: number; id: number; version: number; config: RunConfig }
  | { t: 'add'; id: number; key: string; weight: number }
  | { t: 'drop'; id: number }
  | { t: 'take'; req: number; key: string; size: number }
  | { t: 'answer'; id: number; result: Result<{ accepted: true }> }
  /** a round's start for a device of the node: everything but the weights, which the node reads from the store */
  | { t: 'round:start'; deviceId: string; msg: Omit<RoundStart, 'weights'> };

/** From the leader to every node. */
/** `term`: new at every acquisition of the lease, so a node restarted under the same id is a new coordinator too */
export type ToAll = { t: 'leader'; node: string; url: string; term: string } | { t: 'model'; msg: ModelPublished };

type Envelope = { to: 'leader'; m: ToLeader } | { to: 'node'; m: ToNode } | { to: 'all'; m: ToAll };

export interface BusHandlers {
  leader?(m: ToLeader): void;
  node(m: ToNode): void;
  all(m: ToAll): void;
}

/** Channel and key names of one cluster (`prefix`: several clusters may share a Redis). */
export class Names {
  constructor(readonly prefix: string) {}
  leaderChannel = () => `${this.prefix}:to-leader`;
  nodeChannel = (node: string) => `${this.prefix}:to-node:${node}`;
  allChannel = () => `${this.prefix}:to-all`;
  lease = () => `${this.prefix}:lease`;
  /** the coordinator's announcement, for nodes that start after it */
  leaderInfo = () => `${this.prefix}:leader-info`;
  alive = (node: string) => `${this.prefix}:alive:${node}`;
  aliveScan = () => `${this.prefix}:alive:*`;
  partial = (key: string, node: string, req: number) => `${this.prefix}:partial:${key}:${node}:${req}`;
  /** socket.io's Redis adapter channels */
  adapter = () => `${this.prefix}:socket.io`;
}

export class Bus {
  /** commands and publishing */
  readonly redis: Redis;
  private readonly sub: Redis;
  private leading = false;
  private handlers: BusHandlers | undefined;

  constructor(
    url: string,
    readonly node: string,
    readonly names: Names,
    private readonly onError: (err: Error) => void,
  ) {
    this.redis = new Redis(url, { maxRetriesPerRequest: 2, enableAutoPipelining: true });
    this.sub = new Redis(url, { maxRetriesPerRequest: 2 });
    for (const r of [this.redis, this.sub]) r.on('error', (err: Error) => this.onError(err));
    this.sub.on('messageBuffer', (_channel: Buffer, raw: Buffer) => this.receive(raw));
  }

  /** Subscribes: messages go to `handlers` from now on. */
  async open(handlers: BusHandlers): Promise<void> {
    this.handlers = handlers;
    await this.sub.subscribe(this.names.nodeChannel(this.node), this.names.allChannel());
  }

  /** Starts (or stops) taking the messages meant for the leader. */
  async lead(on: boolean): Promise<void> {
    if (on === this.leading) return;
    this.leading = on;
    if (on) await this.sub.subscribe(this.names.leaderChannel());
    else await this.sub.unsubscribe(this.names.leaderChannel());
  }

  toLeader(m: ToLeader): void {
    this.publish(this.names.leaderChannel(), { to: 'leader', m });
  }

  toNode(node: string, m: ToNode): void {
    this.publish(this.names.nodeChannel(node), { to: 'node', m });
  }

  toAll(m: ToAll): void {
    this.publish(this.names.allChannel(), { to: 'all', m });
  }

  private publish(channel: string, e: Envelope): void {
    this.redis.publish(channel, JSON.stringify(e)).catch((err: unknown) => this.onError(err instanceof Error ? err : new Error(String(err))));
  }

  private receive(raw: Buffer): void {
    let e: Envelope;
    try {
      e = JSON.parse(raw.toString('utf8')) as Envelope;
    } catch {
      return this.onError(new Error('cluster bus: a message that is not JSON'));
    }
    const h = this.handlers;
    if (!h) return;
    try {
      if (e.to === 'leader') {
        if (this.leading) h.leader?.(e.m);
      } else if (e.to === 'node') h.node(e.m);
      else h.all(e.m);
    } catch (err) {
      this.onError(err instanceof Error ? err : new Error(String(err)));
    }
  }

  async close(): Promise<void> {
    this.sub.disconnect();
    await this.redis.quit().catch(() => this.redis.disconnect());
  }
}
