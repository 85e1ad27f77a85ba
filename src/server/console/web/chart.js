// A small line chart in SVG: several series over time, no library.
import { h } from "./app.js";

const colours = ["#2f6fde", "#2e9d5b", "#d98e04", "#d14343", "#7a5af8"];

/**
 * series: [{ name, points: [[timeMs, value], ...], dashed }]
 * Returns a card with the chart and its legend.
 */
export function lineChart(title, series, testid) {
  const W = 600, H = 180, P = 28;
  const all = series.flatMap((s) => s.points);
  const box = h("div", { class: "chart", "data-testid": testid });
  box.append(h("div", { class: "muted" }, title));
  if (all.length === 0) {
    box.append(h("p", { class: "muted" }, "no samples recorded yet"));
    return box;
  }
  const t0 = Math.min(...all.map((p) => p[0])), t1 = Math.max(...all.map((p) => p[0]));
  const vmax = Math.max(1, ...all.map((p) => p[1]));
  const x = (t) => P + ((t - t0) / Math.max(1, t1 - t0)) * (W - 2 * P);
  const y = (v) => H - P + 6 - (v / vmax) * (H - 2 * P);
  const svg = h("svg", { viewBox: `0 0 ${W} ${H}`, preserveAspectRatio: "none" });
  svg.append(h("line", { x1: P, y1: y(0), x2: W - P, y2: y(0), stroke: "#ccd" }));
  svg.append(h("text", { x: 2, y: y(vmax) + 4, "font-size": 10, fill: "#667" }, String(vmax)));
  svg.append(h("text", { x: 2, y: y(0) + 4, "font-size": 10, fill: "#667" }, "0"));
  const legend = h("div", { class: "legend" });
  series.forEach((s, i) => {
    const colour = colours[i % colours.length];
    if (s.points.length) {
      const d = s.points.map((p, j) => `${j ? "L" : "M"}${x(p[0]).toFixed(1)},${y(p[1]).toFixed(1)}`).join(" ");
      svg.append(h("path", { d, fill: "none", stroke: colour, "stroke-width": 2, "stroke-dasharray": s.dashed ? "5,4" : null }));
    }
    legend.append(h("span", {}, h("i", { style: { background: colour } }), s.name));
  });
  box.append(svg, legend,
    h("div", { class: "muted" }, `${new Date(t0).toLocaleTimeString()} – ${new Date(t1).toLocaleTimeString()}`));
  return box;
}
