/** sip.js ships ESM only: let ts-jest (allowJs) transform it; everything else in node_modules stays as is. */
module.exports = {
  testEnvironment: "node",
  roots: ["<rootDir>/test"],
  testMatch: ["**/*.test.ts"],
  transform: {
    "^.+\\.[tj]s$": [
      "ts-jest",
      { tsconfig: { isolatedModules: true, allowJs: true, module: "commonjs", esModuleInterop: true } },
    ],
  },
  transformIgnorePatterns: ["/node_modules/(?!sip\\.js/)"],
  testTimeout: 60000,
  // jest's own output, then what did not run here and the ten slowest files
  reporters: ["default", "<rootDir>/test/reporters/summary.js"],
};
