// A small SVG chart (no library): lines for rates, bars for error counts, drawn with DOM calls only.
const NS = "http://www.w3.org/2000/svg";

function el(tag, attrs) {
  const e = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, String(v));
  return e;
}

/**
 * points: [{at, ...}]; lines: [{key, cls}]; bars: {key, cls} (drawn against the same scale).
 * Returns an <svg> with a text summary as its accessible name.
 */
export function chart(points, { lines, bars, label }) {
  const W = 600, H = 120, P = 4;
  const svg = el("svg", { viewBox: `0 0 ${W} ${H}`, class: "chart", role: "img", preserveAspectRatio: "none" });
  const title = el("title", {});
  title.textContent = label;
  svg.append(title);
  for (const y of [0.25, 0.5, 0.75]) svg.append(el("line", { x1: 0, x2: W, y1: H * y, y2: H * y, class: "grid" }));
  if (points.length < 2) return svg;
  let max = 0;
  let barMax = 0;
  for (const p of points) {
    for (const l of lines) max = Math.max(max, p[l.key] || 0);
    if (bars) barMax = Math.max(barMax, p[bars.key] || 0);
  }
  max = max > 0 ? max * 1.15 : 1;
  const x = (i) => P + (i * (W - 2 * P)) / (points.length - 1);
  const y = (v) => H - P - ((v || 0) * (H - 2 * P)) / max;
  if (bars && barMax > 0) {
    // Counts, on their own scale in the lower half (the lines are rates per second).
    const w = Math.min(6, Math.max(1, (W - 2 * P) / points.length - 1));
    points.forEach((p, i) => {
      const v = p[bars.key] || 0;
      const hgt = (v * (H / 2 - P)) / barMax;
      if (v > 0) svg.append(el("rect", { x: x(i) - w / 2, y: H - P - hgt, width: w, height: hgt, class: bars.cls }));
    });
  }
  for (const l of lines) {
    const d = points.map((p, i) => (i ? "L" : "M") + x(i).toFixed(1) + " " + y(p[l.key]).toFixed(1)).join(" ");
    svg.append(el("path", { d, class: l.cls }));
  }
  return svg;
}
