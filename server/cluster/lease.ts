/**
 * The leader lease: one Redis key, set only when absent (SET NX PX) and renewed only by its holder
 * (a compare-and-expire script), so at most one node holds it at a time and it passes to another
 * within `ttlMs` of its holder's death. The holder runs the round coordinator.
 */
import type { Redis } from 'ioredis';

const RENEW = `if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('pexpire', KEYS[1], ARGV[2]) else return 0 end`;
const RELEASE = `if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) else return 0 end`;

export interface LeaseEvents {
  acquired(): void;
  /** the lease was lost while held (not renewed in time, or taken): the holder must stop coordinating */
  lost(reason: string): void;
}

export class Lease {
  private held = false;
  private timer: NodeJS.Timeout | undefined;
  private stopped = false;
  /** when the lease as last renewed expires, by this process's clock */
  private expiresAt = 0;

  constructor(
    private readonly redis: Redis,
    private readonly key: string,
    private readonly holder: string,
    readonly ttlMs: number,
    private readonly events: LeaseEvents,
  ) {
    if (!(ttlMs >= 300)) throw new Error(`lease: ttl must be at least 300 ms, got ${ttlMs}`);
  }

  get isHeld(): boolean {
    return this.held;
  }

  /** Who holds it now (undefined: nobody). */
  holderNow(): Promise<string | null> {
    return this.redis.get(this.key);
  }

  start(): void {
    void this.tick();
  }

  private schedule(): void {
    if (!this.stopped) this.timer = setTimeout(() => void this.tick(), Math.floor(this.ttlMs / 4));
  }

  private async tick(): Promise<void> {
    try {
      if (this.held) {
        const renewed = Number(await this.redis.eval(RENEW, 1, this.key, this.holder, String(this.ttlMs)));
        if (this.stopped) return;
        if (renewed === 1) this.expiresAt = Date.now() + this.ttlMs;
        else return this.lose('another node holds the lease (this one did not renew it in time)');
      } else {
        const t0 = Date.now();
        const got = await this.redis.set(this.key, this.holder, 'PX', this.ttlMs, 'NX');
        if (this.stopped) return;
        if (got === 'OK') {
          this.held = true;
          this.expiresAt = t0 + this.ttlMs;
          this.events.acquired();
        }
      }
    } catch (err) {
      // Redis unreachable: a holder that cannot renew must assume it lost the lease once it would have expired
      if (this.held && Date.now() >= this.expiresAt) return this.lose(`Redis unreachable past the lease's expiry (${err instanceof Error ? err.message : String(err)})`);
    }
    this.schedule();
  }

  private lose(reason: string): void {
    this.held = false;
    this.stopped = true;
    this.events.lost(reason);
  }

  /** Stops renewing; a held lease is released at once so another node takes it without waiting. */
  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.timer);
    if (this.held) {
      this.held = false;
      await this.redis.eval(RELEASE, 1, this.key, this.holder).catch(() => undefined);
    }
  }
}
