/**
 * A cluster node's device side without Redis: what it tells the coordinator when a coordinator
 * takes over — including one restarted under the same node id, which knows nothing of the
 * devices either.
 */
import { describe, expect, it } from 'vitest';
import { Names, type Bus, type ToLeader, type ToNode } from '../server/cluster/bus.ts';
import { LeaderLink } from '../server/cluster/leader.ts';
import type { Federation } from '../server/federation.ts';
import { ClusterNode } from '../server/cluster/node.ts';
import { createLogger } from '../server/log.ts';
import { openSqliteStore } from '../server/store/sqlite.ts';
import { inlineSums } from '../server/work-pool.ts';
import { claims } from './support/server.ts';

function fakeBus(): { bus: Bus; sent: ToLeader[] } {
  const sent: ToLeader[] = [];
  const bus = { node: 'node-a', toLeader: (m: ToLeader) => sent.push(m) } as unknown as Bus;
  return { bus, sent };
}

describe('a cluster node', () => {
  it('introduces its devices again to every new coordinator, even one with the same node id, and answers the updates the old one never decided', async () => {
    const { bus, sent } = fakeBus();
    const node = new ClusterNode({ bus, store: openSqliteStore(':memory:'), sums: inlineSums(), logger: createLogger('test', () => undefined) });
    node.handleAll({ t: 'leader', node: 'node-b', url: 'http://b', term: 'term-1' });
    node.join({ deviceId: 'dev-1', ...claims(100) });
    node.join({ deviceId: 'dev-2', ...claims(100) });
    const metrics = { accuracyBefore: 0.1, lossBefore: 2, accuracyAfter: 0.2, lossAfter: 1.9, downloadMs: 1, evaluateMs: 1, trainMs: 1 };
    const pending = node.submitUpdate('dev-1', { runId: 1, round: 1, attempt: 1, numExamples: 100, delta: new Uint8Array(8), metrics });
    expect(sent.map((m) => m.t)).toEqual(['join', 'join', 'submit']);
    // the same announcement again changes nothing
    node.handleAll({ t: 'leader', node: 'node-b', url: 'http://b', term: 'term-1' });
    expect(sent).toHaveLength(3);
    // node-b restarted: same id, a new term
    node.handleAll({ t: 'leader', node: 'node-b', url: 'http://b', term: 'term-2' });
    expect(await pending).toMatchObject({ ok: false, error: { code: 'NO_ACTIVE_ROUND' } });
    expect(sent.slice(3).map((m) => (m.t === 'join' ? m.hello.deviceId : m.t))).toEqual(['dev-1', 'dev-2']);
    expect(node.stats()).toEqual({ devices: 2, held: 0 });
  });
});

describe('the coordinator\'s side of a cluster', () => {
  it('fails a round\'s sum when a node\'s share holds fewer updates than were counted from it (a lost add), and takes it when they agree', async () => {
    const toNode: { node: string; m: ToNode }[] = [];
    const share = Buffer.from(new Float64Array([1, 2, 3, 4]).buffer);
    const bus = { node: 'lead', toNode: (node: string, m: ToNode) => toNode.push({ node, m }), redis: { getBuffer: async () => share, del: async () => 1 }, names: new Names('t') } as unknown as Bus;
    const link = new LeaderLink(bus, createLogger('test', () => undefined), 1000);
    link.federation = {} as Federation;
    const answer = (updates: number) => {
      const m = toNode.at(-1)!.m as Extract<ToNode, { t: 'take' }>;
      link.handle({ t: 'partial', node: 'node-a', req: m.req, ok: true, redisKey: 'k', weight: 3, updates });
    };
    const lost = link.take('1:1:1', new Map([['node-a', 2]]), 4);
    answer(1);
    await expect(lost).rejects.toThrow(/node node-a's share of the sum holds 1 updates, 2 were counted from it/);
    const whole = link.take('1:1:1', new Map([['node-a', 2]]), 4);
    answer(2);
    expect(await whole).toEqual([{ sum: new Float64Array([1, 2, 3, 4]), weight: 3, updates: 2 }]);
    link.stop();
  });
});
