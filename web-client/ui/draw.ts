/**
 * A drawing pad for one digit, and the step from what a person drew to what the model was trained
 * on: MNIST centres each digit's ink by its centre of mass in a 28×28 image, inside a 20×20 box,
 * white on black. `toMnist` is pure (it takes the canvas's RGBA pixels), so it is tested in Node.
 */

/** 784 values in 0..1 (ink = 1) from an RGBA image with dark ink on a light background; null when nothing is drawn. */
export function toMnist(rgba: Uint8ClampedArray, width: number, height: number): Float32Array | null {
  const ink = new Float32Array(width * height);
  let top = height, left = width, bottom = -1, right = -1;
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const i = (y * width + x) * 4;
      const v = (1 - (rgba[i]! + rgba[i + 1]! + rgba[i + 2]!) / 765) * (rgba[i + 3]! / 255);
      if (v < 0.1) continue;
      ink[y * width + x] = v;
      top = Math.min(top, y); bottom = Math.max(bottom, y); left = Math.min(left, x); right = Math.max(right, x);
    }
  }
  if (bottom < 0) return null;
  // scale the ink's box to fit 20×20 (keeping its shape), averaging the source pixels of each target pixel
  const boxW = right - left + 1, boxH = bottom - top + 1;
  const scale = 20 / Math.max(boxW, boxH);
  const w = Math.max(1, Math.round(boxW * scale)), h = Math.max(1, Math.round(boxH * scale));
  const small = new Float32Array(w * h);
  for (let ty = 0; ty < h; ty++) {
    for (let tx = 0; tx < w; tx++) {
      const y0 = top + Math.floor(ty / scale), y1 = Math.min(bottom + 1, top + Math.ceil((ty + 1) / scale));
      const x0 = left + Math.floor(tx / scale), x1 = Math.min(right + 1, left + Math.ceil((tx + 1) / scale));
      let sum = 0, n = 0;
      for (let y = y0; y < y1; y++) for (let x = x0; x < x1; x++) (sum += ink[y * width + x]!), n++;
      small[ty * w + tx] = n ? Math.min(1, (sum / n) * 1.5) : 0;
    }
  }
  // place it so that its centre of mass falls on the image's centre (14, 14)
  let mass = 0, cx = 0, cy = 0;
  for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) (mass += small[y * w + x]!), (cx += x * small[y * w + x]!), (cy += y * small[y * w + x]!);
  const dx = Math.round(14 - cx / mass), dy = Math.round(14 - cy / mass);
  const out = new Float32Array(784);
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) {
      const ox = x + dx, oy = y + dy;
      if (ox >= 0 && ox < 28 && oy >= 0 && oy < 28) out[oy * 28 + ox] = small[y * w + x]!;
    }
  }
  return out;
}

/** Makes a canvas a pad: a thick round pen under mouse, pen or touch; `onDrawn` after each stroke. */
export function drawingPad(canvas: HTMLCanvasElement, onDrawn: () => void): { clear(): void } {
  const ctx = canvas.getContext('2d', { willReadFrequently: true })!;
  const clear = () => {
    ctx.fillStyle = '#fff';
    ctx.fillRect(0, 0, canvas.width, canvas.height);
  };
  clear();
  let last: { x: number; y: number } | undefined;
  const at = (e: PointerEvent) => {
    const r = canvas.getBoundingClientRect();
    return { x: ((e.clientX - r.left) / r.width) * canvas.width, y: ((e.clientY - r.top) / r.height) * canvas.height };
  };
  canvas.addEventListener('pointerdown', (e) => {
    canvas.setPointerCapture(e.pointerId);
    last = at(e);
  });
  canvas.addEventListener('pointermove', (e) => {
    if (!last) return;
    const p = at(e);
    ctx.strokeStyle = '#111';
    ctx.lineWidth = canvas.width / 14;
    ctx.lineCap = 'round';
    ctx.beginPath();
    ctx.moveTo(last.x, last.y);
    ctx.lineTo(p.x, p.y);
    ctx.stroke();
    last = p;
  });
  const end = () => {
    if (!last) return;
    last = undefined;
    onDrawn();
  };
  canvas.addEventListener('pointerup', end);
  canvas.addEventListener('pointercancel', end);
  return { clear };
}
