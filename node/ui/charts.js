// Plain SVG charts: a line chart with linked points and an optional cap
// line, and a share bar against a cap. No library: what they need is a
// few dozen lines, and the page must work offline.

import { s } from "./dom.js";

// No red: red marks a share over its cap.
const PALETTE = ["#2563eb", "#d97706", "#16a34a", "#7c3aed", "#0891b2", "#db2777", "#65a30d", "#4b5563"];
export const color = (i) => PALETTE[i % PALETTE.length];

// series: [{name, points: [{x, y, href?, title?}]}]; opts: {id, yMin, yMax,
// cap: {y, label}, xLabel, yFormat, xFormat}
export function lineChart(series, opts = {}) {
  const W = 640, H = 220, L = 48, R = 12, T = 12, B = 28;
  const all = series.flatMap((se) => se.points);
  const xs = all.map((p) => p.x);
  const ys = all.map((p) => p.y);
  const xMin = xs.length ? Math.min(...xs) : 0;
  const xMax = xs.length ? Math.max(...xs) : 1;
  const yMin = opts.yMin ?? (ys.length ? Math.min(...ys) : 0);
  let yMax = opts.yMax ?? (ys.length ? Math.max(...ys) : 1);
  if (opts.cap) yMax = Math.max(yMax, opts.cap.y);
  if (yMax === yMin) yMax = yMin + 1;
  const px = (x) => L + (xMax === xMin ? (W - L - R) / 2 : ((x - xMin) / (xMax - xMin)) * (W - L - R));
  const py = (y) => T + (1 - (y - yMin) / (yMax - yMin)) * (H - T - B);
  const yFormat = opts.yFormat || ((v) => v.toFixed(2));
  const xFormat = opts.xFormat || ((v) => String(v));

  const svg = s("svg", {
    viewBox: `0 0 ${W} ${H}`, class: "chart", role: "img", id: opts.id,
    "aria-label": opts.label || series.map((x) => x.name).join(", "),
    dataset: { points: String(all.length) },
  });
  for (let i = 0; i <= 4; i++) {
    const v = yMin + ((yMax - yMin) * i) / 4;
    svg.append(
      s("line", { x1: L, x2: W - R, y1: py(v), y2: py(v), class: "grid" }),
      s("text", { x: L - 6, y: py(v) + 4, class: "tick", "text-anchor": "end" }, yFormat(v)),
    );
  }
  svg.append(
    s("text", { x: L, y: H - 8, class: "tick" }, xFormat(xMin)),
    s("text", { x: W - R, y: H - 8, class: "tick", "text-anchor": "end" }, xFormat(xMax)),
  );
  if (opts.xLabel) svg.append(s("text", { x: (W + L) / 2, y: H - 8, class: "tick", "text-anchor": "middle" }, opts.xLabel));
  if (opts.cap) {
    svg.append(
      s("line", { x1: L, x2: W - R, y1: py(opts.cap.y), y2: py(opts.cap.y), class: "cap" }),
      s("text", { x: W - R, y: py(opts.cap.y) - 4, class: "cap-label", "text-anchor": "end" }, opts.cap.label),
    );
  }
  series.forEach((se, i) => {
    const pts = se.points;
    if (pts.length > 1) {
      svg.append(s("polyline", {
        points: pts.map((p) => `${px(p.x).toFixed(1)},${py(p.y).toFixed(1)}`).join(" "),
        fill: "none", stroke: color(se.color ?? i), "stroke-width": 2,
      }));
    }
    for (const p of pts) {
      const dot = s("circle", { cx: px(p.x), cy: py(p.y), r: 3, fill: color(se.color ?? i) },
        s("title", {}, p.title || `${se.name}: ${yFormat(p.y)}`));
      svg.append(p.href ? s("a", { href: p.href }, dot) : dot);
    }
  });
  return svg;
}

// A horizontal bar: share against a cap (both fractions of 1).
export function shareBar(share, cap, i = 0) {
  const W = 200, H = 14;
  const over = share > cap + 1e-9;
  return s("svg", { viewBox: `0 0 ${W} ${H}`, class: "bar", role: "img",
      "aria-label": `${(share * 100).toFixed(1)}% of a ${(cap * 100).toFixed(1)}% cap` },
    s("rect", { x: 0, y: 0, width: W, height: H, class: "bar-bg" }),
    s("rect", { x: 0, y: 0, width: Math.min(1, share) * W, height: H, fill: over ? "#dc2626" : color(i) }),
    s("line", { x1: cap * W, x2: cap * W, y1: 0, y2: H, class: "cap" }));
}

export function legend(series) {
  return s("svg", { class: "legend", viewBox: `0 0 640 ${18 * Math.ceil(series.length / 3)}` },
    series.map((se, i) => {
      const x = (i % 3) * 213, y = Math.floor(i / 3) * 18;
      return s("g", {},
        s("rect", { x, y: y + 4, width: 10, height: 10, fill: color(se.color ?? i) }),
        s("text", { x: x + 14, y: y + 13, class: "tick" }, se.name));
    }));
}
