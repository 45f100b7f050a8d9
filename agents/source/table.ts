/** Plain-text tables for terminals: columns padded to their widest cell, two spaces apart. */
export function tableLines(head: string[], rows: string[][]): { head: string; widths: number[]; rows: string[] } {
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
  const fmt = (r: string[]) =>
    r
      .map((c, i) => c.padEnd(widths[i]))
      .join("  ")
      .trimEnd();
  return { head: fmt(head), widths, rows: rows.map(fmt) };
}
