/**
 * TF.js 4.22's `wasm` backend ships no Conv2DBackpropFilter kernel (tensorflow/tfjs#8474), so it
 * cannot train a CNN. This registers one built from kernels the backend has: the filter gradient
 * is a Conv2D of the (padded) input with the output gradient, where batch and channels swap roles
 * and the forward stride becomes the dilation:
 *
 *   dW[i,j,ci,co] = Σ_b,oh,ow  x_pad[b, i + oh·s, j + ow·s, ci] · dy[b, oh, ow, co]
 *                 = conv2d(x_padᵀ[ci,H,W,b], dyᵀ[oh,ow,b,co], stride 1, dilation s)[ci, i, j, co]
 */
import * as tf from '@tensorflow/tfjs';

interface BackpropFilterAttrs {
  strides: number | [number, number];
  pad: 'valid' | 'same' | number | tf.backend_util.ExplicitPadding;
  dataFormat: 'NHWC' | 'NCHW';
  dimRoundingMode?: 'floor' | 'round' | 'ceil';
  filterShape: [number, number, number, number];
}

export function conv2dBackpropFilterViaConv2d(x: tf.Tensor4D, dy: tf.Tensor4D, attrs: BackpropFilterAttrs): tf.Tensor4D {
  if (attrs.dataFormat === 'NCHW') throw new Error('Conv2DBackpropFilter (wasm): only NHWC is supported');
  const [kh, kw] = attrs.filterShape;
  return tf.tidy(() => {
    const info = tf.backend_util.computeConv2DInfo(x.shape, attrs.filterShape, attrs.strides, 1, attrs.pad, attrs.dimRoundingMode, false, 'channelsLast');
    const { top, bottom, left, right } = info.padInfo;
    const padded = top || bottom || left || right ? tf.pad(x, [[0, 0], [top, Math.max(0, bottom)], [left, Math.max(0, right)], [0, 0]]) : x;
    const xT = tf.transpose(padded, [3, 1, 2, 0]) as tf.Tensor4D;
    const dyT = tf.transpose(dy, [1, 2, 0, 3]) as tf.Tensor4D;
    const out = tf.conv2d(xT, dyT, 1, 'valid', 'NHWC', [info.strideHeight, info.strideWidth]);
    const cropped = tf.slice(out, [0, 0, 0, 0], [-1, kh, kw, -1]);
    return tf.transpose(cropped, [1, 2, 0, 3]) as tf.Tensor4D;
  });
}

let registered = false;

/** Registers the kernel for `wasm` once; a no-op when TF.js already has one. */
export function registerWasmTrainingKernels(): void {
  if (registered || tf.getKernel('Conv2DBackpropFilter', 'wasm')) return;
  tf.registerKernel({
    kernelName: 'Conv2DBackpropFilter',
    backendName: 'wasm',
    kernelFunc: ({ inputs, attrs }) => {
      const { x, dy } = inputs as { x: tf.Tensor4D; dy: tf.Tensor4D };
      // Ops run inside a kernel are not taped; returning a Tensor hands it to the engine as the output.
      return conv2dBackpropFilterViaConv2d(x, dy, attrs as unknown as BackpropFilterAttrs) as unknown as tf.TensorInfo;
    },
  });
  registered = true;
}
