/**
 * A plain SVG in the spirit of the thesis' Figure 3.9: bandwidth over time (the inter-DC link
 * carrying the migration, and the UDP "video" stream the user receives), one row per probe with
 * its silences in red, and each VM's migration start, switchover and end marked.
 */

export interface VmMarks {
  name: string;
  /** Migration start (QMP MIGRATION "setup" on the source). */
  start?: number;
  /** Source stopped for switchover (QMP STOP). */
  switchover?: number;
  /** Running on the destination (QMP RESUME there). */
  end?: number;
}

export interface TimelineData {
  title: string;
  subtitle?: string;
  from: number;
  to: number;
  /** Inter-DC link throughput samples (Mbit/s, at the end of each sample's interval). */
  link: Array<{ t: number; mbit: number }>;
  /** UDP stream: bytes per bucket starting at `startedAt`. */
  udp?: { startedAt: number; bucketMs: number; bytes: number[] };
  probes: Array<{ name: string; outages: Array<{ from: number; to: number }> }>;
  vms: VmMarks[];
}

const W = 960;
const LEFT = 150;
const RIGHT = 20;
const PANEL_H = 120;
const ROW_H = 18;
const COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b"];

function esc(s: string): string {
  return s.replace(/[&<>"]/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;" })[c] ?? c);
}

/** A round axis maximum (1, 2, 5 x 10^n) at or above `v`. */
export function niceMax(v: number): number {
  if (v <= 0) return 1;
  const p = 10 ** Math.floor(Math.log10(v));
  return ([1, 2, 5, 10].find((m) => m * p >= v) ?? 10) * p;
}

function polyline(points: Array<[number, number]>, color: string): string {
  if (points.length === 0) return "";
  const d = points.map(([x, y]) => `${x.toFixed(1)},${y.toFixed(1)}`).join(" ");
  return `<polyline fill="none" stroke="${color}" stroke-width="1.5" points="${d}"/>`;
}

export function timelineSvg(data: TimelineData): string {
  const plotW = W - LEFT - RIGHT;
  const span = Math.max(data.to - data.from, 1);
  const x = (t: number) => LEFT + ((t - data.from) / span) * plotW;
  const parts: string[] = [];
  let y = 50;

  // Panel: a value series over time with its own y axis.
  const panel = (
    label: string,
    unit: string,
    series: Array<{ pts: Array<[number, number]>; color: string; name: string }>,
  ) => {
    const max = niceMax(Math.max(0, ...series.flatMap((s) => s.pts.map(([, v]) => v))));
    const top = y;
    const yv = (v: number) => top + PANEL_H - (v / max) * PANEL_H;
    parts.push(`<rect x="${LEFT}" y="${top}" width="${plotW}" height="${PANEL_H}" fill="#fafafa" stroke="#999"/>`);
    parts.push(`<text x="${LEFT - 8}" y="${top + 10}" text-anchor="end">${max} ${esc(unit)}</text>`);
    parts.push(`<text x="${LEFT - 8}" y="${top + PANEL_H}" text-anchor="end">0</text>`);
    parts.push(
      `<text x="${LEFT - 8}" y="${top + PANEL_H / 2}" text-anchor="end" font-weight="bold">${esc(label)}</text>`,
    );
    series.forEach((s, i) => {
      parts.push(
        polyline(
          s.pts.map(([t, v]) => [x(t), yv(v)]),
          s.color,
        ),
      );
      parts.push(`<text x="${LEFT + 8}" y="${top + 14 + i * 14}" fill="${s.color}">${esc(s.name)}</text>`);
    });
    y += PANEL_H + 20;
  };

  panel("inter-DC link", "Mbit/s", [
    { name: "migration link (dc uplinks, tx)", color: COLORS[0], pts: data.link.map((s) => [s.t, s.mbit]) },
  ]);
  if (data.udp) {
    const u = data.udp;
    const pts: Array<[number, number]> = u.bytes.map((b, i) => [
      u.startedAt + (i + 0.5) * u.bucketMs,
      (b * 8) / u.bucketMs,
    ]);
    panel("UDP stream", "kbit/s", [{ name: `user-received stream per ${u.bucketMs} ms`, color: COLORS[2], pts }]);
  }

  // Probe rows: grey where answers came, red where the probe was silent.
  const rowsTop = y;
  data.probes.forEach((p, i) => {
    const ry = rowsTop + i * ROW_H;
    parts.push(`<text x="${LEFT - 8}" y="${ry + 12}" text-anchor="end">${esc(p.name)}</text>`);
    parts.push(`<rect x="${LEFT}" y="${ry + 3}" width="${plotW}" height="${ROW_H - 6}" fill="#e8f4e8"/>`);
    for (const o of p.outages) {
      const x0 = x(Math.max(o.from, data.from));
      const x1 = x(Math.min(o.to, data.to));
      parts.push(
        `<rect x="${x0.toFixed(1)}" y="${ry + 2}" width="${Math.max(x1 - x0, 1.5).toFixed(1)}" ` +
          `height="${ROW_H - 4}" fill="#d62728"/>`,
      );
    }
  });
  y = rowsTop + data.probes.length * ROW_H + 10;

  // Time axis, one tick per second (or per 5 s on long runs).
  const step = span > 20000 ? 5000 : span > 8000 ? 2000 : 1000;
  for (let t = 0; t <= span; t += step) {
    parts.push(`<line x1="${x(data.from + t)}" y1="50" x2="${x(data.from + t)}" y2="${y}" stroke="#ddd"/>`);
    parts.push(`<text x="${x(data.from + t)}" y="${y + 14}" text-anchor="middle">${t / 1000} s</text>`);
  }
  y += 24;

  // Each VM's marks across every panel: start dashed, switchover solid, end dotted.
  data.vms.forEach((vm, i) => {
    const color = COLORS[(i + 3) % COLORS.length];
    const mark = (t: number | undefined, dash: string, what: string) => {
      if (t === undefined) return;
      parts.push(
        `<line x1="${x(t).toFixed(1)}" y1="50" x2="${x(t).toFixed(1)}" y2="${y - 24}" ` +
          `stroke="${color}" stroke-width="1.5" ` +
          `stroke-dasharray="${dash}"><title>${esc(`${vm.name} ${what}`)}</title></line>`,
      );
    };
    mark(vm.start, "6,3", "migration start");
    mark(vm.switchover, "none", "switchover (STOP)");
    mark(vm.end, "2,2", "resumed on destination");
    parts.push(
      `<text x="${LEFT}" y="${y + 4 + i * 14}" fill="${color}">${esc(vm.name)}: migration start ` +
        `(dashed), source STOP (solid), RESUME on destination (dotted)</text>`,
    );
  });
  y += 14 * data.vms.length;

  const head = [
    `<text x="${W / 2}" y="20" text-anchor="middle" font-size="15" font-weight="bold">${esc(data.title)}</text>`,
    data.subtitle ? `<text x="${W / 2}" y="38" text-anchor="middle">${esc(data.subtitle)}</text>` : "",
  ];
  return [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${y}" viewBox="0 0 ${W} ${y}" ` +
      `font-family="sans-serif" font-size="11">`,
    `<rect width="100%" height="100%" fill="white"/>`,
    ...head,
    ...parts,
    `</svg>`,
    "",
  ].join("\n");
}
