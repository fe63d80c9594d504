/**
 * Saved run presets: configurations found by `npm run tune` (or written by hand), one JSON file each
 * in a directory (PRESETS_DIR, default ./presets), offered by the dashboard's launch form beside its
 * built-in presets. A file that does not hold a valid preset is skipped, with the reason, and never
 * changed.
 */
import { mkdirSync, readdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { z } from 'zod';
import { describeIssues, validateRunConfig } from '../shared/schemas.ts';

export const PRESET_NAME = /^[a-z0-9][a-z0-9-]{0,63}$/;

export const presetSchema = z.strictObject({
  /** also the file's name (<name>.json) */
  name: z.string().regex(PRESET_NAME, 'a preset name is 1–64 lower-case letters, digits and dashes'),
  label: z.string().trim().min(1).max(120),
  hint: z.string().max(2000).default(''),
  /** run config fields (RunConfigInput): what the dashboard fills the form with */
  config: z.record(z.string(), z.unknown()),
  /** how it was found: the tuner's command, objective and measurements (shown, not interpreted) */
  tuned: z.record(z.string(), z.unknown()).optional(),
});
export type Preset = z.infer<typeof presetSchema>;

/** A preset, checked: its fields and its config as the run config's rules take it. */
export function checkPreset(input: unknown): { ok: true; preset: Preset } | { ok: false; message: string } {
  const parsed = presetSchema.safeParse(input);
  if (!parsed.success) return { ok: false, message: describeIssues(parsed.error) };
  const config = validateRunConfig(parsed.data.config);
  if (!config.ok) return { ok: false, message: `config: ${config.message}` };
  return { ok: true, preset: parsed.data };
}

/** The presets in `dir` by name, and the files skipped with why (a missing directory holds none). */
export function listPresets(dir: string): { presets: Preset[]; skipped: { file: string; reason: string }[] } {
  let files: string[];
  try {
    files = readdirSync(dir).filter((f) => f.endsWith('.json')).sort();
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return { presets: [], skipped: [] };
    throw err;
  }
  const presets: Preset[] = [];
  const skipped: { file: string; reason: string }[] = [];
  for (const file of files) {
    let json: unknown;
    try {
      json = JSON.parse(readFileSync(path.join(dir, file), 'utf8'));
    } catch (err) {
      skipped.push({ file, reason: `not JSON: ${err instanceof Error ? err.message : String(err)}` });
      continue;
    }
    const checked = checkPreset(json);
    if (!checked.ok) skipped.push({ file, reason: checked.message });
    else if (`${checked.preset.name}.json` !== file) skipped.push({ file, reason: `its name "${checked.preset.name}" is not its file's (${file})` });
    else presets.push(checked.preset);
  }
  return { presets, skipped };
}

/** Writes a preset as <dir>/<name>.json (whole or not at all: a temporary file renamed); returns the path. */
export function savePreset(dir: string, input: unknown): string {
  const checked = checkPreset(input);
  if (!checked.ok) throw new RangeError(`preset: ${checked.message}`);
  mkdirSync(dir, { recursive: true });
  const file = path.join(dir, `${checked.preset.name}.json`);
  const tmp = `${file}.${process.pid}.tmp`;
  writeFileSync(tmp, JSON.stringify(checked.preset, null, 2) + '\n');
  renameSync(tmp, file);
  return file;
}
