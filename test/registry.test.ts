/**
 * The model registry: each version's record (lineage across runs, what it was trained on as the
 * devices' declared aggregates, the devices' evaluation of it, the admin's metadata), through the
 * federation with a fake clock and through the HTTP API.
 */
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import { modelCard } from '../server/registry.ts';
import { RunConfigError } from '../server/federation.ts';
import { flush, Scenario } from './support/scenario.ts';
import { adminHeaders, startServer, useWasm, type TestServer } from './support/server.ts';
import { encodeWeights } from '../shared/weights.ts';
import { initialWeights } from '../shared/models.ts';

beforeAll(useWasm);

const histogram = (label: number, n: number) => Array.from({ length: 10 }, (_, i) => (i === label ? n : 0));

describe('the registry\'s record of a version', () => {
  it('follows the lineage across a run that starts from a stored version, with the data each round trained on', async () => {
    const s = new Scenario();
    // three devices, each holding one label (declared when they joined)
    for (const [id, label] of [['device-a', 1], ['device-b', 2], ['device-c', 3]] as const) s.federation.join({ deviceId: id, backend: 'wasm', backendReason: 'scenario', examples: 100, heldOut: 20, labelHistogram: histogram(label, 100) });
    const run1 = await s.start({ rounds: 2, clientsPerRound: 2, minUpdates: 2, overSelect: 1, labels: { partition: 'shards' } });
    await flush();
    const round1 = s.port.selected(1);
    for (const id of round1) await s.submit(id);
    const round2 = s.port.selected(2);
    for (const id of round2) {
      const u = s.update(id);
      void s.federation.submitUpdate(id, { ...u, metrics: { ...u.metrics, accuracyBefore: id === round2[0] ? 0.5 : 0.7 } });
      await flush();
    }
    await flush();
    const versions = s.db.listModels().map((m) => m.version);
    const [v0, v1, v2] = versions as [number, number, number];
    expect(s.db.listModels().map((m) => m.parentVersion)).toEqual([null, v0, v1]);

    // a second run fine-tunes v2: its initial version is v2's child, and its weights are v2's
    const run2 = await s.start({ rounds: 1, clientsPerRound: 2, minUpdates: 2, overSelect: 1, initialVersion: v2 });
    await flush();
    const w0 = s.db.listModels().at(-1)!;
    expect(w0).toMatchObject({ runId: run2, round: 0, parentVersion: v2 });
    expect(Array.from(s.db.getModelWeights(w0.version)!)).toEqual(Array.from(s.db.getModelWeights(v2)!));
    for (const id of s.port.selected(1).filter((id) => s.port.lastStart(id)!.runId === run2)) await s.submit(id);
    await flush();
    const w1 = s.db.listModels().at(-1)!.version;

    const card1 = (await modelCard(s.store, v1))!;
    const declared = (ids: readonly string[]) => histogram(0, 0).map((_, i) => ids.reduce((a, id) => a + histogram({ 'device-a': 1, 'device-b': 2, 'device-c': 3 }[id]!, 100)[i]!, 0));
    expect(card1).toMatchObject({ version: v1, runId: run1, round: 1, parentVersion: v0, strategy: 'fedavg', aggregation: 'fedavg', codec: 'float32', labels: { partition: 'shards' }, framework: { name: 'TensorFlow.js' } });
    expect(card1.trainedBy).toEqual({ devices: 2, examples: 200, labelDistribution: declared(round1) });
    // the devices' evaluation of v1 is what round 2's devices measured of it as they began
    expect(card1.federatedEvaluation).toEqual({ round: 2, devices: 2, mean: 0.6, worst10: 0.5, best10: 0.7, variance: expect.closeTo(0.01, 12) });
    expect(card1.children).toEqual([v2]);

    const last = (await modelCard(s.store, w1))!;
    expect(last.lineage.ancestors).toEqual([w0.version, v2, v1, v0]);
    expect(last.lineage).toMatchObject({ rounds: 3, deviceRounds: 6, examples: 600 });
    expect(last.lineage.devices).toBe(new Set([...round1, ...round2, ...s.port.selected(1)]).size);
    expect(last.lineage.labelDistribution!.reduce((a, b) => a + b, 0)).toBe(600);
    expect((await modelCard(s.store, v2))!.children).toEqual([w0.version]);
    expect(await modelCard(s.store, w1 + 1)).toBeUndefined();
  });

  it('refuses to start a run from a version that is not stored, or of another model', async () => {
    const s = new Scenario();
    s.join('device-a', 'device-b');
    await expect(s.start({ rounds: 1, initialVersion: 7 })).rejects.toThrow(RunConfigError);
    await expect(s.start({ rounds: 1, initialVersion: 7 })).rejects.toThrow('initialVersion: model version 7 is not stored');
    const runId = await s.start({ rounds: 1, clientsPerRound: 2, minUpdates: 2, overSelect: 1 });
    s.federation.stopRun();
    await flush();
    const v0 = s.db.listModels().find((m) => m.runId === runId)!.version;
    await expect(s.start({ rounds: 1, model: 'mlp', initialVersion: v0 })).rejects.toThrow(`initialVersion: version ${v0} is a cnn-small, the run trains a mlp`);
  });
});

describe('the registry over HTTP', () => {
  let server: TestServer | undefined;
  afterEach(async () => {
    await server?.close();
    server = undefined;
  });

  it('serves a version\'s record, lets the admin name, describe and label it, and the TF.js download carries it', async () => {
    server = await startServer();
    const weights = encodeWeights(initialWeights('cnn-small', 1));
    const v1 = await server.store.saveModel({ runId: null, round: 0, model: 'cnn-small', weights, parentVersion: null }, 1);
    const v2 = await server.store.saveModel({ runId: null, round: 0, model: 'cnn-small', weights, parentVersion: v1 }, 2);
    const url = (p: string) => `${server!.url}${p}`;
    const patch = (v: number | string, body: unknown, headers: Record<string, string> = adminHeaders) => fetch(url(`/api/models/${v}`), { method: 'PATCH', headers, body: JSON.stringify(body) });

    expect(await (await fetch(url(`/api/models/${v2}`))).json()).toMatchObject({ version: v2, parentVersion: v1, name: null, labels: {}, children: [] });
    expect((await patch(v2, { name: 'x' }, { 'content-type': 'application/json' })).status).toBe(401);
    const bad = await patch(v2, { labels: { 'bad key!': 'x' }, owner: 5, extra: true });
    expect(bad.status).toBe(400);
    const badBody = (await bad.json()) as { error: string; issues: { field: string }[] };
    expect(badBody.issues.map((i) => i.field).sort()).toEqual(['body', 'labels.bad key!', 'owner']);
    expect((await server.store.getModel(v2))!.meta.name).toBeNull(); // nothing half-written

    const ok = await patch(v2, { name: 'digits v2', description: 'fine-tuned', owner: 'ml-team', labels: { stage: 'candidate' } });
    expect(ok.status).toBe(200);
    expect(await ok.json()).toMatchObject({ version: v2, name: 'digits v2', description: 'fine-tuned', owner: 'ml-team', labels: { stage: 'candidate' } });
    // a later edit replaces what it names and keeps the rest; an empty string clears
    await patch(v2, { labels: { stage: 'live' }, description: '' });
    expect((await server.store.getModel(v2))!.meta).toEqual({ name: 'digits v2', description: null, owner: 'ml-team', labels: { stage: 'live' } });
    expect((await patch(999, { name: 'x' })).status).toBe(404);
    expect((await fetch(url('/api/models/999'))).status).toBe(404);

    const list = (await (await fetch(url('/api/models'))).json()) as { version: number; parentVersion: number | null; meta: { name: string | null } }[];
    expect(list.map((m) => [m.version, m.parentVersion, m.meta.name])).toEqual([[v1, null, null], [v2, v1, 'digits v2']]);
    expect(await (await fetch(url(`/api/models/${v1}`))).json()).toMatchObject({ children: [v2] });
    const json = (await (await fetch(url(`/api/models/${v2}/model.json`))).json()) as { userDefinedMetadata: { modelCard: { name: string; labels: Record<string, string> } } };
    expect(json.userDefinedMetadata.modelCard).toMatchObject({ name: 'digits v2', labels: { stage: 'live' } });
  });
});
