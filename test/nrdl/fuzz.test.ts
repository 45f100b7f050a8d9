/** parseNrdl answers every input with a result, never a throw: mangled valid documents and noise. */
import fc from "fast-check";
import { buildNrdl, parseNrdl } from "../../nrdl";
import { BODIES, documentOf } from "./arbitraries";

const anyDocument = fc.oneof(...Object.values(BODIES).map((b) => documentOf(b))).map((d) => buildNrdl(d));
const markup = fc.constantFrom(
  "<",
  ">",
  "/>",
  "</",
  "<!--",
  "-->",
  "<![CDATA[",
  "]]>",
  "<?",
  "?>",
  '"',
  "'",
  "&",
  "&amp;",
  "&#",
  "=",
  " ",
  "<vm>",
  "</nrdl>",
);

/** Cut, duplicate or splice markup into a text at random places. */
const mangled = fc
  .tuple(
    anyDocument,
    fc.array(fc.tuple(fc.nat(), fc.nat({ max: 20 }), fc.oneof(markup, fc.string({ maxLength: 5 }))), {
      minLength: 1,
      maxLength: 6,
    }),
  )
  .map(([xml, edits]) =>
    edits.reduce((text, [at, cut, insert]) => {
      const i = at % (text.length + 1);
      return text.slice(0, i) + insert + text.slice(i + cut);
    }, xml),
  );

test("mangled documents and random text get violations or a document, never an exception", () => {
  fc.assert(
    fc.property(
      fc.oneof(mangled, fc.string({ unit: "binary", maxLength: 200 }), fc.string({ unit: markup, maxLength: 40 })),
      (text) => {
        const result = parseNrdl(text);
        expect(result.ok || result.violations.length > 0).toBe(true);
      },
    ),
    { numRuns: 3000 },
  );
});
