/**
 * Fault injection for the browser simulation, as GBoard reports them (6–10 % of selected devices
 * drop out): tabs that close mid-round (--drop), and with --rejoin come back (a new page in the
 * same BrowserContext: the same IndexedDB, so the same identity and data). Silent and late devices
 * are the page's own doing (web-client/fl/faults.ts), from the query this module builds.
 */
import type { Page } from '@playwright/test';
import { createRng, hashString } from '../../shared/rng.ts';
import type { Tab } from './harness.ts';

export interface FaultOptions {
  /** probability that a selected tab closes mid-round */
  drop: number;
  /** probability that a selected tab stays connected but never answers the round */
  silent: number;
  /** probability that a selected tab answers after the round's deadline */
  late: number;
  /** dropped tabs come back (after a few seconds) */
  rejoin: boolean;
  seed: number;
}

export const anyFaults = (o: FaultOptions): boolean => o.drop > 0 || o.silent > 0 || o.late > 0;

/** What the pages read to misbehave (silent, late). */
export const faultQuery = (o: FaultOptions): Record<string, string> => (o.silent > 0 || o.late > 0 ? { faultSilent: String(o.silent), faultLate: String(o.late), faultSeed: String(o.seed) } : {});

interface Seen {
  runId: number;
  round: number;
  attempt: number;
}

/** Closes selected tabs mid-round with probability `drop` (decided once per tab and round), and reopens them with --rejoin. */
export class TabDropper {
  readonly dropped: { tab: number; round: number }[] = [];
  readonly rejoined: { tab: number; round: number }[] = [];
  private readonly decided = new Set<string>();
  private readonly reopening = new Set<Promise<void>>();

  constructor(private readonly o: FaultOptions, private readonly tabs: Tab[], private readonly url: (tab: number) => string) {}

  /** Looks at every open tab once; call it while the run goes on. */
  async tick(): Promise<void> {
    if (!(this.o.drop > 0)) return;
    await Promise.all(
      this.tabs.map(async (tab, i) => {
        if (tab.page.isClosed()) return;
        const seen = await tab.page.evaluate(() => window.__fl?.snapshot?.current ?? null).catch(() => null as Seen | null);
        if (!seen) return;
        const key = `${i}:${seen.runId}:${seen.round}:${seen.attempt}`;
        if (this.decided.has(key)) return;
        this.decided.add(key);
        if (createRng(hashString(`${this.o.seed}:drop:${key}`))() >= this.o.drop) return;
        await tab.page.close();
        this.dropped.push({ tab: i, round: seen.round });
        if (this.o.rejoin) this.reopen(i, seen.round);
      }),
    );
  }

  private reopen(i: number, round: number): void {
    const tab = this.tabs[i] as Tab;
    const work = (async () => {
      await new Promise((r) => setTimeout(r, 3_000));
      const page: Page = await tab.context.newPage();
      await page.goto(this.url(i), { timeout: 120_000 });
      await page.waitForFunction(() => window.__fl?.ready && window.__fl.snapshot?.connection === 'connected', undefined, { timeout: 180_000 });
      tab.page = page;
      this.rejoined.push({ tab: i, round });
    })().catch((err: unknown) => {
      process.stderr.write(`tab ${i} could not rejoin: ${String(err)}\n`);
    });
    this.reopening.add(work);
    void work.finally(() => this.reopening.delete(work));
  }

  /** Waits for the tabs being reopened. */
  async settle(): Promise<void> {
    await Promise.all([...this.reopening]);
  }
}
