// Builds the workflow editor's bundle, committed in chat/static/studio/dist/ so that
// installing OpenClaw needs no Node:
//
//   cd editor && npm ci && node build.mjs          write the bundle
//   node editor/build.mjs --check                  exit 1 when the committed bundle
//                                                  differs from what the source builds
//
// The output is deterministic: no timestamps, no absolute paths, no source maps.
import { build } from "esbuild";
import { readdirSync, readFileSync, mkdirSync, writeFileSync, unlinkSync, existsSync } from "node:fs";
import { dirname, join, relative } from "node:path";
import { fileURLToPath } from "node:url";

const HERE = dirname(fileURLToPath(import.meta.url));
const REPO = dirname(HERE);
const OUT = join(REPO, "chat", "static", "studio", "dist");
const check = process.argv.includes("--check");

const result = await build({
  absWorkingDir: HERE,
  entryPoints: ["src/main.js"],
  outfile: join(OUT, "editor.js"), // its CSS imports become editor.css beside it
  bundle: true,
  format: "iife",
  minify: true,
  target: "es2020",
  platform: "browser",
  define: { "process.env.NODE_ENV": '"production"' },
  legalComments: "external", // editor.js.LEGAL.txt, editor.css.LEGAL.txt
  charset: "utf8",
  sourcemap: false,
  write: false,
  logLevel: "warning",
});

const built = new Map(result.outputFiles.map((file) => [file.path, Buffer.from(file.contents)]));
const present = existsSync(OUT) ? readdirSync(OUT).map((name) => join(OUT, name)) : [];
const name = (path) => relative(REPO, path);

if (check) {
  const differ = [];
  for (const [path, contents] of built) {
    if (!existsSync(path) || !readFileSync(path).equals(contents)) differ.push(name(path));
  }
  for (const path of present) {
    if (!built.has(path)) differ.push(name(path) + " (not built from the source)");
  }
  if (differ.length) {
    console.error("The committed editor bundle differs from its source:\n  " +
      differ.join("\n  ") + "\nrun: cd editor && npm ci && node build.mjs");
    process.exit(1);
  }
  console.log("The committed editor bundle matches its source (" + built.size + " files).");
} else {
  mkdirSync(OUT, { recursive: true });
  for (const path of present) {
    if (!built.has(path)) unlinkSync(path);
  }
  for (const [path, contents] of built) {
    writeFileSync(path, contents);
    console.log(name(path) + "  " + (contents.length / 1024).toFixed(1) + " KiB");
  }
}
