/** The composition root: wiring only. Tests pass their own store, evaluator, clock or logger. */
import { createServer, type Server as HttpServer } from 'node:http';
import { createServer as createTlsServer } from 'node:https';
import type { MnistSplit } from './data/mnist.ts';
import { Federation, systemClock, type Clock, type DeviceGateway, type DevicePort, type RemoteUpdates, type UpdateValidator } from './federation.ts';
import type { DeltaEncoder, StepQuantizer } from './model-book.ts';
import type { ThreadSums } from './work-pool.ts';
import { strategyFor, type Strategy } from './fl/strategy.ts';
import type { RunConfig } from '../shared/schemas.ts';
import type { Logger } from './log.ts';
import type { Evaluator } from './ml/evaluator.ts';
import type { Store } from './store/store.ts';
import { createHttpApp } from './transport/http.ts';
import { attachSockets, DEFAULT_RATE_LIMIT, SocketDevicePort } from './transport/socket.ts';
import type { RateLimit } from './transport/rate-limit.ts';
import { attachAdminFeed } from './transport/admin-feed.ts';
import type { Server, ServerOptions } from 'socket.io';

/** Large enough for the biggest model's payload (the paper's CNN: 6.65 MB of float32) plus headroom. */
export const DEFAULT_MAX_PAYLOAD_BYTES = 8 * 1024 * 1024;

export interface AppDeps {
  store: Store;
  evaluator: Evaluator;
  train: MnistSplit;
  logger: Logger;
  adminToken: string;
  webRoot: string;
  /** saved presets (npm run tune's), one JSON file each; none when unset */
  presetsDir?: string;
  strategyFor?: (config: RunConfig) => Strategy;
  clock?: Clock;
  /** how updates are decoded and checked (default: validate.ts, inline) */
  validate?: UpdateValidator;
  /** how model deltas for downloads are encoded (default: inline) */
  encodeDelta?: DeltaEncoder;
  /** how a lossy downlink's steps are made (default: inline) */
  quantizeStep?: StepQuantizer;
  /** FedAvg's sum kept in work threads (default: on the event loop) */
  sums?: ThreadSums;
  maxPayloadBytes?: number;
  rateLimit?: RateLimit;
  /** with a certificate and key, the server speaks HTTPS and WSS only */
  tls?: { cert: string | Buffer; key: string | Buffer };
  /** browser origins allowed to call the API and open sockets from other sites; same-origin always works */
  allowedOrigins?: readonly string[];
  /** API requests a minute from one address (default 1,200) */
  apiRequestsPerMinute?: number;
  /** COOP/COEP headers: cross-origin-isolated pages, where TF.js's wasm backend can use threads */
  crossOriginIsolation?: boolean;
  /** a node of a cluster (cluster/start.ts): how it reaches devices and updates on other nodes */
  cluster?: ClusterHooks;
}

export interface ClusterHooks {
  /** the federation's way to devices and to their updates, when this node coordinates */
  port: DevicePort;
  remote: RemoteUpdates;
  /** what this node's device sockets talk to */
  gateway: DeviceGateway;
  /** socket.io's Redis adapter: emits reach devices on every node */
  adapter: NonNullable<ServerOptions['adapter']>;
  /** the coordinating node's base URL when it is another node (undefined: this one, or none yet) */
  coordinatorUrl(): string | undefined;
  /** what GET /api/cluster shows */
  describe(): Promise<unknown>;
}

export interface App {
  http: HttpServer;
  federation: Federation;
  /** the device sockets' server (tests observe what it receives) */
  io: Server;
  /** this node's device sockets */
  devices: SocketDevicePort;
  close(): Promise<void>;
}

export function createApp(deps: AppDeps): App {
  const port = new SocketDevicePort();
  const cluster = deps.cluster;
  const federation = new Federation({ store: deps.store, strategyFor: deps.strategyFor ?? strategyFor, evaluator: deps.evaluator, clock: deps.clock ?? systemClock, logger: deps.logger, port: cluster?.port ?? port, ...(cluster ? { remote: cluster.remote } : {}), ...(deps.validate ? { validate: deps.validate } : {}), ...(deps.encodeDelta ? { encodeDelta: deps.encodeDelta } : {}), ...(deps.quantizeStep ? { quantizeStep: deps.quantizeStep } : {}), ...(deps.sums ? { sums: deps.sums } : {}) });
  const allowedOrigins = deps.allowedOrigins ?? [];
  const handler = createHttpApp({ federation, store: deps.store, train: deps.train, adminToken: deps.adminToken, webRoot: deps.webRoot, allowedOrigins, tls: Boolean(deps.tls), ...(cluster ? { cluster } : {}), ...(deps.apiRequestsPerMinute ? { apiRequestsPerMinute: deps.apiRequestsPerMinute } : {}), crossOriginIsolation: deps.crossOriginIsolation ?? false, ...(deps.presetsDir ? { presetsDir: deps.presetsDir } : {}) });
  const http: HttpServer = deps.tls ? (createTlsServer({ cert: deps.tls.cert, key: deps.tls.key }, handler) as unknown as HttpServer) : createServer(handler);
  const io = attachSockets(http, cluster?.gateway ?? federation, port, deps.logger, { ...(cluster ? { adapter: cluster.adapter } : {}), maxPayloadBytes: deps.maxPayloadBytes ?? DEFAULT_MAX_PAYLOAD_BYTES, rateLimit: deps.rateLimit ?? DEFAULT_RATE_LIMIT, allowedOrigins });
  const detachAdmin = attachAdminFeed(io as unknown as Server, federation, deps.adminToken);
  return {
    http,
    federation,
    io,
    devices: port,
    close: async () => {
      // The run is not stopped: it stays running in the store and the next start resumes it.
      federation.shutdown();
      detachAdmin();
      await federation.idle();
      await new Promise<void>((resolve) => io.close(() => resolve()));
      await deps.store.close();
    },
  };
}
