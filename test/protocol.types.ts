/**
 * Type tests for the protocol: `npm run typecheck` fails if a wrong payload stops being an error,
 * so a protocol change that loosens the types breaks the build.
 */
import type { Socket as ClientSocket } from 'socket.io-client';
import type { ClientToServerEvents, ServerToClientEvents } from '../shared/protocol.ts';

export function protocolTypeTests(socket: ClientSocket<ServerToClientEvents, ClientToServerEvents>): void {
  socket.emit('device:state', { state: 'training', progress: 0.5 });
  // @ts-expect-error: not a device state
  socket.emit('device:state', { state: 'dancing' });
  // @ts-expect-error: unknown event
  socket.emit('update:send', {});
  // @ts-expect-error: delta must be binary, not an array of numbers
  socket.emit('update:submit', { runId: 1, round: 1, attempt: 1, numExamples: 1, delta: [1, 2, 3], metrics: { accuracyBefore: 0, lossBefore: 0, accuracyAfter: 0, lossAfter: 0, downloadMs: 0, evaluateMs: 0, trainMs: 0 } }, () => undefined);
  socket.on('round:start', (msg) => {
    // @ts-expect-error: rounds are numbers
    const r: string = msg.round;
    void r;
  });
}
