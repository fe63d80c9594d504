/**
 * `simulate:node --checkpoint FILE`: a run killed mid-way (SIGKILL, as a time limit or a crash does)
 * continues from its last completed round when the same command runs again, and ends with the very
 * model an uncut run ends with.
 */
import { execFile, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { afterAll, describe, expect, it } from 'vitest';
import { loadMnist } from '../server/data/mnist.ts';
import { runSimulation } from '../server/sim/simulation.ts';
import { parseSimArgs, rawArgs, simulationOptions } from '../scripts/lib/sim-args.ts';

const dir = mkdtempSync(path.join(tmpdir(), 'fl-checkpoint-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const argv = ['--model', 'mlp', '--clients', '10', '--fraction', '0.3', '--rounds', '6', '--examples', '60', '--seed', '5', '--workers', '1'];
const script = (extra: string[]) => [process.execPath, ['--import', 'tsx', 'scripts/simulate-node.ts', ...argv, ...extra]] as const;
const roundsIn = (file: string): number[] => (existsSync(file) ? (JSON.parse(readFileSync(file, 'utf8')) as { rounds: { round: number }[] }).rounds.map((r) => r.round) : []);

describe('simulate:node --checkpoint', () => {
  it('continues a killed run from its last completed round, to the model an uncut run reaches', async () => {
    const checkpoint = path.join(dir, 'runs', 'run.sqlite'); // a folder that does not exist yet
    const json = path.join(dir, 'run.json');
    const [node, args] = script(['--checkpoint', checkpoint, '--json', json]);
    // first process: killed once it has reported two rounds
    const first = spawn(node, args, { stdio: 'ignore' });
    const exited = new Promise((resolve) => first.on('exit', resolve));
    const deadline = Date.now() + 90_000;
    while (roundsIn(json).length < 2 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
    first.kill('SIGKILL');
    await exited;
    const before = roundsIn(json);
    expect(before.length).toBeGreaterThanOrEqual(2);
    expect(before.length).toBeLessThan(6); // it was cut short

    // the same command again: the rounds already done are reported first, the rest trained
    const { stdout } = await promisify(execFile)(node, args, { timeout: 120_000 });
    expect(stdout).toContain('done:');
    const resumed = JSON.parse(readFileSync(json, 'utf8')) as { status: string; rounds: { round: number; testAccuracy: number }[]; finalModelSha256: string };
    expect(resumed.rounds.map((r) => r.round)).toEqual([1, 2, 3, 4, 5, 6]);

    const uncut = await runSimulation(simulationOptions(parseSimArgs(rawArgs(argv))), loadMnist());
    expect(resumed.finalModelSha256).toBe(uncut.finalModelSha256);
    expect(resumed.rounds.map((r) => r.testAccuracy)).toEqual(uncut.rounds.map((r) => r.testAccuracy));

    // a finished run is not started again over itself, and other options are refused
    const again = await promisify(execFile)(node, args, { timeout: 60_000 }).then(() => '', (err: { stderr: string }) => err.stderr);
    expect(again).toContain('holds a run that already ended');
  }, 300_000);

  it('refuses to continue a run with other options', async () => {
    const checkpoint = path.join(dir, 'other.sqlite');
    const [node, args] = script(['--checkpoint', checkpoint, '--json', path.join(dir, 'other.json')]);
    const first = spawn(node, args, { stdio: 'ignore' });
    const exited = new Promise((resolve) => first.on('exit', resolve));
    const deadline = Date.now() + 90_000;
    while (roundsIn(path.join(dir, 'other.json')).length < 1 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
    first.kill('SIGKILL');
    await exited;
    const [, changed] = script(['--checkpoint', checkpoint, '--json', path.join(dir, 'other.json'), '--lr', '0.05']);
    const err = await promisify(execFile)(node, changed, { timeout: 60_000 }).then(() => '', (e: { stderr: string }) => e.stderr);
    expect(err).toContain('holds a run with other options');
  }, 200_000);
});
