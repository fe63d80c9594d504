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
 */
import type { ModelName } from '../shared/models.ts';
import { parseArgs, startServer } from './lib/harness.ts';
import { measure, measureEcho } from './lib/load-round.ts';

const args = parseArgs(process.argv.slice(2), { devices: '100,200,400', 'cnn-devices': '25,50,100', models: 'cnn-small,cnn' });
const line = (s = '') => process.stdout.write(s + '\n');
const server = await startServer();
try {
  line('model | devices | accepted | updates/s | MB/s | bare socket.io: MB/s (ratio), event loop p99 / max ms | payload MB | server RSS idle → max (MB) | event loop p99 / max (ms)');
  const models = String(args.models).split(',') as ModelName[];
  for (const model of models) {
    const counts = String(model === 'cnn' ? args['cnn-devices'] : args.devices).split(',').map(Number);
    for (const n of counts) {
      const r = await measure(server, model, n);
      const echo = await measureEcho(model, n);
      line(`${r.model} | ${r.devices} | ${r.accepted} | ${Number(r.updatesPerS).toFixed(0)} | ${Number(r.mbPerS).toFixed(0)} | ${echo.mbPerS.toFixed(0)} (${(Number(r.mbPerS) / echo.mbPerS).toFixed(2)}), ${echo.loopP99Ms.toFixed(0)} / ${echo.loopMaxMs.toFixed(0)} | ${Number(r.payloadMB).toFixed(2)} | ${Number(r.rssIdleMB).toFixed(0)} → ${Number(r.rssMaxMB).toFixed(0)} | ${Number(r.loopP99MaxMs).toFixed(0)} / ${Number(r.loopMaxMs).toFixed(0)}`);
    }
  }
} finally {
  await server.stop();
}
