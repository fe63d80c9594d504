/**
 * Training kernels for TF.js 4.22's `wasm` backend, registered before it trains:
 *
 * - **Conv2DBackpropFilter** — the backend ships none (tensorflow/tfjs#8474), so it cannot train a
 *   CNN at all. The filter gradient is a Conv2D of the (padded) input with the output gradient,
 *   where batch and channels swap roles and the forward stride becomes the dilation:
 *
 *     dW[i,j,ci,co] = Σ_b,oh,ow  x_pad[b, i + oh·s, j + ow·s, ci] · dy[b, oh, ow, co]
 *                   = conv2d(x_padᵀ[ci,H,W,b], dyᵀ[oh,ow,b,co], stride 1, dilation s)[ci, i, j, co]
 *
 * - **Conv2DBackpropInput** at stride 1 — the backend's own kernel is a plain loop (415 of the
 *   975 ms of kernel time in 10 steps of the paper CNN, `scripts/bench.ts`); at stride 1 the input
 *   gradient is the "full" convolution of dy with the filter turned 180° and its channels swapped,
 *   which runs on XNNPACK's convolution:
 *
 *     dx[b,h,w,ci] = Σ_u,v,co dy_pad[b, h + u, w + v, co] · W[kh−1−u, kw−1−v, ci, co]
 *
 * - **BatchMatMul** with a transposed operand — the backend multiplies transposed operands in a
 *   plain loop at ~3.5 GFLOP/s against ~40 for XNNPACK's GEMM on the same machine; every dense
 *   layer's backward pass asks for xᵀ·dy and dy·Wᵀ. Transposing the smaller operand explicitly
 *   and multiplying untransposed costs a copy of it and is 4–12x faster at batch 10
 *   (the 3136×512 layer of the paper CNN: dW 14.0 → 1.2 ms, dx 9.3 → 1.3 ms).
 *
 * - **Identity** — the engine clones every tensor a gradient needs later (saveTensorsForBackwardMode),
 *   and the backend's Identity copies the data where the cpu and webgl backends share it: 34 copies
 *   a step for the 2NN, the weights among them, 14 % of its training time. Tensors never change
 *   in place, so the clone shares the data, as the backend's own Reshape does.
 *
 * - **MaxPoolGrad** — the backend's kernel took 1.1 of the 2.5 ms of a cnn-small step. In JS over the
 *   buffers wasm hands out synchronously it is one pass: each output's gradient goes to the first
 *   maximum of its window, as the reference cpu kernel does.
 *
 * Ops run inside a kernel are not taped; returning a Tensor hands it to the engine as the output.
 */
import * as tf from '@tensorflow/tfjs';

type Padding = 'valid' | 'same' | number | tf.backend_util.ExplicitPadding;

interface ConvAttrs {
  strides: number | [number, number];
  pad: Padding;
  dataFormat: 'NHWC' | 'NCHW';
  dimRoundingMode?: 'floor' | 'round' | 'ceil';
}

interface BackpropFilterAttrs extends ConvAttrs {
  filterShape: [number, number, number, number];
}

interface BackpropInputAttrs extends ConvAttrs {
  inputShape: [number, number, number, number];
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

/** The input gradient of a stride-1 NHWC conv2d as a forward conv2d; undefined for other convolutions. */
export function conv2dBackpropInputViaConv2d(dy: tf.Tensor4D, filter: tf.Tensor4D, attrs: BackpropInputAttrs): tf.Tensor4D | undefined {
  if (attrs.dataFormat === 'NCHW') return undefined;
  const info = tf.backend_util.computeConv2DInfo(attrs.inputShape, filter.shape, attrs.strides, 1, attrs.pad, attrs.dimRoundingMode, false, 'channelsLast');
  if (info.strideHeight !== 1 || info.strideWidth !== 1) return undefined;
  const [kh, kw] = filter.shape;
  const { top, left } = info.padInfo;
  const [, h, w] = attrs.inputShape;
  // dy_pad must be (h + kh − 1) × (w + kw − 1); a forward pad beyond the kernel never happens at stride 1 with 'same'/'valid'
  const padTop = kh - 1 - top;
  const padLeft = kw - 1 - left;
  const padBottom = h + kh - 1 - info.outHeight - padTop;
  const padRight = w + kw - 1 - info.outWidth - padLeft;
  if (padTop < 0 || padLeft < 0 || padBottom < 0 || padRight < 0) return undefined;
  return tf.tidy(() => {
    const padded = padTop || padLeft || padBottom || padRight ? tf.pad(dy, [[0, 0], [padTop, padBottom], [padLeft, padRight], [0, 0]]) : dy;
    const turned = tf.tensor4d(turnFilter(filter.dataSync() as Float32Array, filter.shape), [kh, kw, filter.shape[3], filter.shape[2]]);
    return tf.conv2d(padded, turned, 1, 'valid');
  });
}

/**
 * W[kh, kw, ci, co] turned 180° with its channels swapped: out[u, v, co, ci] = W[kh−1−u, kw−1−v, ci, co].
 * In JS: the filter is small and wasm memory reads synchronously, while tf.reverse and tf.gather
 * are per-element loops on wasm (1.2 ms for the paper CNN's 51,200-value filter, 0.1 ms here).
 */
export function turnFilter(w: Float32Array, [kh, kw, ci, co]: readonly number[]): Float32Array {
  const out = new Float32Array(w.length);
  for (let u = 0; u < kh!; u++) {
    for (let v = 0; v < kw!; v++) {
      const from = ((kh! - 1 - u) * kw! + (kw! - 1 - v)) * ci! * co!;
      const to = (u * kw! + v) * co! * ci!;
      for (let i = 0; i < ci!; i++) for (let o = 0; o < co!; o++) out[to + o * ci! + i] = w[from + i * co! + o]!;
    }
  }
  return out;
}

/** a·b (rank 2, or rank 3 with a batch) with either operand transposed, as one explicit transpose and an untransposed multiply. */
export function matMulUntransposed(a: tf.Tensor, b: tf.Tensor, transposeA: boolean, transposeB: boolean): tf.Tensor {
  const t = (x: tf.Tensor) => tf.transpose(x, x.rank === 3 ? [0, 2, 1] : [1, 0]);
  return tf.tidy(() => {
    if (transposeA && transposeB) return t(tf.matMul(b, a)); // aᵀ·bᵀ = (b·a)ᵀ
    if (transposeA) return tf.matMul(t(a), b);
    // a·bᵀ: transpose b, or compute (b·aᵀ)ᵀ, transposing a and the product — whichever moves fewer values
    const [m, k] = a.shape.slice(-2) as [number, number];
    const n = b.shape.at(-2) as number;
    return n * k <= m * k + m * n ? tf.matMul(a, t(b)) : t(tf.matMul(b, t(a)));
  });
}

interface PoolAttrs {
  filterSize: number | [number, number];
  strides: number | [number, number];
  pad: Padding;
  dimRoundingMode?: 'floor' | 'round' | 'ceil';
}

/** The gradient of an NHWC max pool: dy routed to the first maximum of each output's window. */
export function maxPoolGradValues(x: Float32Array, xShape: readonly number[], dy: Float32Array, attrs: PoolAttrs): Float32Array {
  const info = tf.backend_util.computePool2DInfo(xShape as [number, number, number, number], attrs.filterSize, attrs.strides, 1, attrs.pad, attrs.dimRoundingMode);
  const { batchSize, inHeight, inWidth, inChannels: channels, outHeight, outWidth, strideHeight, strideWidth, filterHeight, filterWidth } = info;
  const { top, left } = info.padInfo;
  const dx = new Float32Array(x.length);
  for (let b = 0; b < batchSize; b++) {
    for (let oh = 0; oh < outHeight; oh++) {
      const h0 = oh * strideHeight - top;
      const hFrom = Math.max(0, h0);
      const hTo = Math.min(inHeight, h0 + filterHeight);
      for (let ow = 0; ow < outWidth; ow++) {
        const w0 = ow * strideWidth - left;
        const wFrom = Math.max(0, w0);
        const wTo = Math.min(inWidth, w0 + filterWidth);
        const out = ((b * outHeight + oh) * outWidth + ow) * channels;
        for (let c = 0; c < channels; c++) {
          let best = -1;
          let max = Number.NEGATIVE_INFINITY;
          for (let h = hFrom; h < hTo; h++) {
            for (let w = wFrom; w < wTo; w++) {
              const at = ((b * inHeight + h) * inWidth + w) * channels + c;
              const v = x[at]!;
              if (v > max) {
                max = v;
                best = at;
              }
            }
          }
          if (best >= 0) dx[best] = dx[best]! + dy[out + c]!;
        }
      }
    }
  }
  return dx;
}

let registered = false;

/** Registers the kernels for `wasm` once (each one only where TF.js lacks it, or wraps its own). */
export function registerWasmTrainingKernels(): void {
  if (registered) return;
  registered = true;
  if (!tf.getKernel('Conv2DBackpropFilter', 'wasm')) {
    tf.registerKernel({
      kernelName: 'Conv2DBackpropFilter',
      backendName: 'wasm',
      kernelFunc: ({ inputs, attrs }) => {
        const { x, dy } = inputs as { x: tf.Tensor4D; dy: tf.Tensor4D };
        return conv2dBackpropFilterViaConv2d(x, dy, attrs as unknown as BackpropFilterAttrs) as unknown as tf.TensorInfo;
      },
    });
  }
  wrapKernel('Identity', (own) => ({ inputs, attrs, backend }) => {
    const { x } = inputs as { x: tf.TensorInfo };
    if (x.dtype === 'string') return own({ inputs, attrs, backend });
    (backend as unknown as { incRef(dataId: object): void }).incRef(x.dataId);
    return { dataId: x.dataId, shape: x.shape, dtype: x.dtype };
  });
  wrapKernel('MaxPoolGrad', () => ({ inputs, attrs }) => {
    const { dy, input } = inputs as { dy: tf.Tensor4D; input: tf.Tensor4D };
    return tf.tensor4d(maxPoolGradValues(input.dataSync() as Float32Array, input.shape, dy.dataSync() as Float32Array, attrs as unknown as PoolAttrs), input.shape) as unknown as tf.TensorInfo;
  });
  wrapKernel('Conv2DBackpropInput', (own) => ({ inputs, attrs, backend }) => {
    const { dy, filter } = inputs as { dy: tf.Tensor4D; filter: tf.Tensor4D };
    return (conv2dBackpropInputViaConv2d(dy, filter, attrs as unknown as BackpropInputAttrs) as unknown as tf.TensorInfo | undefined) ?? own({ inputs, attrs, backend });
  });
  wrapKernel('BatchMatMul', (own) => ({ inputs, attrs, backend }) => {
    const { transposeA, transposeB } = attrs as unknown as { transposeA: boolean; transposeB: boolean };
    if (!transposeA && !transposeB) return own({ inputs, attrs, backend });
    const { a, b } = inputs as { a: tf.Tensor; b: tf.Tensor };
    if (a.rank !== b.rank || a.rank < 2 || a.rank > 3) return own({ inputs, attrs, backend });
    return matMulUntransposed(a, b, transposeA, transposeB) as unknown as tf.TensorInfo;
  });
}

/** Replaces the wasm backend's kernel `name` with `wrap(its own kernel)`. */
function wrapKernel(name: string, wrap: (own: tf.KernelFunc) => tf.KernelFunc): void {
  const own = tf.getKernel(name, 'wasm');
  if (!own) return;
  tf.unregisterKernel(name, 'wasm');
  tf.registerKernel({ ...own, kernelFunc: wrap(own.kernelFunc) });
}
