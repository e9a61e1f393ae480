// Allure 3 (the npm package `allure`, no Java): `make report` reads this file.
//
// - the report: allure-results/ (what `make staging` writes) -> allure-report/index.html;
// - the tree: the suites (health, isolation, load, rollback) are its top level, from each
//   result's titlePath, which the plugin sets (pytest_apex/reporting/allure.py);
// - the quality gate (`allure quality-gate`) mirrors the run's verdict where Allure can:
//   no failed or broken test, every judged test passed, at least one test, and no test
//   inconclusive (Allure's status `unknown`, which its built-in rules do not count).
//
// Not `import { defineConfig } from "allure"`: that module is the CLI and would run it again.
// @allurereport/core is the package's own dependency (package-lock.json, hoisted by npm ci).
import { qualityGateDefaultRules } from "@allurereport/core";

// Allure 3 uses an ES2025 iterator helper (`Iterator.prototype.toArray`, Node 22); the
// project's Node is 20. The config is loaded before the report runs, so define it here.
const iteratorPrototype = Object.getPrototypeOf(Object.getPrototypeOf([][Symbol.iterator]()));
if (typeof iteratorPrototype.toArray !== "function") {
  Object.defineProperty(iteratorPrototype, "toArray", {
    configurable: true,
    writable: true,
    value: function toArray() {
      return Array.from({ [Symbol.iterator]: () => this });
    },
  });
}

// An inconclusive test is written with the status `unknown`: the verdict is inconclusive,
// never a pass, so the gate fails on it too.
const maxInconclusiveRule = {
  rule: "maxInconclusive",
  message: ({ actual, expected }) =>
    `The number of inconclusive tests ${actual} exceeds the allowed threshold value ${expected}`,
  successMessage: ({ actual, expected }) =>
    `The number of inconclusive tests ${actual} is within the allowed threshold value ${expected}`,
  validate: async ({ trs, expected, state }) => {
    const previous = Number(state.getResult() ?? 0);
    const unknown = trs.filter((tr) => tr.status === "unknown").map((tr) => tr.id);
    const actual = previous + unknown.length;
    state.setResult(actual, unknown);
    return { success: actual <= expected, actual, testResults: unknown };
  },
};

export default {
  name: "pytest-apex acceptance",
  output: "allure-report",
  resultsDir: "allure-results",
  // apex.suite files each test under its suite; the tree already shows it.
  hideLabels: ["apex.suite"],
  plugins: {
    awesome: {
      options: {
        reportName: "pytest-apex acceptance",
        singleFile: false,
        reportLanguage: "en",
      },
    },
  },
  qualityGate: {
    use: [...qualityGateDefaultRules, maxInconclusiveRule],
    rules: [
      {
        maxFailures: 0,
        successRate: 1,
        minTestsCount: 1,
        maxInconclusive: 0,
      },
    ],
  },
};
