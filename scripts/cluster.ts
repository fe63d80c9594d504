/**
 * `npm run cluster -- --nodes 3`: Redis, PostgreSQL and N server nodes on this machine, for people
 * and for the tests. The nodes listen on --port, --port+1, …; devices may join through any of them
 * and runs may be started from any node's dashboard (the API redirects to the coordinating node).
 * Ctrl-C stops everything. With --redis-url and --database-url it uses servers of your own.
 */
import { startLocalCluster } from './lib/cluster.ts';
import { parseArgs } from './lib/harness.ts';

const args = parseArgs(process.argv.slice(2), { nodes: '3', port: '3000', host: '127.0.0.1', 'redis-url': '', 'database-url': '', 'lease-ms': '5000', quiet: '' });
const nodes = Number(args.nodes);
if (!Number.isInteger(nodes) || nodes < 1 || nodes > 16) throw new Error(`--nodes must be an integer from 1 to 16, got ${args.nodes}`);
const basePort = Number(args.port);
if (!Number.isInteger(basePort) || basePort < 1 || basePort > 65535 - nodes) throw new Error(`--port must leave room for ${nodes} ports, got ${args.port}`);

const cluster = await startLocalCluster({
  nodes,
  basePort,
  host: args.host!,
  ...(args['redis-url'] ? { redisUrl: args['redis-url'] } : {}),
  ...(args['database-url'] ? { databaseUrl: args['database-url'] } : {}),
  ...(process.env.ADMIN_TOKEN ? { token: process.env.ADMIN_TOKEN } : {}),
  env: { LEASE_MS: args['lease-ms']! },
  echo: args.quiet !== 'true',
});

process.stdout.write(
  [
    '',
    `A cluster of ${nodes} nodes is up (Redis ${cluster.redisUrl}, PostgreSQL ${cluster.databaseUrl.replace(/\/\/[^@]*@/, '//')}).`,
    ...cluster.nodes.map((n) => `  ${n.id}: ${n.url}/  (admin: ${n.url}/admin)`),
    `ADMIN_TOKEN: ${cluster.token}`,
    `Which node coordinates: curl ${cluster.nodes[0]!.url}/api/cluster`,
    'Ctrl-C stops the nodes, Redis and PostgreSQL.',
    '',
  ].join('\n'),
);

let stopping = false;
const stop = () => {
  if (stopping) return;
  stopping = true;
  void cluster.stop().then(() => process.exit(0));
};
process.on('SIGINT', stop);
process.on('SIGTERM', stop);
// a node that dies is reported (the cluster goes on without it)
for (const n of cluster.nodes) n.process.once('exit', (code, signal) => !stopping && process.stderr.write(`${n.id} exited (${signal ?? code})\n`));
