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
  // a test that fails midway can leave a server listening; the run's result is known by then, so it
  // must not wait for it (a CI run once waited after its last test until its 90 minutes were up)
  forceExit: true,
  // jest's own output, then what did not run here and the ten slowest files
  reporters: ["default", "<rootDir>/test/reporters/summary.js"],
};
