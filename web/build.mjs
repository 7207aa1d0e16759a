// Builds the console's front end into web/dist/: one ES module per live page and one
// stylesheet each, third-party code bundled from node_modules (never copied by hand).
// Run by `make web`; the broker serves web/dist under /static/.
import { build } from "esbuild";
import { copyFile, mkdir, rm } from "node:fs/promises";

const dist = new URL("./dist/", import.meta.url);
await rm(dist, { recursive: true, force: true });
await mkdir(dist, { recursive: true });

await build({
  entryPoints: {
    console: "src/console.js",
    terminal: "src/terminal.js",
    player: "src/player.js",
    "console-style": "src/console.css",
    "terminal-style": "src/terminal.css",
    "player-style": "src/player.css",
  },
  outdir: "dist",
  bundle: true,
  format: "esm",
  target: ["es2022", "chrome110", "firefox115", "safari16"],
  minify: true,
  legalComments: "linked",
  logLevel: "warning",
  // The player's WebAssembly is embedded in its JavaScript; fonts and images stay out.
  loader: { ".woff": "empty", ".woff2": "empty", ".ttf": "empty", ".svg": "empty" },
});

// Stable names for the templates: /static/console.css, /static/terminal.css, /static/player.css.
for (const name of ["console", "terminal", "player"]) {
  await copyFile(new URL(`${name}-style.css`, dist), new URL(`${name}.css`, dist));
  await rm(new URL(`${name}-style.css`, dist));
  await rm(new URL(`${name}-style.js`, dist), { force: true });
  await rm(new URL(`${name}-style.css.LEGAL.txt`, dist), { force: true });
}
await copyFile(new URL("./src/favicon.svg", import.meta.url), new URL("favicon.svg", dist));
