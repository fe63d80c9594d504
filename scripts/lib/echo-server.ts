/**
 * The baseline of `npm run load`: a bare socket.io server (same library, same loopback, its own
 * process) that moves the same bytes as a federation round and nothing else — on `start` it sends
 * every connected socket a `round:start` carrying `bytes` bytes (the model a round sends), and it
 * acknowledges every `update:submit` at once — so what the socket itself takes can be told apart
 * from what the federation adds. Prints its port on stdout.
 *
 *   tsx scripts/lib/echo-server.ts <bytes>
 */
import { createServer } from 'node:http';
import { Server } from 'socket.io';

const bytes = Number(process.argv[2] ?? 0);
const model = new Uint8Array(bytes).map((_, i) => i & 0xff);
const http = createServer();
const io = new Server(http, { maxHttpBufferSize: 64 * 1024 * 1024, transports: ['websocket'] });
io.on('connection', (socket) => {
  socket.on('start', () => {
    for (const s of io.sockets.sockets.values()) s.emit('round:start', { weights: model });
  });
  socket.on('update:submit', (_msg: unknown, ack: (r: { ok: true }) => void) => ack({ ok: true }));
});
http.listen(0, '127.0.0.1', () => {
  const address = http.address();
  process.stdout.write(`${typeof address === 'object' && address ? address.port : 0}\n`);
});
