import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { get as httpGet } from 'node:http';
import { get as httpsGet } from 'node:https';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { io } from 'socket.io-client';
import { afterAll, describe, expect, it } from 'vitest';
import { createIdentity } from '../shared/identity.ts';
import { joinFederation } from '../web-client/fl/join.ts';
import { claims, startServer, type TestServer } from './support/server.ts';

const dir = mkdtempSync(path.join(tmpdir(), 'fl-tls-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function selfSigned(): { cert: string; key: string } {
  const cert = path.join(dir, 'cert.pem');
  const key = path.join(dir, 'key.pem');
  execFileSync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', key, '-out', cert, '-days', '1', '-subj', '/CN=127.0.0.1', '-addext', 'subjectAltName=IP:127.0.0.1'], { stdio: 'ignore' });
  return { cert: readFileSync(cert, 'utf8'), key: readFileSync(key, 'utf8') };
}

const request = (get: typeof httpGet, url: string, options: Record<string, unknown> = {}) =>
  new Promise<{ status: number; headers: Record<string, unknown> }>((resolve, reject) => {
    get(url, options, (res) => {
      res.resume();
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers }));
    }).on('error', reject);
  });

describe('transport security', () => {
  let server: TestServer | undefined;
  afterAll(async () => server?.close());

  it('with TLS_CERT/TLS_KEY serves HTTPS and WSS only, with a certificate made for the test', async () => {
    const tls = selfSigned();
    server = await startServer({ tls });
    const port = new URL(server.url).port;
    const ok = await request(httpsGet as typeof httpGet, `https://127.0.0.1:${port}/api/health`, { ca: tls.cert });
    expect(ok.status).toBe(200);
    expect(ok.headers['strict-transport-security']).toContain('max-age=');
    await expect(request(httpGet, `http://127.0.0.1:${port}/api/health`)).rejects.toThrow();
    // An unknown certificate is refused by a client that checks.
    await expect(request(httpsGet as typeof httpGet, `https://127.0.0.1:${port}/api/health`)).rejects.toThrow(/self-signed|certificate/);

    const socket = io(`https://127.0.0.1:${port}`, { transports: ['websocket'], forceNew: true, reconnection: false, ca: tls.cert } as never);
    await new Promise<void>((resolve, reject) => {
      socket.once('connect', resolve);
      socket.once('connect_error', reject);
    });
    const r = await joinFederation(socket as never, await createIdentity(), claims(10));
    expect(r.ok).toBe(true);
    socket.disconnect();
    await server.close();
    server = undefined;
  });

  it('sends security headers and allows only configured cross-site origins', async () => {
    server = await startServer({ allowedOrigins: ['https://lab.example'] });
    const plain = await request(httpGet, `${server.url}/api/health`);
    expect(plain.headers['x-content-type-options']).toBe('nosniff');
    expect(plain.headers['content-security-policy']).toContain("script-src 'self' 'wasm-unsafe-eval'");
    expect(plain.headers['x-powered-by']).toBeUndefined();
    expect(plain.headers['cross-origin-embedder-policy']).toBeUndefined();
    const allowed = await request(httpGet, `${server.url}/api/status`, { headers: { origin: 'https://lab.example' } });
    expect(allowed.headers['access-control-allow-origin']).toBe('https://lab.example');
    const other = await request(httpGet, `${server.url}/api/status`, { headers: { origin: 'https://evil.example' } });
    expect(other.headers['access-control-allow-origin']).toBeUndefined();

    const connectWith = (origin: string) =>
      new Promise<string>((resolve) => {
        const s = io(server!.url, { transports: ['websocket'], forceNew: true, reconnection: false, extraHeaders: { origin } });
        s.once('connect', () => {
          s.disconnect();
          resolve('connected');
        });
        s.once('connect_error', () => resolve('refused'));
      });
    expect(await connectWith('https://evil.example')).toBe('refused');
    expect(await connectWith('https://lab.example')).toBe('connected');
    expect(await connectWith(server.url)).toBe('connected');
  });

  it('with cross-origin isolation sends COOP/COEP and lets the wasm thread workers load their glue', async () => {
    const isolated = await startServer({ crossOriginIsolation: true });
    try {
      const res = await request(httpGet, `${isolated.url}/api/health`);
      expect(res.headers['cross-origin-opener-policy']).toBe('same-origin');
      expect(res.headers['cross-origin-embedder-policy']).toBe('require-corp');
      expect(res.headers['content-security-policy']).toContain("script-src 'self' 'wasm-unsafe-eval' blob:");
    } finally {
      await isolated.close();
    }
  });

  it('limits API requests per address', async () => {
    await server?.close();
    server = await startServer({ apiRequestsPerMinute: 20 });
    const statuses: number[] = [];
    for (let i = 0; i < 25; i++) statuses.push((await fetch(`${server.url}/api/health`)).status);
    expect(statuses.slice(0, 20).every((s) => s === 200)).toBe(true);
    const limited = await fetch(`${server.url}/api/health`);
    expect(limited.status).toBe(429);
    expect(((await limited.json()) as { error: string }).error).toContain('at most 20 a minute');
  });
});
