import js from "@eslint/js";
import tseslint from "typescript-eslint";

export default tseslint.config(
  { ignores: ["dist/", "node_modules/", ".cache/", "coverage/"] },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    rules: {
      "@typescript-eslint/no-explicit-any": "error",
      "@typescript-eslint/no-unused-vars": ["error", { argsIgnorePattern: "^_", varsIgnorePattern: "^_" }],
      // Prettier wraps code at 120 but leaves long strings, comments and template literals alone.
      "max-len": ["error", { code: 120 }],
    },
  },
  {
    // The few JavaScript files run in the browser (console page) or Node (configs, scripts); their
    // globals are not declared here, so no-undef stays off for them (TypeScript checks names in .ts).
    files: ["**/*.js", "**/*.mjs"],
    rules: { "no-undef": "off" },
  },
);
