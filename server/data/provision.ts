/**
 * Data provisioning — deliberately separate from the federation. In a real deployment devices
 * bring their own data; here a device asks once for its slice of MNIST (partition, seed, slice)
 * and keeps it in IndexedDB. The federation itself never sends or receives training data.
 */
import { Router } from 'express';
import { encodeDataset, gatherSamples } from '../../shared/dataset.ts';
import { corruptSamples, referenceOf, type QualityReference } from '../../shared/data-quality.ts';
import { deviceSlice, HELD_OUT_FRACTION, partition } from '../../shared/partition.ts';
import { describeIssues, sliceQuerySchema, type SliceQuery } from '../../shared/schemas.ts';
import type { MnistSplit } from './mnist.ts';

/** One device's slice in the binary form; `parts` is the partition of the whole training set. */
export function encodeSlice(train: MnistSplit, parts: readonly number[][], q: SliceQuery): Uint8Array {
  const slice = deviceSlice(parts[q.client] ?? [], { examples: q.examples, heldOut: HELD_OUT_FRACTION, seed: q.seed, client: q.client });
  const samples = gatherSamples(train.images, train.labels, slice.train);
  // corrupted on request (seeded by the slice), to measure the devices' data-quality checks: the training examples only
  return encodeDataset({ train: q.corrupt?.length ? corruptSamples(samples, q.corrupt, q.seed * 7919 + q.client) : samples, heldOut: gatherSamples(train.images, train.labels, slice.heldOut) });
}

export function provisioningRouter(train: MnistSplit): Router {
  const router = Router();
  const cache = new Map<string, number[][]>();
  // the reference a device's coherence is measured against: per-label mean images of the provisioning data (a curated or public set in a deployment)
  let reference: QualityReference | undefined;
  router.get('/api/data/reference', (_req, res) => {
    reference ??= referenceOf({ pixels: train.images, labels: train.labels });
    res.set('Cache-Control', 'public, max-age=3600').json(reference);
  });
  router.get('/api/data/slice', (req, res) => {
    const parsed = sliceQuerySchema.safeParse(req.query);
    if (!parsed.success) {
      res.status(400).json({ error: `data slice: ${describeIssues(parsed.error)}` });
      return;
    }
    const q = parsed.data;
    const key = `${q.partition}:${q.clients}:${q.seed}:${q.alpha}`; // the partition's; the corruption is applied per slice
    let parts = cache.get(key);
    if (!parts) {
      parts = partition(train.labels, { kind: q.partition, clients: q.clients, seed: q.seed, alpha: q.alpha });
      if (cache.size > 16) cache.clear();
      cache.set(key, parts);
    }
    const body = encodeSlice(train, parts, q);
    res.type('application/octet-stream').set('Cache-Control', 'no-store').send(Buffer.from(body.buffer, body.byteOffset, body.byteLength));
  });
  return router;
}
