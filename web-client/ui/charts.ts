/** Chart.js set-up shared by both pages. */
import { Chart, registerables, type ChartConfiguration } from 'chart.js';

Chart.register(...registerables);
Chart.defaults.animation = false;
Chart.defaults.maintainAspectRatio = false;
Chart.defaults.font.family = 'system-ui, sans-serif';

export function lineChart(canvas: HTMLCanvasElement, labels: string[], datasets: { label: string; color: string }[], yMax?: number): Chart<'line'> {
  const config: ChartConfiguration<'line'> = {
    type: 'line',
    data: { labels, datasets: datasets.map((d) => ({ label: d.label, data: [], borderColor: d.color, backgroundColor: d.color, tension: 0.2, spanGaps: true })) },
    options: { scales: { y: { min: 0, ...(yMax !== undefined ? { max: yMax } : {}) } }, plugins: { legend: { position: 'bottom' } } },
  };
  return new Chart(canvas, config);
}

export function barChart(canvas: HTMLCanvasElement, labels: string[], label: string, color: string): Chart<'bar'> {
  return new Chart(canvas, { type: 'bar', data: { labels, datasets: [{ label, data: [], backgroundColor: color }] }, options: { plugins: { legend: { display: false } }, scales: { y: { beginAtZero: true } } } });
}

export { Chart };

/** Points (x, y) per dataset, with an optional dashed limit line: the update monitor's control chart. */
export function scatterChart(canvas: HTMLCanvasElement, datasets: { label: string; color: string }[], xLabel: string, yLabel: string): Chart<'scatter'> {
  return new Chart(canvas, {
    type: 'scatter',
    data: { datasets: datasets.map((d) => ({ label: d.label, data: [], borderColor: d.color, backgroundColor: d.color, pointRadius: 3 })) },
    options: { scales: { x: { title: { display: true, text: xLabel }, ticks: { precision: 0 } }, y: { min: 0, title: { display: true, text: yLabel } } }, plugins: { legend: { position: 'bottom' } } },
  });
}
