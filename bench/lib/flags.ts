/**
 * A benchmark's command line: `--name value` flags from a fixed list, `--help` that prints the
 * usage and exits before anything runs, and a precise error for anything else.
 */
export function benchFlags<N extends string>(usage: string, names: readonly N[]): Partial<Record<N, string>> {
  const argv = process.argv.slice(2);
  if (argv.includes("--help") || argv.includes("-h")) {
    console.log(usage);
    process.exit(0);
  }
  const out: Partial<Record<N, string>> = {};
  for (let i = 0; i < argv.length; i += 2) {
    const name = argv[i].replace(/^--/, "") as N;
    const value = argv[i + 1];
    if (!argv[i].startsWith("--") || !names.includes(name) || value === undefined || value.startsWith("--")) {
      console.error(`${argv[i]}: expected one of ${names.map((n) => `--${n} <value>`).join(", ")} (--help for more)`);
      process.exit(2);
    }
    out[name] = value;
  }
  return out;
}

/** A positive number, or exit with the flag named. */
export function positive(text: string, flag: string): number {
  const n = Number(text);
  if (Number.isFinite(n) && n > 0) return n;
  console.error(`--${flag} ${text}: expected a positive number`);
  process.exit(2);
}

/** "50,100,200" -> [50, 100, 200]; exits with the flag named when one is not a positive number. */
export function rateList(text: string, flag: string): number[] {
  const rates = text.split(",").map(Number);
  if (rates.some((r) => !Number.isFinite(r) || r <= 0)) {
    console.error(`--${flag} ${text}: expected positive numbers separated by commas, e.g. 50,100,200`);
    process.exit(2);
  }
  return rates;
}
