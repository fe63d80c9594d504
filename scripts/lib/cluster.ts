/**
 * A local cluster: a private Redis and PostgreSQL (or the given ones) and N server nodes as
 * processes of their own (ROLE=node), each on its own port on loopback. Used by `npm run cluster`
 * and by the cluster tests, which kill nodes with SIGKILL.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createDatabase, freePort, startPostgres, startRedis, type Service } from '../../server/cluster/services.ts';

export interface NodeProcess {
  id: string;
  url: string;
  process: ChildProcess;
  /** SIGKILL: no shutdown, no lease release — a crash */
  kill(): Promise<void>;
  /** the node's log lines (stdout and stderr), the latest 5,000 */
  log: string[];
}

export interface LocalCluster {
  redisUrl: string;
  databaseUrl: string;
  token: string;
  nodes: NodeProcess[];
  /** starts one more node (or the named one again, after a kill) */
  startNode(id: string): Promise<NodeProcess>;
  stop(): Promise<void>;
}

export interface ClusterSetup {
  nodes: number;
  /** the first node's port; the others follow (0: free ports) */
  basePort?: number;
  host?: string;
  redisUrl?: string;
  databaseUrl?: string;
  token?: string;
  /** more environment for every node (LEASE_MS, HEARTBEAT_MS, VALIDATE_THREADS, …) */
  env?: Record<string, string>;
  /** copy the nodes' logs to this process's stderr */
  echo?: boolean;
}

async function waitHealthy(url: string, child: ChildProcess, timeoutMs = 90_000): Promise<void> {
  const t0 = Date.now();
  for (;;) {
    if (child.exitCode !== null) throw new Error(`node at ${url} exited with code ${child.exitCode}`);
    try {
      if ((await fetch(`${url}/api/health`)).ok) return;
    } catch {
      /* not up yet */
    }
    if (Date.now() - t0 > timeoutMs) throw new Error(`node at ${url} did not start within ${timeoutMs / 1000} s`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

export async function startLocalCluster(setup: ClusterSetup): Promise<LocalCluster> {
  const services: Service[] = [];
  const stopServices = () => Promise.all(services.map((s) => s.stop()));
  try {
    const redis = setup.redisUrl ? undefined : await startRedis();
    if (redis) services.push(redis);
    const postgres = setup.databaseUrl ? undefined : await startPostgres();
    if (postgres) services.push(postgres);
    const redisUrl = setup.redisUrl ?? redis!.url;
    const databaseUrl = setup.databaseUrl ?? (await createDatabase(postgres!.url, 'fedbrowser'));
    const token = setup.token ?? `cluster-${Math.random().toString(36).slice(2)}`;
    const host = setup.host ?? '127.0.0.1';
    const ports = new Map<string, number>();
    const nodes: NodeProcess[] = [];

    const startNode = async (id: string): Promise<NodeProcess> => {
      let port = ports.get(id);
      if (port === undefined) {
        port = setup.basePort ? setup.basePort + ports.size : await freePort();
        ports.set(id, port);
      }
      const url = `http://${host === '0.0.0.0' ? '127.0.0.1' : host}:${port}`;
      const child = spawn(process.execPath, ['--import', 'tsx', 'server/main.ts'], {
        env: { ...process.env, ...setup.env, ROLE: 'node', NODE_ID: id, PORT: String(port), HOST: host, REDIS_URL: redisUrl, DATABASE_URL: databaseUrl, ADMIN_TOKEN: token },
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      const log: string[] = [];
      const take = (d: Buffer) => {
        const text = d.toString('utf8');
        log.push(...text.split('\n').filter(Boolean));
        if (log.length > 5000) log.splice(0, log.length - 5000);
        if (setup.echo) process.stderr.write(text.replace(/^(?=.)/gm, `[${id}] `));
      };
      child.stdout!.on('data', take);
      child.stderr!.on('data', take);
      const handle: NodeProcess = {
        id,
        url,
        process: child,
        log,
        kill: async () => {
          if (child.exitCode !== null || child.signalCode !== null) return;
          const exited = new Promise((r) => child.once('exit', r));
          child.kill('SIGKILL');
          await exited;
        },
      };
      await waitHealthy(url, child);
      const at = nodes.findIndex((n) => n.id === id);
      if (at >= 0) nodes[at] = handle;
      else nodes.push(handle);
      return handle;
    };

    // the first node alone, so that it takes the lease: the others follow it
    await startNode('node-1');
    await Promise.all(Array.from({ length: setup.nodes - 1 }, (_, i) => startNode(`node-${i + 2}`)));

    return {
      redisUrl,
      databaseUrl,
      token,
      nodes,
      startNode,
      stop: async () => {
        await Promise.all(
          nodes.map(async (n) => {
            if (n.process.exitCode !== null || n.process.signalCode !== null) return;
            const exited = new Promise((r) => n.process.once('exit', r));
            n.process.kill('SIGTERM');
            const hard = setTimeout(() => n.process.kill('SIGKILL'), 8000);
            await exited;
            clearTimeout(hard);
          }),
        );
        await stopServices();
      },
    };
  } catch (err) {
    await stopServices();
    throw err;
  }
}
