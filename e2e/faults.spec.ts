/**
 * `npm run simulate` with faults, as a user runs it (a short version): real Chromium tabs that close
 * mid-round and come back, stay silent or answer late; the run still completes and learns.
 */
import { spawn } from 'node:child_process';
import { expect, test } from './fixtures.ts';

test('the browser simulation completes a run through dropped, rejoining, silent and late tabs', async () => {
  test.setTimeout(6 * 60_000);
  const args = ['--import', 'tsx', 'scripts/simulate.ts', '--tabs', '4', '--rounds', '2', '--examples', '200', '--drop', '0.2', '--silent', '0.2', '--late', '0.2', '--rejoin', '--deadline', '8000', '--fault-seed', '1'];
  const child = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr.on('data', (d: Buffer) => (out += d.toString()));
  const timer = setTimeout(() => child.kill('SIGKILL'), 5 * 60_000); // the command stops by itself; this is a safety net
  const code = await new Promise<number | null>((resolve) => child.once('exit', resolve));
  clearTimeout(timer);
  console.log(out);
  expect(code, out).toBe(0);
  expect(out).toMatch(/run done: completed 2 rounds/);
  const injected = /injected: (\d+) tabs closed mid-round \((\d+) came back\), (\d+) silent and (\d+) late answers/.exec(out);
  expect(injected, out).not.toBeNull();
  const [closed, back, silent, late] = injected!.slice(1).map(Number) as [number, number, number, number];
  expect(closed + silent + late).toBeGreaterThan(0);
  expect(back).toBe(closed);
  // every late answer to a completed round counts in its record (a failed attempt is recorded when it fails)
  const [, sentLate, countedLate] = /completed rounds: the open tabs sent (\d+) late answers, the records count (\d+)/.exec(out)!.map(Number) as [number, number, number];
  expect(countedLate).toBeGreaterThanOrEqual(sentLate);
  expect(late).toBeGreaterThan(0); // fault seed 1 draws late answers: the check above has something to count
  const accuracies = /test accuracy ([\d.]+) → ([\d.]+)/.exec(out);
  expect(Number(accuracies![2])).toBeGreaterThan(Number(accuracies![1]));
});
