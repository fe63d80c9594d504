/** The only code that touches socket.io: parse each message, hand it to the federation, answer. */
import type { Server as HttpServer } from 'node:http';
import { Server, type Socket } from 'socket.io';
import type { ClientToServerEvents, ErrorCode, ModelPublished, Result, RoundEnd, RoundStart, ServerToClientEvents } from '../../shared/protocol.ts';
import { describeIssues, helloSchema, stateReportSchema, updateSubmitSchema } from '../../shared/schemas.ts';
import type { DevicePort, Federation } from '../federation.ts';
import type { Logger } from '../log.ts';

type FlServer = Server<ClientToServerEvents, ServerToClientEvents>;
type FlSocket = Socket<ClientToServerEvents, ServerToClientEvents>;

/** Routes messages to devices by id; bound to a socket.io server by attachSockets. */
export class SocketDevicePort implements DevicePort {
  io: FlServer | undefined;
  readonly sockets = new Map<string, FlSocket>();
  sendRoundStart(deviceId: string, msg: RoundStart): void {
    this.sockets.get(deviceId)?.emit('round:start', msg);
  }
  sendRoundEnd(deviceId: string, msg: RoundEnd): void {
    this.sockets.get(deviceId)?.emit('round:end', msg);
  }
  broadcastModel(msg: ModelPublished): void {
    this.io?.emit('model:published', msg);
  }
}

export interface SocketOptions {
  maxPayloadBytes: number;
}

export function attachSockets(http: HttpServer, federation: Federation, port: SocketDevicePort, logger: Logger, options: SocketOptions): FlServer {
  const log = logger.child('transport');
  const io: FlServer = new Server(http, { maxHttpBufferSize: options.maxPayloadBytes, serveClient: false });
  port.io = io;

  io.on('connection', (socket) => {
    let deviceId: string | undefined;
    const answer = <T>(ack: unknown, result: Result<T>) => {
      if (typeof ack === 'function') (ack as (r: Result<T>) => void)(result);
      else if (!result.ok) socket.emit('server:error', result.error);
    };
    const bad = <T>(ack: unknown, code: ErrorCode, message: string): void => {
      federation.counters.badMessages++;
      log.warn('bad message', { socket: socket.id, deviceId, code, message });
      answer<T>(ack, { ok: false, error: { code, message } });
    };

    socket.on('device:hello', (raw, ack) => {
      const parsed = helloSchema.safeParse(raw);
      if (!parsed.success) return bad(ack, 'BAD_MESSAGE', `device:hello: ${describeIssues(parsed.error)}`);
      const hello = parsed.data;
      if (deviceId && deviceId !== hello.deviceId) return bad(ack, 'BAD_MESSAGE', `device:hello: this connection already belongs to device ${deviceId}`);
      const previous = port.sockets.get(hello.deviceId);
      if (previous && previous !== socket) {
        // The same device reconnected (a reload): the newest connection wins.
        port.sockets.delete(hello.deviceId);
        previous.disconnect(true);
        federation.leave(hello.deviceId);
      }
      deviceId = hello.deviceId;
      port.sockets.set(deviceId, socket);
      federation.join(hello);
      answer(ack, { ok: true, data: { deviceId } });
    });

    socket.on('device:state', (raw) => {
      if (!deviceId) return bad(undefined, 'NOT_JOINED', 'device:state: send device:hello first');
      const parsed = stateReportSchema.safeParse(raw);
      if (!parsed.success) return bad(undefined, 'BAD_MESSAGE', `device:state: ${describeIssues(parsed.error)}`);
      federation.report(deviceId, parsed.data);
    });

    socket.on('update:submit', (raw, ack) => {
      if (!deviceId) return bad(ack, 'NOT_JOINED', 'update:submit: send device:hello first');
      const parsed = updateSubmitSchema.safeParse(raw);
      if (!parsed.success) return bad(ack, 'BAD_MESSAGE', `update:submit from device ${deviceId}: ${describeIssues(parsed.error)}`);
      answer(ack, federation.submitUpdate(deviceId, parsed.data));
    });

    socket.on('disconnect', () => {
      if (deviceId && port.sockets.get(deviceId) === socket) {
        port.sockets.delete(deviceId);
        federation.leave(deviceId);
      }
    });
  });
  return io;
}
