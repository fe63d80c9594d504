/**
 * The model registry: each stored version as a record in the spirit of Kubeflow's metadata (name,
 * description, owner, framework, hyper-parameters, labels) with what federated learning adds —
 * parent and lineage, run and round, strategy and codec, privacy, the data it was trained on as
 * aggregates the devices declared (never their data), test metrics and the devices' own evaluation.
 * One implementation serves GET /api/models/:version, card.json and the TF.js download's metadata.
 */
import * as tf from '@tensorflow/tfjs';
import type { ModelCard } from '../shared/api.ts';
import { modelMetaSchema, publicConfig, type ModelMetaPatch } from '../shared/schemas.ts';
import { decodeWeights, totalSize } from '../shared/weights.ts';
import type { ModelMeta, ModelRecord, RoundRecord, Store } from './store/store.ts';

/** The record of one version (undefined: not stored). */
export async function modelCard(store: Store, version: number, known?: { model?: ModelRecord; weights?: Uint8Array }): Promise<ModelCard | undefined> {
  const [m, weights, models] = await Promise.all([known?.model ?? store.getModel(version), known?.weights ?? store.getModelWeights(version), store.listModels()]);
  if (!m || !weights) return undefined;
  const byVersion = new Map(models.map((x) => [x.version, x]));
  const rounds = new Map<number, Promise<RoundRecord[]>>();
  const roundsOf = (runId: number) => {
    let r = rounds.get(runId);
    if (!r) rounds.set(runId, (r = store.listRounds(runId)));
    return r;
  };
  const madeBy = async (v: ModelRecord) => (v.runId === null || v.round === 0 ? undefined : (await roundsOf(v.runId)).find((r) => r.status === 'completed' && r.modelVersion === v.version));
  const run = m.runId === null ? undefined : await store.getRun(m.runId);
  const produced = await madeBy(m);

  // the lineage: this version and its ancestors, across runs that started from a stored version
  const ancestors: number[] = [];
  const lineage = { rounds: 0, deviceRounds: 0, devices: new Set<string>(), examples: 0, labelDistribution: null as number[] | null };
  for (let v: ModelRecord | undefined = m; v; v = v.parentVersion === null ? undefined : byVersion.get(v.parentVersion)) {
    if (v !== m) ancestors.push(v.version);
    if (ancestors.length > models.length) break; // a cycle written by hand: stop
    const r = await madeBy(v);
    if (!r) continue;
    lineage.rounds++;
    lineage.deviceRounds += r.completed;
    for (const d of r.devices) lineage.devices.add(d.id);
    lineage.examples += r.devices.reduce((a, d) => a + d.numExamples, 0);
    if (r.labelDistribution) lineage.labelDistribution = r.labelDistribution.map((c, i) => c + (lineage.labelDistribution?.[i] ?? 0));
  }

  // the devices' evaluation of it: the held-out accuracy they measured as the next round of its run began
  const next = m.runId === null ? undefined : (await roundsOf(m.runId)).filter((r) => r.round === m.round + 1 && r.fairness).at(-1);
  const config = run ? publicConfig(run.config) : null;
  return {
    version,
    model: m.model,
    parameters: totalSize(decodeWeights(weights).specs),
    createdAt: m.createdAt,
    runId: m.runId,
    round: m.round,
    parentVersion: m.parentVersion,
    testAccuracy: m.testAccuracy,
    testLoss: m.testLoss,
    config,
    training: produced ? { devices: produced.completed, examples: produced.devices.reduce((a, d) => a + d.numExamples, 0), weight: produced.devices.some((d) => d.weight === null) ? null : produced.devices.reduce((a, d) => a + (d.weight ?? 0), 0) } : null,
    format: 'tfjs layers-model: model.json + weights.bin (float32, little-endian)',
    privacy: produced?.privacy ?? null,
    name: m.meta.name,
    description: m.meta.description,
    owner: m.meta.owner,
    labels: { ...(config?.labels ?? {}), ...m.meta.labels },
    framework: { name: 'TensorFlow.js', version: tf.version['tfjs-core'] },
    strategy: config?.strategy ?? null,
    aggregation: config?.aggregation ?? null,
    codec: config?.updateCodec ?? null,
    trainedBy: produced ? { devices: produced.completed, examples: produced.devices.reduce((a, d) => a + d.numExamples, 0), labelDistribution: produced.labelDistribution ?? null } : null,
    lineage: { rounds: lineage.rounds, deviceRounds: lineage.deviceRounds, devices: lineage.devices.size, examples: lineage.examples, labelDistribution: lineage.labelDistribution, ancestors },
    federatedEvaluation: next?.fairness ? { round: next.round, ...next.fairness } : null,
    children: models.filter((x) => x.parentVersion === version).map((x) => x.version),
  };
}

/** The admin's edit of a version's metadata: fields given replace the old (null clears one; labels replace all labels). */
export async function patchModelMeta(store: Store, version: number, body: unknown): Promise<{ ok: true; meta: ModelMeta } | { ok: false; status: 400 | 404; error: string; issues?: { field: string; message: string }[] }> {
  const parsed = modelMetaSchema.safeParse(body ?? {});
  if (!parsed.success) {
    const issues = parsed.error.issues.map((i) => ({ field: i.path.length ? i.path.join('.') : 'body', message: i.message }));
    return { ok: false, status: 400, error: `model metadata: ${issues.map((i) => `${i.field}: ${i.message}`).join('; ')}`, issues };
  }
  const m = await store.getModel(version);
  if (!m) return { ok: false, status: 404, error: `model ${version} not found` };
  const patch: ModelMetaPatch = parsed.data;
  const meta: ModelMeta = { ...m.meta, ...Object.fromEntries(Object.entries(patch).map(([k, v]) => [k, typeof v === 'string' && v === '' ? null : v])) };
  if (!(await store.setModelMeta(version, meta))) return { ok: false, status: 404, error: `model ${version} not found` };
  return { ok: true, meta };
}
