/**
 * The baseline of `npm run load`: a bare socket.io server (same library, same loopback, its own
 * process) that moves the same bytes as a federation round and nothing else — on `start` it sends
 * every connected socket a `round:start` carrying `bytes` bytes (the model a round sends), and it
 * acknowledges every `update:submit` at once — so what the socket itself takes can be told apart
 * from what the federation adds. `stats` answers with its event-loop delay since `start` (p99 and
 * max, ms). Prints its port on stdout.
 *
 *   tsx scripts/lib/echo-server.ts <bytes>
 */
import { createServer } from 'node:http';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { Server } from 'socket.io';

const bytes = Number(process.argv[2] ?? 0);
const model = new Uint8Array(bytes).map((_, i) => i & 0xff);
const http = createServer();
const io = new Server(http, { maxHttpBufferSize: 64 * 1024 * 1024, transports: ['websocket'] });
const loop = monitorEventLoopDelay({ resolution: 10 });
io.on('connection', (socket) => {
  socket.on('start', () => {
    loop.reset();
    loop.enable();
    for (const s of io.sockets.sockets.values()) s.emit('round:start', { weights: model });
  });
  socket.on('stats', (ack: (r: { p99Ms: number; maxMs: number }) => void) => ack({ p99Ms: loop.percentile(99) / 1e6, maxMs: loop.max / 1e6 }));
  socket.on('update:submit', (_msg: unknown, ack: (r: { ok: true }) => void) => ack({ ok: true }));
});
http.listen(0, '127.0.0.1', () => {
  const address = http.address();
  process.stdout.write(`${typeof address === 'object' && address ? address.port : 0}\n`);
});
