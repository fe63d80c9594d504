/**
 * One node of a cluster (ROLE=node): the app as one process runs it, plus the bus, the heartbeat
 * and the leader lease. Every node holds device connections and sums its own devices' updates;
 * the node that holds the lease also runs the round coordinator, and when it dies another takes
 * the lease and resumes the run from its last completed round, as one process does after a
 * restart.
 */
import type { AddressInfo } from 'node:net';
import { createAdapter } from '@socket.io/redis-adapter';
import { Redis } from 'ioredis';
import { createApp, type App, type AppDeps } from '../app.ts';
import type { Logger } from '../log.ts';
import { inlineSums } from '../work-pool.ts';
import { Bus, Names, type ToAll } from './bus.ts';
import { LeaderLink } from './leader.ts';
import { Lease } from './lease.ts';
import { ClusterNode } from './node.ts';

export interface ClusterOptions {
  redisUrl: string;
  nodeId: string;
  host: string;
  port: number;
  /** how devices and other nodes reach this node (default: http://host:port) */
  publicUrl?: string;
  /** the Redis names of this cluster (several may share a Redis) */
  prefix?: string;
  /** the leader lease's time to live: a dead leader is replaced within it */
  leaseMs?: number;
  /** a node is declared lost this many heartbeats after its last one */
  heartbeatMs?: number;
  /** the lease was lost while this node coordinated: it must stop (main.ts exits, for a supervisor to restart it) */
  onLeaseLost(reason: string): void;
}

export interface ClusterNodeHandle {
  app: App;
  url: string;
  node: ClusterNode;
  lease: Lease;
  close(): Promise<void>;
}

export const DEFAULT_LEASE_MS = 5000;
export const DEFAULT_HEARTBEAT_MS = 1000;
/** heartbeats a node may miss before it is declared lost */
const MISSED_HEARTBEATS = 3;

export async function startClusterNode(deps: Omit<AppDeps, 'cluster'>, o: ClusterOptions): Promise<ClusterNodeHandle> {
  const log: Logger = deps.logger.child('cluster');
  const names = new Names(o.prefix ?? 'fl');
  const leaseMs = o.leaseMs ?? DEFAULT_LEASE_MS;
  const heartbeatMs = o.heartbeatMs ?? DEFAULT_HEARTBEAT_MS;
  if (!/^[A-Za-z0-9_.-]{1,64}$/.test(o.nodeId)) throw new Error(`NODE_ID ${JSON.stringify(o.nodeId)}: 1 to 64 letters, digits, '.', '_' or '-'`);
  let url = o.publicUrl ?? '';
  const reportError = (err: Error) => log.warn('redis', { error: err.message });
  const bus = new Bus(o.redisUrl, o.nodeId, names, reportError);
  const node = new ClusterNode({ bus, store: deps.store, sums: deps.sums ?? inlineSums(), logger: deps.logger, ...(deps.encodeDelta ? { encodeDelta: deps.encodeDelta } : {}) });
  const leader = new LeaderLink(bus, deps.logger, heartbeatMs);

  const adapterPub = new Redis(o.redisUrl, { maxRetriesPerRequest: 2 });
  const adapterSub = adapterPub.duplicate();
  for (const r of [adapterPub, adapterSub]) r.on('error', reportError);
  let lease: Lease | undefined;
  const app = createApp({
    ...deps,
    cluster: {
      port: leader,
      remote: leader,
      gateway: node,
      adapter: createAdapter(adapterPub, adapterSub, { key: names.adapter() }),
      coordinatorUrl: () => (lease?.isHeld ? undefined : (node.leaderNow?.url ?? '')),
      describe: async () => {
        const nodes: { node: string; url: string }[] = [];
        let cursor = '0';
        do {
          const [next, keys] = await bus.redis.scan(cursor, 'MATCH', names.aliveScan(), 'COUNT', 100);
          cursor = next;
          for (const k of keys) {
            const v = await bus.redis.get(k);
            if (v) nodes.push({ node: k.slice(names.alive('').length), url: (JSON.parse(v) as { url: string }).url });
          }
        } while (cursor !== '0');
        return { cluster: true, node: o.nodeId, url, coordinator: lease?.isHeld ? o.nodeId : (node.leaderNow?.node ?? null), nodes: nodes.sort((a, b) => a.node.localeCompare(b.node)), here: node.stats(), ...(lease?.isHeld ? { devicesByNode: leader.view() } : {}) };
      },
    },
  });
  node.port = app.devices;
  leader.io = app.io;

  await new Promise<void>((resolve) => app.http.listen(o.port, o.host, resolve));
  url ||= `http://${o.host === '0.0.0.0' ? '127.0.0.1' : o.host}:${(app.http.address() as AddressInfo).port}`;
  await bus.open({ node: (m) => node.handle(m), all: (m) => node.handleAll(m), leader: (m) => leader.handle(m) });
  await node.open();

  const beat = () => bus.redis.set(names.alive(o.nodeId), JSON.stringify({ url }), 'PX', heartbeatMs * MISSED_HEARTBEATS).catch(reportError);
  await beat();
  const heartbeat = setInterval(() => void beat(), heartbeatMs);

  // a node that starts while another coordinates learns of it now (later changes are announced on the bus)
  const holder = await bus.redis.get(names.lease());
  const info = holder ? await bus.redis.get(names.leaderInfo()) : null;
  const announced = info ? (JSON.parse(info) as Extract<ToAll, { t: 'leader' }>) : undefined;
  if (announced && announced.node === holder) node.handleAll(announced);

  lease = new Lease(bus.redis, names.lease(), o.nodeId, leaseMs, {
    acquired: () => {
      log.info('this node coordinates the cluster', { node: o.nodeId, url });
      void (async () => {
        await leader.lead(app.federation, url);
        await app.federation.open();
        const resumed = await app.federation.resumeInterruptedRun();
        if (resumed !== undefined) log.info('resumed the run the previous coordinator left', { runId: resumed });
      })().catch((err: unknown) => o.onLeaseLost(`could not take over: ${err instanceof Error ? err.message : String(err)}`));
    },
    lost: (reason) => {
      log.error('lost the leader lease', { reason });
      o.onLeaseLost(reason);
    },
  });
  lease.start();

  return {
    app,
    url,
    node,
    lease,
    close: async () => {
      clearInterval(heartbeat);
      leader.stop();
      await lease.stop();
      await bus.redis.del(names.alive(o.nodeId)).catch(() => undefined);
      await app.close();
      await new Promise<void>((r) => app.http.close(() => r()));
      await bus.close();
      adapterSub.disconnect();
      await adapterPub.quit().catch(() => adapterPub.disconnect());
    },
  };
}
