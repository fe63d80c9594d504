/**
 * Device identity in a real tab: a connection that claims a training tab's id without its key is
 * refused with IDENTITY, and the tab trains on, its update counted.
 */
import { io } from 'socket.io-client';
import type { RoundRecord } from '../shared/api.ts';
import { createIdentity, signHello } from '../shared/identity.ts';
import type { ClientToServerEvents, ServerToClientEvents } from '../shared/protocol.ts';
import type { Socket } from 'socket.io-client';
import { expect, test } from './fixtures.ts';

test('a connection claiming a training tab\'s id is refused with IDENTITY; the tab trains on and its update counts', async ({ openDevices, admin, baseURL }) => {
  test.setTimeout(4 * 60_000);
  const [tab] = await openDevices([{ clients: 1, client: 0, examples: 600, backend: 'wasm' }]);
  const victim = (await tab!.page.evaluate(() => window.__fl.deviceId)) as string;
  expect(victim).toMatch(/^dev-/);
  // the paper CNN: a round long enough to attack in the middle of it
  const created = await admin.post('/api/runs', { data: { model: 'cnn', rounds: 1, clientsPerRound: 1, minUpdates: 1, overSelect: 1, localEpochs: 1, batchSize: 10, roundTimeoutMs: 120_000 } });
  expect(created.status()).toBe(201);
  const { id } = (await created.json()) as { id: number };
  await tab!.page.waitForFunction(() => window.__fl.snapshot?.state === 'training', undefined, { timeout: 120_000 });

  const attacker: Socket<ServerToClientEvents, ClientToServerEvents> = io(baseURL!, { transports: ['websocket'], forceNew: true, reconnection: false });
  try {
    const own = await createIdentity();
    const claims = { backend: 'wasm' as const, backendReason: 'attack', examples: 600, heldOut: 20, labelHistogram: new Array(10).fill(60) };
    // the tab's id, proven with another key
    const issued = await attacker.emitWithAck('device:challenge');
    if (!issued.ok) throw new Error(issued.error.message);
    const forged = await attacker.emitWithAck('device:hello', { ...claims, deviceId: victim, publicKey: own.publicKey, signature: await signHello({ ...own, deviceId: victim }, new Uint8Array(issued.data.challenge)) });
    expect(forged).toMatchObject({ ok: false, error: { code: 'IDENTITY' } });
    // the tab's id with no proof at all
    const bare = await attacker.emitWithAck('device:hello', { ...claims, deviceId: victim, publicKey: own.publicKey, signature: new Uint8Array(64) });
    expect(bare).toMatchObject({ ok: false, error: { code: 'IDENTITY' } });
  } finally {
    attacker.disconnect();
  }

  // the tab was not disturbed: still connected, and its update is the round's
  expect(await tab!.page.evaluate(() => window.__fl.snapshot?.connection)).toBe('connected');
  await expect.poll(async () => ((await (await admin.get(`/api/runs/${id}`)).json()) as { status: string }).status, { timeout: 180_000 }).toBe('done');
  const [round] = (await (await admin.get(`/api/runs/${id}/rounds`)).json()) as RoundRecord[];
  expect(round).toMatchObject({ status: 'completed', completed: 1, devices: [expect.objectContaining({ id: victim })] });
  await tab!.page.waitForFunction(() => window.__fl.snapshot?.history.at(-1)?.outcome === 'counted', undefined, { timeout: 30_000 });
  expect(await tab!.page.evaluate(() => window.__fl.snapshot?.error)).toBeNull();
});
