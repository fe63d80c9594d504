/** One digit through a model: the class probabilities of a 28×28 image (0..1 values, as training saw them). */
import * as tf from '@tensorflow/tfjs';

export function predictDigit(model: tf.LayersModel, pixels: Float32Array): number[] {
  if (pixels.length !== 784) throw new RangeError(`a digit is 784 pixels, got ${pixels.length}`);
  return tf.tidy(() => Array.from((model.predict(tf.tensor4d(pixels, [1, 28, 28, 1])) as tf.Tensor2D).dataSync()));
}
