/** A token bucket per connection: `burst` events at once, refilled at `perSecond`. */
export interface RateLimit {
  perSecond: number;
  burst: number;
}

export class TokenBucket {
  private tokens: number;
  private last: number;
  constructor(private readonly limit: RateLimit, private readonly now: () => number = () => Date.now()) {
    this.tokens = limit.burst;
    this.last = now();
  }
  /** takes one token; false when the caller is over its rate */
  take(): boolean {
    const t = this.now();
    this.tokens = Math.min(this.limit.burst, this.tokens + ((t - this.last) / 1000) * this.limit.perSecond);
    this.last = t;
    if (this.tokens < 1) return false;
    this.tokens -= 1;
    return true;
  }
}
