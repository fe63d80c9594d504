/**
 * The device's own data, in IndexedDB (through `idb`): one database per tab (tab.ts), holding its
 * identity, its slice — a few chunked Uint8 records (one record per sample is ~25x slower to
 * write) plus one metadata record — and what it keeps between rounds.
 */
import { openDB, type DBSchema, type IDBPDatabase } from 'idb';
import { PIXELS, type DeviceDataset, type Samples } from '../../shared/dataset.ts';
import type { DeviceMemory } from '../../shared/device.ts';
import { createKeys, identityOf, type DeviceIdentity } from '../../shared/identity.ts';
import type { ModelName } from '../../shared/models-names.ts';
import { labelHistogram } from '../../shared/partition.ts';
import type { TensorSpec } from '../../shared/weights.ts';

export const DB_VERSION = 3;

let dbName: string | undefined;
/** Chooses this tab's database; must be called before anything else here. */
export function useDatabase(name: string): void {
  if (dbName !== undefined && dbName !== name) throw new Error(`local data: already using ${dbName}`);
  dbName = name;
}
const CHUNK_SAMPLES = 1000;

/** What identifies a provisioned slice; a different spec means re-provisioning. */
export interface SliceSpec {
  partition: string;
  clients: number;
  client: number;
  examples: number;
  seed: number;
  alpha: number;
  /** corruptions asked of the provisioning endpoint (`?corrupt=labels:0.5`), to try the data-quality checks */
  corrupt?: string;
}

export interface DatasetMeta {
  spec: SliceSpec;
  trainCount: number;
  heldOutCount: number;
  histogram: number[];
  chunks: { split: 'train' | 'heldOut'; index: number; count: number }[];
  storedAt: number;
}

interface DeviceDB extends DBSchema {
  meta: { key: string; value: DatasetMeta };
  chunks: { key: string; value: { pixels: Uint8Array; labels: Uint8Array } };
  kv: { key: string; value: string };
  /** the device's key pair; the private key is not extractable, so it never leaves this store */
  identity: { key: string; value: CryptoKeyPair };
  /** the held global model ('model'), the personal one ('personal'), the update codec's error-feedback residual ('residual') and SCAFFOLD's control variate ('control') */
  state: { key: string; value: StoredModel | StoredKeyed };
}

interface StoredModel {
  version: number;
  model: ModelName;
  specs: TensorSpec[];
  values: Float32Array;
}

/** a vector kept for one run at a time: the codec's residual, the control variate */
interface StoredKeyed {
  key: string;
  values: Float32Array;
}

async function loadKeyed(slot: 'residual' | 'control', key: string): Promise<Float32Array | undefined> {
  const r = (await (await db()).get('state', slot)) as StoredKeyed | undefined;
  return r && r.key === key && r.values instanceof Float32Array ? r.values : undefined;
}

async function saveKeyed(slot: 'residual' | 'control', key: string, values: Float32Array | undefined): Promise<void> {
  const database = await db();
  if (!values) await database.delete('state', slot);
  else await database.put('state', { key, values } satisfies StoredKeyed, slot);
}

let dbPromise: Promise<IDBPDatabase<DeviceDB>> | undefined;
function db(): Promise<IDBPDatabase<DeviceDB>> {
  if (dbName === undefined) throw new Error('local data: no database chosen (useDatabase)');
  dbPromise ??= openDB<DeviceDB>(dbName, DB_VERSION, {
    upgrade(database, oldVersion) {
      if (oldVersion < 1) {
        database.createObjectStore('meta');
        database.createObjectStore('chunks');
        database.createObjectStore('kv');
      }
      if (oldVersion < 2) database.createObjectStore('state');
      if (oldVersion < 3) database.createObjectStore('identity');
    },
  });
  return dbPromise;
}

const chunkKey = (split: string, index: number) => `${split}:${index}`;

export const sameSpec = (a: SliceSpec, b: SliceSpec) => a.partition === b.partition && a.clients === b.clients && a.client === b.client && a.examples === b.examples && a.seed === b.seed && a.alpha === b.alpha && (a.corrupt ?? '') === (b.corrupt ?? '');

export async function readMeta(): Promise<DatasetMeta | undefined> {
  return (await db()).get('meta', 'dataset');
}

export async function saveDataset(spec: SliceSpec, data: DeviceDataset): Promise<DatasetMeta> {
  const database = await db();
  const tx = database.transaction(['meta', 'chunks'], 'readwrite');
  await tx.objectStore('chunks').clear();
  const chunks: DatasetMeta['chunks'] = [];
  for (const split of ['train', 'heldOut'] as const) {
    const s = data[split];
    const n = s.labels.length;
    for (let index = 0, start = 0; start < n; index++, start += CHUNK_SAMPLES) {
      const end = Math.min(n, start + CHUNK_SAMPLES);
      await tx.objectStore('chunks').put({ pixels: s.pixels.slice(start * PIXELS, end * PIXELS), labels: s.labels.slice(start, end) }, chunkKey(split, index));
      chunks.push({ split, index, count: end - start });
    }
  }
  const meta: DatasetMeta = { spec, trainCount: data.train.labels.length, heldOutCount: data.heldOut.labels.length, histogram: labelHistogram(data.train.labels), chunks, storedAt: Date.now() };
  await tx.objectStore('meta').put(meta, 'dataset');
  await tx.done;
  return meta;
}

export async function loadDataset(meta: DatasetMeta): Promise<DeviceDataset> {
  const database = await db();
  const read = async (split: 'train' | 'heldOut', count: number): Promise<Samples> => {
    const pixels = new Uint8Array(count * PIXELS);
    const labels = new Uint8Array(count);
    let offset = 0;
    for (const c of meta.chunks.filter((x) => x.split === split)) {
      const chunk = await database.get('chunks', chunkKey(split, c.index));
      if (!chunk || chunk.labels.length !== c.count) throw new Error(`local data: chunk ${split}:${c.index} is missing or damaged`);
      pixels.set(chunk.pixels, offset * PIXELS);
      labels.set(chunk.labels, offset);
      offset += c.count;
    }
    if (offset !== count) throw new Error(`local data: expected ${count} ${split} samples, found ${offset}`);
    return { pixels, labels };
  };
  return { train: await read('train', meta.trainCount), heldOut: await read('heldOut', meta.heldOutCount) };
}

export async function clearDataset(): Promise<void> {
  const database = await db();
  const tx = database.transaction(['meta', 'chunks', 'state'], 'readwrite');
  await Promise.all([tx.objectStore('meta').clear(), tx.objectStore('chunks').clear(), tx.objectStore('state').clear(), tx.done]);
}

/**
 * This device's identity, kept across reloads and reconnections: a key pair made once with
 * WebCrypto (the private key cannot be exported) and the id derived from its public key.
 */
export async function deviceIdentity(): Promise<DeviceIdentity> {
  const database = await db();
  let keys = await database.get('identity', 'keys');
  if (!keys) {
    keys = await createKeys();
    await database.put('identity', keys, 'keys');
  }
  return identityOf(keys);
}

/**
 * Fetches the slice from the provisioning endpoint (once), or reads it back from IndexedDB. A
 * different slice replaces the stored one, and with it the model and residual kept for it.
 */
export async function ensureDataset(spec: SliceSpec, fetchSlice: (spec: SliceSpec) => Promise<DeviceDataset>): Promise<{ meta: DatasetMeta; data: DeviceDataset; source: 'indexeddb' | 'provisioned' }> {
  const meta = await readMeta();
  if (meta && sameSpec(meta.spec, spec)) return { meta, data: await loadDataset(meta), source: 'indexeddb' };
  const data = await fetchSlice(spec);
  if (meta) await (await db()).clear('state');
  return { meta: await saveDataset(spec, data), data, source: 'provisioned' };
}

/**
 * The device's memory between rounds, in IndexedDB: the held global model (so a reload can still
 * receive deltas), the error-feedback residual of the current run (so what a topk codec has not
 * sent yet survives a reload) and its SCAFFOLD control variate.
 */
export const indexedDbMemory: DeviceMemory = {
  async loadModel() {
    const m = (await (await db()).get('state', 'model')) as StoredModel | undefined;
    return m && m.values instanceof Float32Array ? { version: m.version, model: m.model, weights: { specs: m.specs, values: m.values } } : undefined;
  },
  async saveModel(m) {
    const database = await db();
    if (!m) await database.delete('state', 'model');
    else await database.put('state', { version: m.version, model: m.model, specs: m.weights.specs, values: m.weights.values } satisfies StoredModel, 'model');
  },
  async savePersonal(m) {
    await (await db()).put('state', { version: m.version, model: m.model, specs: m.weights.specs, values: m.weights.values } satisfies StoredModel, 'personal');
  },
  loadResidual: (key) => loadKeyed('residual', key),
  saveResidual: (key, values) => saveKeyed('residual', key, values),
  loadControl: (key) => loadKeyed('control', key),
  saveControl: (key, values) => saveKeyed('control', key, values),
};
