// Line charts (uPlot, vendored): the tuning loss curve and the service monitoring series.
import uPlot from 'uplot';
import { html, useEffect, useRef } from './lib.js';

const COLORS = ['#2563eb', '#dc2626', '#16a34a', '#d97706', '#7c3aed'];

// x: numbers (iterations, or unix seconds when time=true); series: [{label, values}]
export function LineChart({ x, series, time = false, height = 260, xLabel, testid }) {
  const box = useRef(null);
  const plot = useRef(null);
  const shape = `${series.map((s) => s.label).join('|')}|${time}`;

  useEffect(() => {
    if (!box.current) return undefined;
    const width = Math.max(320, box.current.clientWidth || 600);
    const opts = {
      width, height,
      scales: { x: { time } },
      // Iterations are whole numbers: no 1.25 ticks.
      axes: [time ? { label: xLabel } : { label: xLabel, incrs: [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 20000, 50000] }, {}],
      series: [{ label: xLabel || 'x' }, ...series.map((s, i) => ({
        label: s.label, stroke: COLORS[i % COLORS.length], width: 2, points: { show: x.length < 60 },
      }))],
      legend: { show: true },
    };
    plot.current = new uPlot(opts, [x, ...series.map((s) => s.values)], box.current);
    const onResize = () => plot.current && plot.current.setSize({ width: Math.max(320, box.current.clientWidth), height });
    window.addEventListener('resize', onResize);
    return () => { window.removeEventListener('resize', onResize); plot.current && plot.current.destroy(); plot.current = null; };
  }, [shape]);

  useEffect(() => {
    if (plot.current) plot.current.setData([x, ...series.map((s) => s.values)]);
  }, [x, series]);

  return html`<div class="chart" ref=${box} data-testid=${testid} data-points=${x.length}></div>`;
}
