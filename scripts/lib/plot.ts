/**
 * Line charts as SVG (no dependency), and as PNG through the machine's Chromium when asked.
 */
import { writeFileSync } from 'node:fs';

export interface Series {
  label: string;
  points: { x: number; y: number }[];
  /** drawn thin and grey behind the others, without a legend entry (e.g. the trials a tuner stopped) */
  muted?: boolean;
}

export interface ChartSpec {
  title: string;
  xLabel: string;
  yLabel: string;
  series: Series[];
  /** log-scale x axis (bytes) */
  logX?: boolean;
  yMin?: number;
  yMax?: number;
  /** a horizontal reference line, e.g. the target accuracy */
  hLine?: { y: number; label: string };
  /** whole-number x ticks (rounds) */
  integerX?: boolean;
}

const COLORS = ['#2563eb', '#dc2626', '#16a34a', '#9333ea', '#ea580c', '#0891b2', '#4b5563', '#ca8a04'];
const esc = (s: string) => s.replace(/[<>&"]/g, (c) => `&#${c.charCodeAt(0)};`);

function ticks(min: number, max: number, n = 6, integer = false): number[] {
  const span = max - min || 1;
  const raw = Math.max(span / n, integer ? 1 : 0);
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((s) => s >= raw) ?? raw;
  const out: number[] = [];
  for (let v = Math.ceil(min / step) * step; v <= max + 1e-9; v += step) out.push(Number(v.toPrecision(10)));
  return out;
}

/** wide enough for the legend's longest label (12 px sans-serif: ~6.6 px a character) */
export function chartWidth(spec: ChartSpec, width = 800): number {
  const longest = Math.max(0, ...spec.series.filter((s) => !s.muted).map((s) => s.label.length));
  return width + Math.max(0, Math.ceil(34 + 6.6 * longest) - 180);
}

export function lineChartSvg(spec: ChartSpec, width = chartWidth(spec), height = 480): string {
  const m = { l: 70, r: 180 + (width - 800), t: 40, b: 55 };
  const w = width - m.l - m.r;
  const h = height - m.t - m.b;
  const all = spec.series.flatMap((s) => s.points).filter((p) => Number.isFinite(p.x) && Number.isFinite(p.y));
  const fx = (v: number) => (spec.logX ? Math.log10(Math.max(v, 1e-12)) : v);
  let x0 = Math.min(...all.map((p) => fx(p.x)));
  let x1 = Math.max(...all.map((p) => fx(p.x)));
  if (!(x1 > x0)) [x0, x1] = [x0 - 1, x0 + 1];
  const y0 = spec.yMin ?? Math.min(...all.map((p) => p.y));
  const y1 = spec.yMax ?? Math.max(...all.map((p) => p.y));
  const sx = (v: number) => m.l + ((fx(v) - x0) / (x1 - x0)) * w;
  const sy = (v: number) => m.t + h - ((Math.min(Math.max(v, y0), y1) - y0) / (y1 - y0 || 1)) * h;
  const parts: string[] = [];
  parts.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" font-family="sans-serif" font-size="12">`);
  parts.push(`<rect width="100%" height="100%" fill="#fff"/>`);
  parts.push(`<text x="${m.l}" y="24" font-size="15" font-weight="bold">${esc(spec.title)}</text>`);
  const xt = spec.logX ? ticks(Math.floor(x0), Math.ceil(x1), Math.ceil(x1) - Math.floor(x0)).map((e) => 10 ** e) : ticks(x0, x1, 6, spec.integerX);
  for (const t of xt) {
    if (fx(t) < x0 - 1e-9 || fx(t) > x1 + 1e-9) continue;
    const x = sx(t);
    const label = spec.logX ? (t >= 1e6 ? `${t / 1e6} M` : t >= 1e3 ? `${t / 1e3} k` : String(t)) : String(t);
    parts.push(`<line x1="${x}" y1="${m.t}" x2="${x}" y2="${m.t + h}" stroke="#eee"/><text x="${x}" y="${m.t + h + 18}" text-anchor="middle">${label}</text>`);
  }
  for (const t of ticks(y0, y1)) {
    const y = sy(t);
    parts.push(`<line x1="${m.l}" y1="${y}" x2="${m.l + w}" y2="${y}" stroke="#eee"/><text x="${m.l - 8}" y="${y + 4}" text-anchor="end">${t}</text>`);
  }
  parts.push(`<rect x="${m.l}" y="${m.t}" width="${w}" height="${h}" fill="none" stroke="#999"/>`);
  parts.push(`<text x="${m.l + w / 2}" y="${height - 12}" text-anchor="middle">${esc(spec.xLabel)}</text>`);
  parts.push(`<text transform="translate(16 ${m.t + h / 2}) rotate(-90)" text-anchor="middle">${esc(spec.yLabel)}</text>`);
  if (spec.hLine) {
    const y = sy(spec.hLine.y);
    parts.push(`<line x1="${m.l}" y1="${y}" x2="${m.l + w}" y2="${y}" stroke="#888" stroke-dasharray="5 4"/><text x="${m.l + w - 4}" y="${y - 4}" text-anchor="end" fill="#666">${esc(spec.hLine.label)}</text>`);
  }
  const line = (pts: { x: number; y: number }[]) => pts.map((p) => `${sx(p.x).toFixed(1)},${sy(p.y).toFixed(1)}`).join(' ');
  for (const s of spec.series.filter((s) => s.muted)) {
    const pts = s.points.filter((p) => Number.isFinite(p.x) && Number.isFinite(p.y));
    if (pts.length > 1) parts.push(`<polyline fill="none" stroke="#c8c8c8" stroke-width="1" points="${line(pts)}"/>`);
  }
  spec.series.filter((s) => !s.muted).forEach((s, i) => {
    const color = COLORS[i % COLORS.length] as string;
    const pts = s.points.filter((p) => Number.isFinite(p.x) && Number.isFinite(p.y));
    if (pts.length > 1) parts.push(`<polyline fill="none" stroke="${color}" stroke-width="2" points="${line(pts)}"/>`);
    for (const p of pts.length <= 40 ? pts : []) parts.push(`<circle cx="${sx(p.x).toFixed(1)}" cy="${sy(p.y).toFixed(1)}" r="3" fill="${color}"/>`);
    const ly = m.t + 10 + i * 20;
    parts.push(`<rect x="${m.l + w + 14}" y="${ly - 9}" width="14" height="4" fill="${color}"/><text x="${m.l + w + 34}" y="${ly - 3}">${esc(s.label)}</text>`);
  });
  parts.push('</svg>');
  return parts.join('\n');
}

/** Writes `file` (.png) by rendering the SVG in headless Chromium, and the SVG beside it. */
export async function writeChart(file: string, spec: ChartSpec): Promise<string[]> {
  const svg = lineChartSvg(spec);
  const svgFile = file.replace(/\.png$/i, '') + '.svg';
  writeFileSync(svgFile, svg);
  if (!/\.png$/i.test(file)) return [svgFile];
  const { launchBrowser } = await import('./harness.ts');
  const browser = await launchBrowser();
  try {
    const width = chartWidth(spec);
    const page = await browser.newPage({ viewport: { width, height: 480 } });
    await page.setContent(`<html><body style="margin:0">${svg}</body></html>`);
    await page.screenshot({ path: file, clip: { x: 0, y: 0, width, height: 480 } });
  } finally {
    await browser.close();
  }
  return [svgFile, file];
}

/** Writes rows of 28×28 images in [0, 1] (clamped) as a PNG (rendered by Chromium) and its SVG. */
export async function writeImageGrid(file: string, rows: { label: string; images: (Float32Array | undefined)[] }[], cell = 3): Promise<string[]> {
  const side = 28 * cell;
  const gap = 6;
  const labelWidth = 230;
  const width = labelWidth + Math.max(...rows.map((r) => r.images.length)) * (side + gap);
  const height = rows.length * (side + gap) + gap;
  const parts = [`<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" font-family="sans-serif" font-size="13"><rect width="100%" height="100%" fill="#fff"/>`];
  rows.forEach((row, r) => {
    const y = gap + r * (side + gap);
    parts.push(`<text x="8" y="${y + side / 2 + 4}">${esc(row.label)}</text>`);
    row.images.forEach((img, c) => {
      const x = labelWidth + c * (side + gap);
      parts.push(`<rect x="${x}" y="${y}" width="${side}" height="${side}" fill="#000"/>`);
      if (!img) return;
      for (let p = 0; p < 784; p++) {
        const v = Math.round(255 * Math.min(1, Math.max(0, img[p]!)));
        if (v > 0) parts.push(`<rect x="${x + (p % 28) * cell}" y="${y + Math.floor(p / 28) * cell}" width="${cell}" height="${cell}" fill="rgb(${v},${v},${v})"/>`);
      }
    });
  });
  parts.push('</svg>');
  const svg = parts.join('');
  const svgFile = file.replace(/\.png$/i, '') + '.svg';
  writeFileSync(svgFile, svg);
  const { launchBrowser } = await import('./harness.ts');
  const browser = await launchBrowser();
  try {
    const page = await browser.newPage({ viewport: { width, height } });
    await page.setContent(`<html><body style="margin:0">${svg}</body></html>`);
    await page.screenshot({ path: file, clip: { x: 0, y: 0, width, height } });
  } finally {
    await browser.close();
  }
  return [svgFile, file];
}
