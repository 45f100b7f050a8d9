/** `sip-teleport --help`: the program's description is paragraphs that commander wraps, never broken by hand. */
import { buildProgram } from "../../agents/cli";

const io = { out: () => undefined, err: () => undefined, readStdin: async () => "", setExitCode: () => undefined };

function descriptionLines(width: number): string[] {
  const help = buildProgram(io).configureHelp({ helpWidth: width }).helpInformation();
  return help.split("\n\n").slice(1, 3).join("\n\n").split("\n");
}

test("wide: one line per paragraph, whole sentences", () => {
  expect(descriptionLines(300)).toEqual([
    "Live-migrate groups of virtual machines between data centers under SIP signalling.",
    "",
    expect.stringMatching(/^A source agent sends .* migration listener per VM .* ends with BYE\.$/),
  ]);
});

test("80 columns: every wrapped line is filled (no break far before the width)", () => {
  const lines = descriptionLines(80);
  const paragraphs = lines.join("\n").split("\n\n");
  for (const p of paragraphs) {
    const rows = p.split("\n");
    for (const [i, row] of rows.entries()) {
      expect(row.length).toBeLessThanOrEqual(80);
      const next = rows[i + 1];
      if (next !== undefined) expect(row.length + 1 + next.split(" ")[0].length).toBeGreaterThan(80);
    }
  }
});
