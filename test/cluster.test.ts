/**
 * Three server nodes as processes of their own on a real Redis and a real PostgreSQL
 * (scripts/lib/cluster.ts), and protocol-speaking devices spread over them. A run completes with
 * the aggregate one process makes of the same updates; `kill -9` of a node that holds updates
 * loses those updates and nothing else (never counted, never half-summed); `kill -9` of the
 * coordinating node hands the lease to another, which resumes the run.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { RoundRecord } from '../shared/api.ts';
import { decodeWeights } from '../shared/weights.ts';
import { startLocalCluster, type LocalCluster } from '../scripts/lib/cluster.ts';
import { openPostgresStore } from '../server/store/postgres.ts';
import type { Store } from '../server/store/store.ts';
import { ProtocolDevice, type SentUpdate } from './support/protocol-device.ts';
import { until } from './support/server.ts';

const LEASE_MS = 2000;
const HEARTBEAT_MS = 300;

let cluster: LocalCluster;
let store: Store;
let devices: ProtocolDevice[] = [];

const headers = () => ({ authorization: `Bearer ${cluster.token}`, 'content-type': 'application/json' });
const urls = () => cluster.nodes.map((n) => n.url);
const get = async <T>(url: string) => (await (await fetch(url, { headers: headers() })).json()) as T;

interface ClusterView {
  node: string;
  coordinator: string | null;
  devicesByNode?: Record<string, number>;
}

async function coordinator(): Promise<{ id: string; url: string }> {
  for (const n of cluster.nodes) {
    if (n.process.exitCode !== null || n.process.signalCode !== null) continue;
    const v = await get<ClusterView>(`${n.url}/api/cluster`);
    const c = cluster.nodes.find((x) => x.id === v.coordinator);
    if (c) return { id: c.id, url: c.url };
  }
  throw new Error('no node coordinates');
}

/** Launches a run through `via` (any node: the API redirects to the coordinating one). */
async function launch(via: string, config: Record<string, unknown>): Promise<number> {
  const res = await fetch(`${via}/api/runs`, { method: 'POST', headers: headers(), body: JSON.stringify({ model: 'cnn-small', overSelect: 1, ...config }) });
  const body = (await res.json()) as { id?: number; error?: string };
  if (res.status !== 201 || body.id === undefined) throw new Error(`launch failed (${res.status}): ${body.error}`);
  return body.id;
}

const runEnded = (runId: number, timeoutMs = 90_000) =>
  until(async () => {
    const r = await store.getRun(runId);
    return r && r.status !== 'running' ? r : undefined;
  }, timeoutMs, `run ${runId} to end`);

/** What one process makes of these updates: w + Σ w_k Δ_k / Σ w_k, summed in float64. */
function expectedModel(previous: Float32Array, updates: readonly SentUpdate[], maxExamples: number): Float32Array {
  const sum = new Float64Array(previous.length);
  let weight = 0;
  for (const u of updates) {
    const w = Math.min(u.numExamples, maxExamples);
    for (let i = 0; i < sum.length; i++) sum[i]! += w * u.delta[i]!;
    weight += w;
  }
  return previous.map((v, i) => v + sum[i]! / weight);
}

async function modelOf(version: number): Promise<Float32Array> {
  return decodeWeights((await store.getModelWeights(version))!).values;
}

function maxDiff(a: Float32Array, b: Float32Array): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!));
  return m;
}

async function connectDevices(n: number): Promise<ProtocolDevice[]> {
  const made = Array.from({ length: n }, (_, i) => new ProtocolDevice(urls(), i % cluster.nodes.length, devices.length + i, 100 + 20 * (devices.length + i)));
  for (const d of made) await d.join();
  devices.push(...made);
  return made;
}

beforeAll(async () => {
  // CLUSTER_ECHO=1 shows the nodes' logs
  cluster = await startLocalCluster({ nodes: 3, env: { LEASE_MS: String(LEASE_MS), HEARTBEAT_MS: String(HEARTBEAT_MS) }, echo: process.env.CLUSTER_ECHO === '1' });
  store = await openPostgresStore(cluster.databaseUrl, { maxConnections: 2 });
}, 180_000);

afterAll(async () => {
  for (const d of devices) d.close();
  await store?.close();
  await cluster?.stop();
}, 60_000);

describe('a cluster of three nodes on Redis and PostgreSQL', () => {
  it('runs FedAvg over devices on every node and stores the aggregate one process makes of the same updates', async () => {
    const group = await connectDevices(6);
    const leader = await coordinator();
    expect(leader.id).toBe('node-1');
    // every node holds two of the devices, and the coordinator knows them all
    await until(async () => {
      const v = await get<ClusterView>(`${leader.url}/api/cluster`);
      return Object.values(v.devicesByNode ?? {}).join() === '2,2,2' || undefined;
    }, 10_000, 'the coordinator to know every device');
    // started through a node that does not coordinate: redirected
    const runId = await launch(cluster.nodes[2]!.url, { rounds: 2, clientsPerRound: 6, minUpdates: 6, roundTimeoutMs: 60_000, maxExamplesPerDevice: 200 });
    expect(await runEnded(runId)).toMatchObject({ status: 'done' });
    const rounds = (await store.listRounds(runId)).filter((r) => r.status === 'completed');
    expect(rounds.map((r) => [r.round, r.completed])).toEqual([[1, 6], [2, 6]]);
    let previous = await modelOf((await store.listModels()).find((m) => m.runId === runId && m.round === 0)!.version);
    for (const r of rounds) {
      const sent = group.flatMap((d) => d.sent.filter((s) => s.runId === runId && s.round === r.round));
      expect(sent).toHaveLength(6);
      expect(sent.every((s) => s.answer?.ok)).toBe(true);
      const stored = await modelOf(r.modelVersion!);
      // one device claims 200 examples and is weighed at the cap; the others at what they claim
      expect(maxDiff(stored, expectedModel(previous, sent, 200))).toBeLessThan(1e-6);
      previous = stored;
    }
    // round 2's model reached each device as a delta against the version it held, made by its own node from the store
    expect(group.map((d) => d.deltas)).toEqual([1, 1, 1, 1, 1, 1]);
  }, 120_000);

  it('refuses hostile updates from selected devices on other nodes, at the node that holds them, and sums the rest exactly', async () => {
    const leader = await coordinator();
    const elsewhere = devices.filter((d) => d.url !== leader.url);
    const [nan, liar] = elsewhere as [ProtocolDevice, ProtocolDevice];
    // one sends a value that is not a number; the other claims more examples than it declared
    nan.tamper = (delta) => ({ delta: Float32Array.from(delta, (v, i) => (i === 7 ? Number.NaN : v)) });
    liar.tamper = (delta) => ({ delta, numExamples: 60_000 });
    try {
      const runId = await launch(leader.url, { rounds: 1, clientsPerRound: 6, minUpdates: 3, roundTimeoutMs: 60_000 });
      expect(await runEnded(runId)).toMatchObject({ status: 'done' });
      const [r] = await store.listRounds(runId);
      expect(r).toMatchObject({ status: 'completed', completed: 4, rejected: 2 });
      const answers = (d: ProtocolDevice) => d.sent.filter((s) => s.runId === runId).map((s) => s.answer);
      expect(answers(nan)).toEqual([expect.objectContaining({ ok: false, error: expect.objectContaining({ code: 'BAD_WEIGHTS', message: expect.stringMatching(/not finite|non-finite|NaN/i) }) })]);
      expect(answers(liar)).toEqual([expect.objectContaining({ ok: false, error: expect.objectContaining({ code: 'TOO_MANY_EXAMPLES' }) })]);
      const honest = devices.filter((d) => d !== nan && d !== liar).flatMap((d) => d.sent.filter((s) => s.runId === runId));
      const initial = await modelOf((await store.listModels()).find((m) => m.runId === runId && m.round === 0)!.version);
      expect(maxDiff(await modelOf(r!.modelVersion!), expectedModel(initial, honest, 1000))).toBeLessThan(1e-6);
    } finally {
      nan.tamper = undefined;
      liar.tamper = undefined;
    }
  }, 120_000);

  it('refuses, with the reason, a run whose aggregation cannot be split across nodes', async () => {
    for (const [config, reason] of [
      [{ aggregation: 'median', clientsPerRound: 6, minUpdates: 5 }, /aggregation "median" needs every update in one place/],
      [{ secureAggregation: true, clientsPerRound: 6, minUpdates: 3, clipNorm: 5 }, /secure aggregation runs on one server node only/],
    ] as const) {
      const res = await fetch(`${cluster.nodes[1]!.url}/api/runs`, { method: 'POST', headers: headers(), body: JSON.stringify({ model: 'cnn-small', ...config }) });
      expect(res.status).toBe(400);
      expect(((await res.json()) as { error: string }).error).toMatch(reason);
    }
  });

  it('loses only the updates a killed node held: they are dropped from the round, and the round closes with the rest', async () => {
    const victim = cluster.nodes[2]!;
    const leader = await coordinator();
    expect(victim.id).not.toBe(leader.id);
    const onVictim = devices.filter((d) => d.url === victim.url);
    const others = devices.filter((d) => d.url !== victim.url);
    expect(onVictim.length).toBe(2);
    for (const d of others) d.hold();
    const runId = await launch(leader.url, { rounds: 1, clientsPerRound: 6, minUpdates: 3, roundTimeoutMs: 60_000 });
    // the victim's devices answer at once: their updates are validated and summed on the victim
    await until(async () => {
      const s = await get<{ round: { accepted: number } | null }>(`${leader.url}/api/status`);
      return (s.round?.accepted ?? 0) >= 2 || undefined;
    }, 30_000, 'the victim\'s two updates to be counted');
    await victim.kill();
    // its devices go to another node; the coordinator declares the node lost within three heartbeats
    for (const d of onVictim) await d.settled();
    expect(onVictim.every((d) => d.url !== victim.url)).toBe(true);
    await until(async () => {
      const s = await get<{ round: { accepted: number; dropped: number } | null }>(`${leader.url}/api/status`);
      return (s.round && s.round.accepted === 0 && s.round.dropped === 2) || undefined;
    }, 10_000, 'the lost updates to be dropped from the round');
    for (const d of others) d.release();
    expect(await runEnded(runId)).toMatchObject({ status: 'done' });
    const [r] = (await store.listRounds(runId)) as RoundRecord[];
    expect(r).toMatchObject({ status: 'completed', completed: 4, dropped: 2 });
    const survivors = others.flatMap((d) => d.sent.filter((s) => s.runId === runId));
    const initial = await modelOf((await store.listModels()).find((m) => m.runId === runId && m.round === 0)!.version);
    // the new model is the survivors' FedAvg exactly: nothing of the lost updates is in it
    expect(maxDiff(await modelOf(r!.modelVersion!), expectedModel(initial, survivors, 1000))).toBeLessThan(1e-6);
  }, 120_000);

  it('hands the lease to another node when the coordinator is killed, which resumes the run from its last completed round', async () => {
    const leader = await coordinator();
    const rest = cluster.nodes.filter((n) => n.id !== leader.id && n.process.exitCode === null && n.process.signalCode === null);
    expect(rest.length).toBeGreaterThan(0);
    const live = devices;
    // round 1 is answered; round 2's updates are held until the coordinator is dead, so the run is mid-way when it dies
    for (const d of live) d.hold();
    const runId = await launch(leader.url, { rounds: 3, clientsPerRound: 4, minUpdates: 4, roundTimeoutMs: 60_000 });
    await until(() => live.filter((d) => d.starts.some((s) => s.runId === runId && s.round === 1)).length >= 4 || undefined, 30_000, 'round 1 to start');
    for (const d of live) d.release();
    for (const d of live) d.hold();
    await until(async () => ((await store.listRounds(runId)).some((r) => r.status === 'completed') ? true : undefined), 60_000, 'round 1');
    const killedAt = Date.now();
    await cluster.nodes.find((n) => n.id === leader.id)!.kill();
    const next = await until(async () => {
      for (const n of rest) {
        const v = await get<ClusterView>(`${n.url}/api/cluster`).catch(() => undefined);
        if (v?.coordinator && v.coordinator !== leader.id) return v.coordinator;
      }
      return undefined;
    }, 30_000, 'another node to take the lease');
    const tookOverMs = Date.now() - killedAt;
    console.log(`cluster: ${next} coordinates ${tookOverMs} ms after the coordinator was killed (lease ${LEASE_MS} ms)`);
    expect(rest.map((n) => n.id)).toContain(next);
    // within the lease's time, give or take one renewal period and the detection
    expect(tookOverMs).toBeLessThan(LEASE_MS * 3);
    for (const d of live) d.release();
    expect(await runEnded(runId)).toMatchObject({ status: 'done' });
    // the new coordinator took the run up where the dead one left it
    const taker = cluster.nodes.find((n) => n.id === next)!;
    expect(taker.log.some((l) => l.includes('resumed the run the previous coordinator left'))).toBe(true);
    const completed = (await store.listRounds(runId)).filter((r) => r.status === 'completed');
    expect(completed.map((r) => r.round)).toEqual([1, 2, 3]);
  }, 150_000);
});
