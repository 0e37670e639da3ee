// A plain-SVG bar chart (no chart library): one bar per item, a hover title per bar, scaled to the
// largest value. The page's table carries the same numbers for screen readers.

export interface Bar {
  label: string;
  value: number;
}

export function niceMax(v: number): number {
  if (v <= 0) return 1;
  const p = 10 ** Math.floor(Math.log10(v));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= v) return m * p;
  return 10 * p;
}

export function BarChart({ bars, title, format, height = 180 }: { bars: Bar[]; title: string; format: (n: number) => string; height?: number }) {
  const width = 720;
  const pad = { l: 56, r: 8, t: 8, b: 22 };
  const max = niceMax(Math.max(0, ...bars.map((b) => b.value)));
  const w = (width - pad.l - pad.r) / Math.max(1, bars.length);
  const h = height - pad.t - pad.b;
  const ticks = [0, 0.5, 1];
  const every = Math.max(1, Math.ceil(bars.length / 8));
  return (
    <svg className="chart" viewBox={`0 0 ${width} ${height}`} role="img" aria-label={title} preserveAspectRatio="none">
      {ticks.map((t) => (
        <g key={t}>
          <line x1={pad.l} x2={width - pad.r} y1={pad.t + h * (1 - t)} y2={pad.t + h * (1 - t)} className="grid-line" />
          <text x={pad.l - 4} y={pad.t + h * (1 - t) + 4} textAnchor="end" className="axis">
            {format(max * t)}
          </text>
        </g>
      ))}
      {bars.map((b, i) => {
        const bh = max ? (b.value / max) * h : 0;
        return (
          <rect key={b.label} x={pad.l + i * w + (w > 3 ? 1 : 0)} y={pad.t + h - bh} width={Math.max(0.5, w - (w > 3 ? 2 : 0))} height={bh} className="bar">
            <title>{`${b.label}: ${format(b.value)}`}</title>
          </rect>
        );
      })}
      {bars.map((b, i) =>
        i % every === 0 ? (
          <text key={`l-${b.label}`} x={pad.l + i * w + w / 2} y={height - 6} textAnchor="middle" className="axis">
            {b.label.length > 12 ? `${b.label.slice(0, 11)}…` : b.label}
          </text>
        ) : null,
      )}
    </svg>
  );
}
