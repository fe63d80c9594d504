/**
 * Private PostgreSQL and Redis servers on loopback, for `npm run cluster` and the tests: Debian's
 * `postgresql` and `redis-server` packages, started as children in a folder of their own and
 * stopped with the process. Nothing is installed or downloaded here; a missing package is an
 * error that says which one to install.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { chownSync, existsSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir, userInfo } from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { Redis } from 'ioredis';

export interface Service {
  url: string;
  stop(): Promise<void>;
}

/** A free TCP port on loopback. */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const address = s.address();
      const port = typeof address === 'object' && address ? address.port : 0;
      s.close(() => resolve(port));
    });
  });
}

async function until(what: string, probe: () => Promise<boolean>, child: ChildProcess, timeoutMs = 30_000): Promise<void> {
  const t0 = Date.now();
  for (;;) {
    if (child.exitCode !== null) throw new Error(`${what} exited with code ${child.exitCode} while starting`);
    if (await probe().catch(() => false)) return;
    if (Date.now() - t0 > timeoutMs) throw new Error(`${what} did not start within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** Stops a child started in its own process group (and anything it started), then waits for it. */
function stopper(child: ChildProcess, signal: NodeJS.Signals, cleanup: () => void): () => Promise<void> {
  let stopped: Promise<void> | undefined;
  const kill = (sig: NodeJS.Signals) => {
    try {
      if (child.pid) process.kill(-child.pid, sig);
    } catch {
      /* already gone */
    }
  };
  // never outlive the process that started it
  const onExit = () => kill('SIGKILL');
  process.once('exit', onExit);
  return () =>
    (stopped ??= new Promise<void>((resolve) => {
      process.off('exit', onExit);
      const done = () => {
        clearTimeout(hard);
        cleanup();
        resolve();
      };
      const hard = setTimeout(() => kill('SIGKILL'), 10_000);
      if (child.exitCode !== null || child.signalCode !== null) return done();
      child.once('exit', done);
      kill(signal);
    }));
}

function postgresBin(name: string): string {
  const root = '/usr/lib/postgresql';
  const versions = existsSync(root) ? readdirSync(root).filter((v) => existsSync(path.join(root, v, 'bin', name))).sort((a, b) => Number(b) - Number(a)) : [];
  if (versions.length === 0) throw new Error(`PostgreSQL's ${name} was not found under ${root}: install Debian's postgresql package (apt-get install postgresql), or set DATABASE_URL to a server of your own`);
  return path.join(root, versions[0]!, 'bin', name);
}

/**
 * A throwaway PostgreSQL server: a new cluster in a temporary folder, loopback only, trust
 * authentication, no fsync (a test's data need not survive a crash of the machine). PostgreSQL
 * refuses to run as root; as root it runs as the `postgres` user the package creates.
 */
export async function startPostgres(): Promise<Service> {
  const initdb = postgresBin('initdb');
  const postgres = postgresBin('postgres');
  const root = userInfo().uid === 0;
  const dir = mkdtempSync(path.join(tmpdir(), 'fl-postgres-'));
  const asOwner = (cmd: string, args: string[]): [string, string[]] => (root ? ['runuser', ['-u', 'postgres', '--', cmd, ...args]] : [cmd, args]);
  if (root) {
    const ids = spawnSync('id', ['-u', 'postgres'], { encoding: 'utf8' });
    const gids = spawnSync('id', ['-g', 'postgres'], { encoding: 'utf8' });
    if (ids.status !== 0) throw new Error('running as root, and there is no postgres user to run PostgreSQL as: install Debian\'s postgresql package');
    chownSync(dir, Number(ids.stdout.trim()), Number(gids.stdout.trim()));
  }
  const data = path.join(dir, 'data');
  const [initCmd, initArgs] = asOwner(initdb, ['-D', data, '-A', 'trust', '-U', 'fl', '--no-sync', '-E', 'UTF8', '--locale', 'C']);
  const init = spawnSync(initCmd, initArgs, { encoding: 'utf8' });
  if (init.status !== 0) throw new Error(`initdb failed: ${init.stderr || init.stdout}`);
  const port = await freePort();
  const [cmd, args] = asOwner(postgres, ['-D', data, '-p', String(port), '-k', dir, '-c', 'listen_addresses=127.0.0.1', '-c', 'fsync=off', '-c', 'synchronous_commit=off', '-c', 'full_page_writes=off', '-c', 'max_connections=200']);
  const child = spawn(cmd, args, { detached: true, stdio: 'ignore' });
  const url = `postgres://fl@127.0.0.1:${port}/postgres`;
  const stop = stopper(child, 'SIGINT', () => rmSync(dir, { recursive: true, force: true }));
  try {
    await until('PostgreSQL', async () => {
      const c = new pg.Client({ connectionString: url });
      await c.connect();
      await c.end();
      return true;
    }, child);
  } catch (err) {
    await stop();
    throw err;
  }
  return { url, stop };
}

/** A new, empty database on a server (one per test suite or cluster). */
export async function createDatabase(serverUrl: string, name: string): Promise<string> {
  if (!/^[a-z_][a-z0-9_]*$/.test(name)) throw new Error(`database name ${JSON.stringify(name)}: lower-case letters, digits and _ only`);
  const c = new pg.Client({ connectionString: serverUrl });
  await c.connect();
  try {
    await c.query(`CREATE DATABASE ${name}`);
  } finally {
    await c.end();
  }
  const u = new URL(serverUrl);
  u.pathname = `/${name}`;
  return u.toString();
}

/** A throwaway Redis server: loopback only, nothing persisted. */
export async function startRedis(): Promise<Service> {
  const bin = ['/usr/bin/redis-server', '/usr/local/bin/redis-server'].find((p) => existsSync(p));
  if (!bin) throw new Error('redis-server was not found: install Debian\'s redis-server package (apt-get install redis-server), or set REDIS_URL to a server of your own');
  const port = await freePort();
  const dir = mkdtempSync(path.join(tmpdir(), 'fl-redis-'));
  const child = spawn(bin, ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', dir, '--loglevel', 'warning'], { detached: true, stdio: 'ignore' });
  const url = `redis://127.0.0.1:${port}`;
  const stop = stopper(child, 'SIGTERM', () => rmSync(dir, { recursive: true, force: true }));
  try {
    await until('redis-server', async () => {
      const r = new Redis(url, { lazyConnect: true, maxRetriesPerRequest: 0, retryStrategy: () => null });
      r.on('error', () => undefined); // not up yet: the probe is tried again
      try {
        await r.connect();
        return (await r.ping()) === 'PONG';
      } finally {
        r.disconnect();
      }
    }, child);
  } catch (err) {
    await stop();
    throw err;
  }
  return { url, stop };
}
