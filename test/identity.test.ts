/**
 * Devices prove who they are: an id derives from a key pair, and every connection signs a fresh
 * challenge. A connection that claims an id without the key is refused with IDENTITY, and the real
 * device keeps its connection and its round.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createIdentity, deviceIdOf, signHello, verifyHello } from '../shared/identity.ts';
import { claims, connect, join, launch, runEnded, startServer, testDevice, until, useWasm, type TestDevice, type TestServer } from './support/server.ts';

describe('device identity', () => {
  it('derives the id from the public key and verifies a signed challenge, once and for this id only', async () => {
    const a = await createIdentity();
    const b = await createIdentity();
    expect(a.deviceId).toMatch(/^dev-[A-Za-z0-9_-]{22}$/);
    expect(a.deviceId).toBe(await deviceIdOf(a.publicKey));
    expect(a.deviceId).not.toBe(b.deviceId);
    const challenge = crypto.getRandomValues(new Uint8Array(32));
    const signature = await signHello(a, challenge);
    expect(await verifyHello(a.deviceId, a.publicKey, signature, challenge)).toBeUndefined();
    // another device's id with one's own key
    expect(await verifyHello(b.deviceId, a.publicKey, signature, challenge)).toBe(`the id ${b.deviceId} does not belong to the public key presented`);
    // the right key, a signature of another challenge (a replay)
    expect(await verifyHello(a.deviceId, a.publicKey, signature, crypto.getRandomValues(new Uint8Array(32)))).toBe('the signature does not match the challenge of this connection');
    // the right key, someone else's signature
    expect(await verifyHello(a.deviceId, a.publicKey, await signHello(b, challenge), challenge)).toBe('the signature does not match the challenge of this connection');
    // not a point on the curve
    const garbage = new Uint8Array(65).fill(7);
    expect(await verifyHello(await deviceIdOf(garbage), garbage, signature, challenge)).toBe('the public key is not a valid P-256 point');
  });

  it('keeps the private key out of reach', async () => {
    const a = await createIdentity();
    expect(a.keys.privateKey.extractable).toBe(false);
    await expect(crypto.subtle.exportKey('pkcs8', a.keys.privateKey)).rejects.toThrow();
  });
});

describe('a hijack attempt against the real server', () => {
  let server: TestServer;
  let real: TestDevice;
  beforeAll(async () => {
    await useWasm();
    server = await startServer({ evalLimit: 200 });
  });
  afterAll(async () => {
    await real?.dispose();
    await server.close();
  });

  it('is refused with IDENTITY while the real device trains on, and a reload of the real device takes over', async () => {
    let attacked!: () => void;
    const attackDone = new Promise<void>((r) => (attacked = r));
    let attacking!: () => void;
    const roundStarted = new Promise<void>((r) => (attacking = r));
    // The real device holds its update until the attacks are over, so they happen mid-round.
    real = await testDevice(server.url, 0, {
      examples: 60,
      beforeSubmit: async (s) => {
        attacking();
        await attackDone;
        return s;
      },
    });
    await real.join();
    const victim = real.identity;
    const runId = await launch(server, { rounds: 1, clientsPerRound: 1, minUpdates: 1, overSelect: 1, roundTimeoutMs: 60_000 });
    await roundStarted;

    const attacker = await connect(server.url);
    const own = await createIdentity();
    const hello = (extra: Record<string, unknown>) => attacker.emitWithAck('device:hello', { ...claims(100), deviceId: victim.deviceId, ...extra } as never);
    // 1. The victim's id with the attacker's own key and a valid signature of its own.
    const c1 = await attacker.emitWithAck('device:challenge');
    const r1 = await hello({ publicKey: own.publicKey, signature: await signHello({ ...own, deviceId: victim.deviceId }, new Uint8Array(c1.ok ? c1.data.challenge : [])) });
    expect(r1).toMatchObject({ ok: false, error: { code: 'IDENTITY', message: expect.stringContaining('does not belong to the public key presented') } });
    // 2. The victim's public key (public, after all) with a signature it cannot make.
    const c2 = await attacker.emitWithAck('device:challenge');
    const r2 = await hello({ publicKey: victim.publicKey, signature: await signHello(own, new Uint8Array(c2.ok ? c2.data.challenge : [])) });
    expect(r2).toMatchObject({ ok: false, error: { code: 'IDENTITY', message: expect.stringContaining('the signature does not match') } });
    // 3. No challenge asked for: nothing to verify against.
    const r3 = await hello({ publicKey: victim.publicKey, signature: new Uint8Array(64) });
    expect(r3).toMatchObject({ ok: false, error: { code: 'IDENTITY', message: expect.stringContaining('ask for a challenge') } });
    attacker.disconnect();

    // The real device was never disturbed: still connected, still selected, still in its round.
    expect(real.client.snapshot.connection).toBe('connected');
    expect(server.app.federation.status().round).toMatchObject({ selected: 1, dropped: 0 });
    attacked();
    const run = await runEnded(server, runId, 60_000);
    expect(run.status, run.reason ?? '').toBe('done');
    expect(server.db.listRounds(runId)[0]).toMatchObject({ completed: 1, devices: [expect.objectContaining({ id: victim.deviceId })] });
    await until(() => real.client.snapshot.history[0]?.outcome === 'counted' || undefined, 5_000, 'the real device to see its update counted');

    // A reload proves the same key: the new connection takes over, and the old one is told why.
    const errors: string[] = [];
    const reload = await connect(server.url);
    const closedOld = new Promise<void>((r) => {
      const check = setInterval(() => {
        if (real.client.snapshot.connection !== 'connected') {
          clearInterval(check);
          r();
        }
      }, 20);
    });
    real.client.subscribe((s) => s.error && errors.push(s.error));
    await join(reload, 60, victim);
    await closedOld;
    expect(errors.some((e) => e.startsWith('SUPERSEDED'))).toBe(true);
    expect(server.app.federation.listDevices().map((d) => d.id)).toEqual([victim.deviceId]);
    reload.disconnect();
  }, 90_000);
});
