/**
 * `npm run load`: hundreds of socket.io-client devices in this Node process against the real server
 * (its own process). They join, get selected, and answer with real-size updates (the model's full
 * weight payload; no training, so the server is what is measured). For each model and number of
 * devices it runs one round with K = all devices and reports: updates aggregated per second, the
 * server's RSS against the number of devices, and the server's event-loop delay — and, as the
 * baseline, the MB/s of the same payloads from as many sockets to a bare socket.io server that only
 * acknowledges them (lib/echo-server.ts).
 *
 *   npm run load -- [--devices 100,200,400] [--cnn-devices 25,50,100] [--models cnn-small,cnn]
 *
 * With --nodes (e.g. 1,2,3) the same rounds run on local clusters of that many nodes (ROLE=node on
 * a private Redis and PostgreSQL, scripts/lib/cluster.ts), devices spread evenly over the nodes,
 * and each node's event loop, RSS and CPU time are reported, with the coordinator's aggregation
 * time per round (the round's aggregation phase). The coordinator's CPU time includes evaluating
 * the new model on the test set (in its evaluator thread).
 */
import type { ModelName } from '../shared/models.ts';
import { parseArgs, startServer } from './lib/harness.ts';
import { startLocalCluster } from './lib/cluster.ts';
import { measure, measureEcho } from './lib/load-round.ts';

const args = parseArgs(process.argv.slice(2), { devices: '100,200,400', 'cnn-devices': '25,50,100', models: 'cnn-small,cnn', nodes: '' });
const line = (s = '') => process.stdout.write(s + '\n');
const models = String(args.models).split(',') as ModelName[];
const countsOf = (model: ModelName) => String(model === 'cnn' ? args['cnn-devices'] : args.devices).split(',').map(Number);

if (args.nodes) {
  line('nodes | model | devices | accepted | updates/s | MB/s | aggregation on the coordinator (ms) | per node: devices, CPU ms in the round (per update it held), event loop p99 / max (ms), RSS max (MB)');
  for (const nodes of args.nodes.split(',').map(Number)) {
    const cluster = await startLocalCluster({ nodes });
    try {
      const servers = cluster.nodes.map((n) => ({ url: n.url, token: cluster.token, process: n.process, stop: n.kill }));
      for (const model of models) {
        for (const n of countsOf(model)) {
          const r = await measure(servers, model, n);
          const per = r.nodes.map((s, i) => `${cluster.nodes[i]!.id}${i === 0 ? ' (coordinator)' : ''}: ${s.devices}, ${s.cpuMs.toFixed(0)} (${(s.cpuMs / Math.max(1, s.devices)).toFixed(2)}), ${s.loopP99MaxMs.toFixed(0)} / ${s.loopMaxMs.toFixed(0)}, ${s.rssMaxMB.toFixed(0)}`).join('; ');
          line(`${nodes} | ${r.model} | ${r.devices} | ${r.accepted} | ${r.updatesPerS.toFixed(0)} | ${r.mbPerS.toFixed(0)} | ${r.aggregationMs.toFixed(0)} | ${per}`);
        }
      }
    } finally {
      await cluster.stop();
    }
  }
  process.exit(0);
}

const server = await startServer();
try {
  line('model | devices | accepted | updates/s | MB/s | bare socket.io: MB/s (ratio), event loop p99 / max ms | payload MB | server RSS idle → max (MB) | event loop p99 / max (ms)');
  for (const model of models) {
    for (const n of countsOf(model)) {
      const r = await measure([server], model, n);
      const s = r.nodes[0]!;
      const echo = await measureEcho(model, n);
      line(`${r.model} | ${r.devices} | ${r.accepted} | ${r.updatesPerS.toFixed(0)} | ${r.mbPerS.toFixed(0)} | ${echo.mbPerS.toFixed(0)} (${(r.mbPerS / echo.mbPerS).toFixed(2)}), ${echo.loopP99Ms.toFixed(0)} / ${echo.loopMaxMs.toFixed(0)} | ${r.payloadMB.toFixed(2)} | ${s.rssIdleMB.toFixed(0)} → ${s.rssMaxMB.toFixed(0)} | ${s.loopP99MaxMs.toFixed(0)} / ${s.loopMaxMs.toFixed(0)}`);
    }
  }
} finally {
  await server.stop();
}
