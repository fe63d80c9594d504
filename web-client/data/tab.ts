/**
 * One tab, one device. Each tab holds a slot, kept in sessionStorage so that a reload of the tab
 * keeps it (and with it the tab's own IndexedDB database: its identity, data and held model),
 * while every other tab has its own. A tab that the browser duplicated (which copies
 * sessionStorage) finds its slot taken by the original over a BroadcastChannel, and takes a new
 * one. Databases of tabs not seen for a week are deleted.
 */

const SLOT_KEY = 'fl-tab-slot';
const SEEN_KEY = 'fl-tab-slots';
const CHANNEL = 'fl-tabs';
const ASK_MS = 150;
const FORGET_AFTER_MS = 7 * 24 * 3600_000;

export const databaseOf = (slot: string): string => `fl-device-${slot}`;

const newSlot = (): string => crypto.randomUUID().replace(/-/g, '').slice(0, 12);

/** Asks the other tabs whether `slot` is theirs; true when one answers within a moment. */
function taken(channel: BroadcastChannel, slot: string): Promise<boolean> {
  return new Promise((resolve) => {
    const nonce = newSlot();
    const onMessage = (e: MessageEvent<{ type: string; slot: string; nonce: string }>) => {
      if (e.data.type === 'taken' && e.data.slot === slot && e.data.nonce === nonce) {
        channel.removeEventListener('message', onMessage);
        resolve(true);
      }
    };
    channel.addEventListener('message', onMessage);
    channel.postMessage({ type: 'ask', slot, nonce });
    setTimeout(() => {
      channel.removeEventListener('message', onMessage);
      resolve(false);
    }, ASK_MS);
  });
}

/** This tab's slot (its device), and from then on answers other tabs that ask for the same one. */
export async function tabSlot(): Promise<string> {
  const channel = new BroadcastChannel(CHANNEL);
  let slot = sessionStorage.getItem(SLOT_KEY);
  if (!slot || (await taken(channel, slot))) {
    slot = newSlot();
    sessionStorage.setItem(SLOT_KEY, slot);
  }
  const mine = slot;
  channel.addEventListener('message', (e: MessageEvent<{ type: string; slot: string; nonce: string }>) => {
    if (e.data.type === 'ask' && e.data.slot === mine) channel.postMessage({ type: 'taken', slot: mine, nonce: e.data.nonce });
  });
  forgetOldTabs(mine);
  return mine;
}

/** Marks this tab's slot as seen now, and deletes the databases of slots not seen for a week. */
function forgetOldTabs(slot: string): void {
  const now = Date.now();
  let seen: Record<string, number> = {};
  try {
    seen = JSON.parse(localStorage.getItem(SEEN_KEY) ?? '{}') as Record<string, number>;
  } catch {
    seen = {};
  }
  seen[slot] = now;
  for (const [other, at] of Object.entries(seen)) {
    if (now - at > FORGET_AFTER_MS) {
      indexedDB.deleteDatabase(databaseOf(other));
      delete seen[other];
    }
  }
  localStorage.setItem(SEEN_KEY, JSON.stringify(seen));
}

/** What the tab joined with, so a reload rejoins with the same slice. */
export interface TabJoin<T> {
  spec: T;
  joined: boolean;
}

const JOIN_KEY = 'fl-tab-join';

export function loadTabJoin<T>(): TabJoin<T> | undefined {
  try {
    const raw = sessionStorage.getItem(JOIN_KEY);
    return raw ? (JSON.parse(raw) as TabJoin<T>) : undefined;
  } catch {
    return undefined;
  }
}

export function saveTabJoin<T>(join: TabJoin<T>): void {
  sessionStorage.setItem(JOIN_KEY, JSON.stringify(join));
}
