/** A simulated device's training samples, corrupted as it was asked: the same in its worker and for its hello's data-quality scores. */
import { corruptSamples, type Corruption } from '../../shared/data-quality.ts';
import { gatherSamples, type Samples } from '../../shared/dataset.ts';

export function simDeviceSamples(train: { images: Uint8Array; labels: Uint8Array }, d: { train: ArrayLike<number>; slot: number; corrupt?: Corruption[] }): Samples {
  const samples = gatherSamples(train.images, train.labels, d.train);
  return d.corrupt ? corruptSamples(samples, d.corrupt, d.slot * 7919 + 1) : samples;
}
