/**
 * Data quality on devices: each corruption of a real MNIST slice is caught by its score while clean
 * slices of every partition pass the default rules; the provisioning endpoint corrupts on request;
 * a run leaves out — or only flags — a device whose scores fail its rules.
 */
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import { loadMnist } from '../server/data/mnist.ts';
import { corruptSamples, parseCorruptions, qualityFlags, qualityOf, referenceOf, type Corruption } from '../shared/data-quality.ts';
import { decodeDataset, gatherSamples } from '../shared/dataset.ts';
import { deviceSlice, labelHistogram, partition } from '../shared/partition.ts';
import { dataQualityRulesSchema } from '../shared/schemas.ts';
import { flush, Scenario } from './support/scenario.ts';
import { startServer, useWasm, type TestServer } from './support/server.ts';

beforeAll(useWasm);
const { train } = loadMnist();
const reference = referenceOf({ pixels: train.images, labels: train.labels });
const rules = dataQualityRulesSchema.parse({});
const slice = (kind: 'iid' | 'shards' | 'dirichlet', client: number) => {
  const parts = partition(train.labels, { kind, clients: 20, seed: 1, alpha: 0.5 });
  return gatherSamples(train.images, train.labels, deviceSlice(parts[client]!, { examples: 600, heldOut: 0, seed: 1, client }).train);
};

describe('the data-quality scores', () => {
  it('pass every clean slice of every partition under the default rules', () => {
    for (const kind of ['iid', 'shards', 'dirichlet'] as const) {
      for (let c = 0; c < 20; c++) {
        const q = qualityOf(slice(kind, c), { reference });
        expect(qualityFlags(rules, q), `${kind} slice ${c}: ${JSON.stringify(q)}`).toEqual([]);
      }
    }
  });

  for (const [corruption, score] of [['labels:0.5', 'coherence'], ['noise:0.5', 'conformity'], ['duplicates:0.5', 'uniqueness'], ['blank:0.3', 'completeness']] as const) {
    it(`catches ${corruption} by its ${score}`, () => {
      const clean = slice('iid', 3);
      const bad = corruptSamples(clean, parseCorruptions(corruption) as Corruption[], 7);
      const q = qualityOf(bad, { reference });
      expect(qualityFlags(rules, q).map((f) => f.split(' ')[0])).toContain(score);
      expect(q[score]!).toBeLessThan(qualityOf(clean, { reference })[score]!);
    });
  }

  it('measures integrity against a population and leaves it unmeasured without one', () => {
    const s = slice('shards', 0);
    const population = labelHistogram(train.labels);
    expect(qualityOf(s, { reference }).integrity).toBeNull();
    expect(qualityOf(s, { reference, population }).integrity!).toBeLessThan(0.5); // two labels of ten
    expect(qualityOf(slice('iid', 0), { reference, population }).integrity!).toBeGreaterThan(0.9);
    expect(qualityOf({ pixels: new Uint8Array(0), labels: new Uint8Array(0) })).toMatchObject({ examples: 0, conformity: 0 });
  });

  it('reads corruptions strictly and applies them the same way for the same seed', () => {
    expect(parseCorruptions('labels:0.5, blank:0.1')).toEqual([{ kind: 'labels', fraction: 0.5 }, { kind: 'blank', fraction: 0.1 }]);
    expect(parseCorruptions('rotate:0.5')).toMatch(/unknown corruption "rotate"/);
    expect(parseCorruptions('labels:2')).toMatch(/fraction must be in \(0, 1\]/);
    expect(parseCorruptions('blank:0.1,blank:0.2')).toMatch(/named twice/);
    const s = slice('iid', 1);
    const a = corruptSamples(s, [{ kind: 'labels', fraction: 0.5 }], 3);
    expect(Array.from(a.labels)).toEqual(Array.from(corruptSamples(s, [{ kind: 'labels', fraction: 0.5 }], 3).labels));
    const changed = a.labels.filter((l, i) => l !== s.labels[i]).length;
    expect(changed).toBe(300); // exactly half get another label
    expect(Array.from(s.labels.slice(0, 5))).toEqual(Array.from(slice('iid', 1).labels.slice(0, 5))); // the input is untouched
  });
});

describe('provisioning corrupts a slice on request', () => {
  let server: TestServer | undefined;
  afterEach(async () => {
    await server?.close();
    server = undefined;
  });

  it('corrupts the training examples only, the same each time, and refuses what it cannot read', async () => {
    server = await startServer();
    const get = async (q: string) => decodeDataset(new Uint8Array(await (await fetch(`${server!.url}/api/data/slice?clients=4&client=1&examples=300${q}`)).arrayBuffer()));
    const clean = await get('');
    const bad = await get('&corrupt=labels:0.5,blank:0.2');
    expect(Array.from(bad.heldOut.labels)).toEqual(Array.from(clean.heldOut.labels));
    expect(bad.train.labels.filter((l, i) => l !== clean.train.labels[i]).length).toBeGreaterThan(0);
    expect(Array.from((await get('&corrupt=labels:0.5,blank:0.2')).train.pixels)).toEqual(Array.from(bad.train.pixels));
    expect(qualityOf(bad.train, { reference: (await (await fetch(`${server.url}/api/data/reference`)).json()) as typeof reference }).completeness).toBeLessThan(0.9);
    const refused = await fetch(`${server.url}/api/data/slice?corrupt=rotate:1`);
    expect(refused.status).toBe(400);
    expect(((await refused.json()) as { error: string }).error).toContain('unknown corruption "rotate"');
  });
});

describe('a run\'s data-quality rules', () => {
  const join = (s: Scenario, id: string, coherence: number) =>
    s.federation.join({ deviceId: id, backend: 'wasm', backendReason: 'scenario', examples: 100, heldOut: 20, labelHistogram: new Array(10).fill(10), quality: { conformity: 1, uniqueness: 1, completeness: 1, coherence } });

  for (const action of ['exclude', 'flag'] as const) {
    it(`${action === 'exclude' ? 'leaves a device whose scores fail out of selection' : 'only flags such a device'}, and the dashboard's list says why`, async () => {
      const s = new Scenario();
      join(s, 'device-a', 0.8);
      join(s, 'device-b', 0.8);
      join(s, 'device-flipped', 0.4);
      await s.start({ rounds: 1, clientsPerRound: 3, minUpdates: 2, overSelect: 1, selectionTimeoutMs: 5_000, dataQuality: { action } });
      await flush();
      const listed = s.federation.listDevices().find((d) => d.id === 'device-flipped')!;
      expect(listed).toMatchObject({ qualityFlags: ['coherence 0.40 < 0.55'], qualityAction: action, quality: { coherence: 0.4, integrity: expect.closeTo(1, 12) } });
      if (action === 'exclude') {
        expect(s.port.selected(1)).toEqual([]); // two eligible devices of the three wanted: selection waits
        expect(s.federation.status().waiting).toContain('have 2 (1 left out by the data-quality rules)');
        await s.clock.advance(5_000);
        expect(s.port.selected(1).sort()).toEqual(['device-a', 'device-b']);
      } else {
        expect(s.port.selected(1)).toHaveLength(3);
      }
    });
  }
});
