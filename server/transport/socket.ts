/**
 * The only code that touches socket.io: parse each message, hand it to the federation, answer.
 * A device proves its identity before anything else: it asks for a challenge, and its hello
 * carries its public key and its signature of that challenge (shared/identity.ts).
 */
import { randomBytes } from 'node:crypto';
import type { Server as HttpServer } from 'node:http';
import { Server, type ServerOptions, type Socket } from 'socket.io';
import type { CanaryEnd, ClientToServerEvents, ErrorCode, EvalStart, ModelPublished, Result, RoundEnd, RoundStart, ServerToClientEvents } from '../../shared/protocol.ts';
import { CHALLENGE_BYTES, verifyHello } from '../../shared/identity.ts';
import { describeIssues, evalReportSchema, helloSchema, secAggKeysSchema, secAggRevealSchema, secAggSharesSchema, stateReportSchema, updateSubmitSchema } from '../../shared/schemas.ts';
import type { DeviceGateway, DevicePort } from '../federation.ts';
import type { Logger } from '../log.ts';
import { TokenBucket, type RateLimit } from './rate-limit.ts';

type FlServer = Server<ClientToServerEvents, ServerToClientEvents>;
type FlSocket = Socket<ClientToServerEvents, ServerToClientEvents>;

/** Each device's socket is in a room of its own (a cluster's coordinating node reaches it through the Redis adapter). */
export const deviceRoom = (deviceId: string) => `device:${deviceId}`;

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
  sendEvalStart(deviceId: string, msg: EvalStart): void {
    this.sockets.get(deviceId)?.emit('eval:start', msg);
  }
  sendCanaryEnd(deviceId: string, msg: CanaryEnd): void {
    this.sockets.get(deviceId)?.emit('canary:end', msg);
  }
  sendSecAgg<E extends 'secagg:neighbours' | 'secagg:shares' | 'secagg:unmask'>(deviceId: string, event: E, msg: Parameters<ServerToClientEvents[E]>[0]): void {
    (this.sockets.get(deviceId) as unknown as { emit(e: string, m: unknown): void } | undefined)?.emit(event, msg);
  }
}

export interface SocketOptions {
  maxPayloadBytes: number;
  /** inbound events per connection; past it they are refused with RATE_LIMITED */
  rateLimit: RateLimit;
  /** cross-site origins allowed to connect; same-origin pages and non-browser clients always can */
  allowedOrigins: readonly string[];
}

/** An Origin header is acceptable when absent (not a browser), same-host, or listed. */
export function originAllowed(origin: string | undefined, host: string | undefined, allowed: readonly string[]): boolean {
  if (!origin) return true;
  if (allowed.includes(origin)) return true;
  try {
    return new URL(origin).host === host;
  } catch {
    return false;
  }
}

/** Generous for a device (a few events a second), tight for a flood. */
export const DEFAULT_RATE_LIMIT: RateLimit = { perSecond: 50, burst: 100 };
/** A connection refused this many times within one window is dropped. */
const DISCONNECT_AFTER_REFUSALS = 1000;
/** a message's size on the wire: its JSON text (secure-aggregation messages carry no binary attachments) */
const wireBytes = (raw: unknown): number => JSON.stringify(raw).length;
/** every event a device may send: a record over the protocol's map, so an event added there and not here fails to compile */
const CLIENT_EVENTS: Record<keyof ClientToServerEvents, true> = { 'device:challenge': true, 'device:hello': true, 'device:state': true, 'update:submit': true, 'secagg:keys': true, 'secagg:shares': true, 'secagg:reveal': true, 'eval:report': true };
const KNOWN_EVENTS: ReadonlySet<string> = new Set(Object.keys(CLIENT_EVENTS));
const REFUSAL_WINDOW_MS = 10_000;

export function attachSockets(http: HttpServer, federation: DeviceGateway, port: SocketDevicePort, logger: Logger, options: SocketOptions & { adapter?: ServerOptions['adapter'] }): FlServer {
  const log = logger.child('transport');
  const io: FlServer = new Server(http, {
    maxHttpBufferSize: options.maxPayloadBytes,
    serveClient: false,
    ...(options.adapter ? { adapter: options.adapter } : {}),
    allowRequest: (req, callback) => callback(originAllowed(req.headers.origin, req.headers.host, options.allowedOrigins) ? null : 'origin not allowed', originAllowed(req.headers.origin, req.headers.host, options.allowedOrigins)),
  });
  port.io = io;

  io.on('connection', (socket) => {
    let deviceId: string | undefined;
    /** the challenge this connection must sign in its hello; used once */
    let challenge: Uint8Array | undefined;
    // Progress reports are best-effort and frequent: they spend their own budget, so they can never starve an update.
    const buckets = { reports: new TokenBucket(options.rateLimit), other: new TokenBucket(options.rateLimit) };
    let refused = 0;
    let windowStart = Date.now();
    // Every inbound event, known or not, spends a token; over the rate it is answered, counted, and not processed.
    socket.use(([event, ...args], next) => {
      if ((event === 'device:state' ? buckets.reports : buckets.other).take()) {
        next();
        return;
      }
      federation.counters.badMessages++;
      const now = Date.now();
      if (now - windowStart > REFUSAL_WINDOW_MS) {
        windowStart = now;
        refused = 0;
      }
      refused++;
      const ack = args.at(-1);
      const error = { code: 'RATE_LIMITED' as const, message: `${String(event)}: more than ${options.rateLimit.perSecond} events/s from this connection` };
      if (typeof ack === 'function') (ack as (r: Result<never>) => void)({ ok: false, error });
      else if (refused === 1) socket.emit('server:error', error);
      if (refused >= DISCONNECT_AFTER_REFUSALS) {
        log.warn('connection dropped for flooding', { socket: socket.id, deviceId });
        socket.disconnect(true);
      }
    });
    socket.onAny((event: unknown, ...args: unknown[]) => {
      if (typeof event === 'string' && KNOWN_EVENTS.has(event)) return;
      bad(args.at(-1), 'BAD_MESSAGE', `unknown event ${JSON.stringify(String(event)).slice(0, 80)}`);
    });
    const answer = <T>(ack: unknown, result: Result<T>) => {
      if (typeof ack === 'function') (ack as (r: Result<T>) => void)(result);
      else if (!result.ok) socket.emit('server:error', result.error);
    };
    const bad = <T>(ack: unknown, code: ErrorCode, message: string): void => {
      federation.counters.badMessages++;
      log.warn('bad message', { socket: socket.id, deviceId, code, message });
      answer<T>(ack, { ok: false, error: { code, message } });
    };

    /** Registers a handler of one event: the ack, when given, comes last; anything beyond `payloads` arguments is refused. */
    const on = (event: keyof ClientToServerEvents, payloads: 0 | 1, handler: (raw: unknown, ack: unknown) => void | Promise<void>) => {
      (socket as unknown as { on(e: string, l: (...a: unknown[]) => void): void }).on(event, (...args) => {
        const ack = typeof args.at(-1) === 'function' ? args.pop() : undefined;
        if (args.length > payloads) return bad(ack, 'BAD_MESSAGE', `${event}: expected ${payloads === 0 ? 'no payload' : 'one payload'}, got ${args.length} arguments`);
        void handler(args[0], ack);
      });
    };

    on('device:challenge', 0, (_raw, ack) => {
      challenge = randomBytes(CHALLENGE_BYTES);
      answer(ack, { ok: true, data: { challenge } });
    });

    on('device:hello', 1, async (raw, ack) => {
      const parsed = helloSchema.safeParse(raw);
      if (!parsed.success) return bad(ack, 'BAD_MESSAGE', `device:hello: ${describeIssues(parsed.error)}`);
      const { publicKey, signature, ...hello } = parsed.data;
      const signed = challenge;
      challenge = undefined;
      if (!signed) return bad(ack, 'IDENTITY', `device:hello from ${hello.deviceId}: ask for a challenge (device:challenge) and sign it first`);
      const refused = await verifyHello(hello.deviceId, new Uint8Array(publicKey), new Uint8Array(signature), signed);
      // Nothing changes for the device whose id was claimed: its connection and its round go on.
      if (refused) return bad(ack, 'IDENTITY', `device:hello from ${hello.deviceId}: ${refused}`);
      if (!socket.connected) return;
      if (deviceId && deviceId !== hello.deviceId) return bad(ack, 'BAD_MESSAGE', `device:hello: this connection already belongs to device ${deviceId}`);
      const previous = port.sockets.get(hello.deviceId);
      if (previous && previous !== socket) {
        // The same device, proven by its key, connected again (a reload): the newest connection wins.
        port.sockets.delete(hello.deviceId);
        previous.emit('server:error', { code: 'SUPERSEDED', message: `device ${hello.deviceId} connected again elsewhere (a reload or another tab with the same identity); this connection is closed` });
        previous.disconnect(true);
        federation.leave(hello.deviceId);
      }
      deviceId = hello.deviceId;
      port.sockets.set(deviceId, socket);
      void socket.join(deviceRoom(deviceId));
      federation.join(hello, publicKey);
      answer(ack, { ok: true, data: { deviceId, globalModel: federation.latestModel() } });
    });

    on('device:state', 1, (raw, ack) => {
      if (!deviceId) return bad(ack, 'NOT_JOINED', 'device:state: send device:hello first');
      const parsed = stateReportSchema.safeParse(raw);
      if (!parsed.success) return bad(ack, 'BAD_MESSAGE', `device:state: ${describeIssues(parsed.error)}`);
      federation.report(deviceId, parsed.data);
      if (typeof ack === 'function') answer(ack, { ok: true, data: null });
    });

    on('update:submit', 1, async (raw, ack) => {
      if (!deviceId) return bad(ack, 'NOT_JOINED', 'update:submit: send device:hello first');
      const parsed = updateSubmitSchema.safeParse(raw);
      if (!parsed.success) return bad(ack, 'BAD_MESSAGE', `update:submit from device ${deviceId}: ${describeIssues(parsed.error)}`);
      answer(ack, await federation.submitUpdate(deviceId, parsed.data));
    });

    // Secure aggregation: each message is parsed, then checked (signature, round, sender) by the federation.
    on('secagg:keys', 1, async (raw, ack) => {
      if (!deviceId) return bad(ack, 'NOT_JOINED', 'secagg:keys: send device:hello first');
      const parsed = secAggKeysSchema.safeParse(raw);
      if (!parsed.success) return bad(ack, 'BAD_MESSAGE', `secagg:keys from device ${deviceId}: ${describeIssues(parsed.error)}`);
      const { runId, round, attempt, ...advert } = parsed.data;
      answer(ack, await federation.secAggMessage(deviceId, { runId, round, attempt }, { what: 'keys', msg: { ...advert, maskPublicKey: Uint8Array.from(advert.maskPublicKey), encPublicKey: Uint8Array.from(advert.encPublicKey), signature: Uint8Array.from(advert.signature) } }, wireBytes(raw)));
    });
    on('secagg:shares', 1, async (raw, ack) => {
      if (!deviceId) return bad(ack, 'NOT_JOINED', 'secagg:shares: send device:hello first');
      const parsed = secAggSharesSchema.safeParse(raw);
      if (!parsed.success) return bad(ack, 'BAD_MESSAGE', `secagg:shares from device ${deviceId}: ${describeIssues(parsed.error)}`);
      const { runId, round, attempt, shares, signature } = parsed.data;
      answer(ack, await federation.secAggMessage(deviceId, { runId, round, attempt }, { what: 'shares', msg: { shares: shares.map((s) => ({ peer: s.peer, sealed: Uint8Array.from(s.sealed) })), signature: Uint8Array.from(signature) } }, wireBytes(raw)));
    });
    on('secagg:reveal', 1, async (raw, ack) => {
      if (!deviceId) return bad(ack, 'NOT_JOINED', 'secagg:reveal: send device:hello first');
      const parsed = secAggRevealSchema.safeParse(raw);
      if (!parsed.success) return bad(ack, 'BAD_MESSAGE', `secagg:reveal from device ${deviceId}: ${describeIssues(parsed.error)}`);
      const { runId, round, attempt, seeds, keys, signature } = parsed.data;
      const own = (xs: typeof seeds) => xs.map((s) => ({ of: s.of, share: Uint8Array.from(s.share) }));
      answer(ack, await federation.secAggMessage(deviceId, { runId, round, attempt }, { what: 'reveal', msg: { seeds: own(seeds), keys: own(keys), signature: Uint8Array.from(signature) } }, wireBytes(raw)));
    });

    on('eval:report', 1, (raw, ack) => {
      if (!deviceId) return bad(ack, 'NOT_JOINED', 'eval:report: send device:hello first');
      const parsed = evalReportSchema.safeParse(raw);
      if (!parsed.success) return bad(ack, 'BAD_MESSAGE', `eval:report from device ${deviceId}: ${describeIssues(parsed.error)}`);
      if (!federation.evaluationReport) return bad(ack, 'NO_ACTIVE_ROUND', 'eval:report: this server does not run evaluation rounds');
      answer(ack, federation.evaluationReport(deviceId, parsed.data));
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
