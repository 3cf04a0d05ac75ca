// Drives the built page in headless Chromium (Debian's /usr/bin/chromium, through playwright-core) and
// prints one JSON line of what it saw. Used by export.py (emotion/serving/headless_browser.py), tests/test_web.py and benchmarks/bench_web.py.
//
//   node web/tools/browser.mjs '{"scenario": "classify", "url": "http://127.0.0.1:8000/", "images": ["a.png"]}'
//
// Scenarios (each starts a fresh browser with a new, empty profile):
//   classify  {url, images: [urls], detect?: true, latencyRuns?}  -> {ready, faces: [[face, ...] per image], latencyMs}
//   camera    {url, y4m, frames?: 20, screenshot?}  -> {ready, stats, list, boxPixels, status}: the fake camera
//             plays the .y4m file; waits until `frames` frames are classified (the page draws boxes and labels)
//   refused   {url}                                 -> {status, statusIsError}: camera permission denied
//   nocamera  {url}                                 -> the same with no camera at all
//   file      {url, file, frames?}                  -> {status, list, boxPixels, stats}: a file opened with the
//             picker (a video: waits until `frames` frames are classified)
//   history   {url, y4m, frames?: 20}              -> {csv, list, timelines, historyFaces, frames, requestsAfterStop}: the fake camera
//             plays until `frames` frames are classified, Stop is pressed, then "Download CSV" is clicked and
//             what the page shows (bars, each face's timeline pixels) is read
//   bench     {url, y4m, seconds?: 10}              -> {readyMs, firstResultMs, fps, framesPerFace..., modelBytes}
import {mkdtempSync, readFileSync, rmSync} from 'node:fs';
import {tmpdir} from 'node:os';
import {join} from 'node:path';
import {chromium} from 'playwright-core';

const BASE_FLAGS = ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update',
  '--disable-sync', '--no-first-run', '--disable-quic', '--mute-audio'];
const opts = JSON.parse(process.argv[2] || '{}');
const timeout = (opts.timeoutSeconds || 120) * 1000;

async function launch({camera = null, grant = false, fakeUi = false} = {}) {
  const args = [...BASE_FLAGS];
  if (camera) args.push('--use-fake-device-for-media-stream', `--use-file-for-fake-video-capture=${camera}`);
  if (fakeUi) args.push('--use-fake-ui-for-media-stream');
  const profile = mkdtempSync(join(tmpdir(), 'emotion-chromium-'));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium', headless: true, args,
    viewport: {width: 1280, height: 900},
  });
  if (grant) await context.grantPermissions(['camera'], {origin: new URL(opts.url).origin});
  const page = context.pages()[0] || await context.newPage();
  const errors = [];
  page.on('pageerror', (err) => errors.push(String(err)));
  page.on('console', (msg) => { if (msg.type() === 'error') errors.push(msg.text()); });
  page.setDefaultTimeout(timeout);
  const close = async () => { await context.close(); rmSync(profile, {recursive: true, force: true}); };
  return {page, errors, close};
}

async function waitReady(page) {
  return page.evaluate(() => window.emotionDetector.ready);
}

async function classify() {
  const {page, errors, close} = await launch();
  try {
    await page.goto(opts.url);
    const ready = await waitReady(page);
    const faces = await page.evaluate(async ({images, detect}) => {
      const out = [];
      for (const src of images) {
        const img = new Image();
        img.src = src;
        await img.decode();
        out.push(await window.emotionDetector.classify(img, {detect}));
      }
      return out;
    }, {images: opts.images, detect: opts.detect !== false});
    // batch-1 latency: classify() of the first image, repeated (median ms)
    const latencyMs = opts.latencyRuns ? await page.evaluate(async ({src, runs, detect}) => {
      const img = new Image();
      img.src = src;
      await img.decode();
      const times = [];
      for (let i = 0; i < runs + 3; i++) {
        const start = performance.now();
        await window.emotionDetector.classify(img, {detect});
        if (i >= 3) times.push(performance.now() - start);  // 3 warm-up calls
      }
      return times.sort((a, b) => a - b)[Math.floor(times.length / 2)];
    }, {src: opts.images[0], runs: opts.latencyRuns, detect: opts.detect !== false}) : null;
    return {ready, faces, latencyMs, errors, crossOriginIsolated: await page.evaluate(() => crossOriginIsolated)};
  } finally {
    await close();
  }
}

/**
 * What the page shows now: the faces listed beside the picture and the overlay's pixels in the box colour
 * (#00e676), read in one task so both come from the same frame. Not with $$eval: that queries and evaluates
 * in two round-trips, and a frame finishing in between replaces the list (detached elements measure 0 wide).
 * `live`: wait for a frame that found a face (one frame of a clip may find none).
 */
async function shown(page, {live = false} = {}) {
  const read = (requireFace) => {
    const list = [...document.querySelectorAll('#faces li')].map((li) => ({
      label: li.dataset.label, topLabel: li.dataset.topLabel, confidence: Number(li.dataset.confidence), text: li.textContent,
      bars: li.querySelectorAll('.bar').length,
      // drawn bar lengths as fractions of their tracks (what the eye sees, not the style attribute)
      fills: [...li.querySelectorAll('.fill')].map((f) => f.getBoundingClientRect().width
        / f.parentElement.getBoundingClientRect().width),
    }));
    if (requireFace && list.length === 0) return null;
    const canvas = document.getElementById('overlay');
    const data = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
    let count = 0;
    for (let i = 0; i < data.length; i += 4) {
      if (data[i] < 40 && data[i + 1] > 200 && Math.abs(data[i + 2] - 118) < 40) count += 1;
    }
    return {list, boxPixels: {count, width: canvas.width, height: canvas.height}};
  };
  if (!live) return page.evaluate(read, false);
  return (await page.waitForFunction(read, true, {timeout})).jsonValue();
}

async function camera() {
  const {page, errors, close} = await launch({camera: opts.y4m, grant: true, fakeUi: true});
  try {
    await page.goto(`${opts.url}${opts.url.includes('?') ? '&' : '?'}camera=1`);
    const ready = await waitReady(page);
    const frames = opts.frames || 20;
    await page.waitForFunction((n) => window.emotionDetector.stats.frames >= n
      && window.emotionDetector.stats.lastFaces.length > 0, frames, {timeout});
    const stats = await page.evaluate(() => ({...window.emotionDetector.stats}));
    const {list, boxPixels} = await shown(page, {live: true});
    const status = await page.textContent('#status');
    const fpsText = await page.textContent('#fps');
    if (opts.screenshot) await page.screenshot({path: opts.screenshot});
    return {ready, stats, boxPixels, list, status, fpsText, errors};
  } finally {
    await close();
  }
}

async function history() {
  const {page, errors, close} = await launch({camera: opts.y4m, grant: true, fakeUi: true});
  try {
    await page.goto(`${opts.url}${opts.url.includes('?') ? '&' : '?'}camera=1`);
    const ready = await waitReady(page);
    // Stop is pressed inside the check itself: with a separate click, a frame with no face found could
    // finish in between and empty the list while the CSV's last rows still hold the frame before it.
    await page.waitForFunction((n) => {
      const {frames, lastFaces} = window.emotionDetector.stats;
      if (frames < n || lastFaces.length === 0) return false;
      document.getElementById('stop').click();  // no frame is drawn or recorded after this
      return true;
    }, opts.frames || 20, {timeout});
    const sent = [];  // requests the page makes from here on (the CSV must not be one of them)
    page.context().on('request', (request) => sent.push(request.url()));
    const [download] = await Promise.all([page.waitForEvent('download'), page.click('#download')]);
    const csv = readFileSync(await download.path(), 'utf8');
    const shownNow = await page.evaluate(() => ({
      list: [...document.querySelectorAll('#faces li')].map((li) => ({
        label: li.dataset.label, confidence: Number(li.dataset.confidence),
        fills: [...li.querySelectorAll('.fill')].map((f) => f.getBoundingClientRect().width
          / f.parentElement.getBoundingClientRect().width),
        timelineBeside: (() => {
          const c = li.querySelector('canvas.timeline');
          const bar = li.querySelector('.bar');
          return Boolean(c && bar && c.getBoundingClientRect().left >= bar.getBoundingClientRect().right - 1);
        })(),
      })),
      timelines: [...document.querySelectorAll('#faces canvas.timeline')].map((c) => ({
        id: Number(c.dataset.id), width: c.width, height: c.height,
        pixels: Array.from(c.getContext('2d').getImageData(0, 0, c.width, c.height).data),
      })),
      historyFaces: window.emotionDetector.stats.history.reduce((sum, h) => sum + h.faces, 0),
      frames: window.emotionDetector.stats.frames,
    }));
    return {ready, csv, ...shownNow, filename: download.suggestedFilename(), requestsAfterStop: sent, errors};
  } finally {
    await close();
  }
}

async function cameraFailure(withCamera) {
  // no --use-fake-ui-for-media-stream and no granted permission: headless Chromium denies the request
  const {page, errors, close} = await launch({camera: withCamera ? opts.y4m : null});
  try {
    await page.goto(opts.url);
    await waitReady(page);
    await page.click('#camera');
    await page.waitForFunction(() => document.getElementById('status').classList.contains('error'), null, {timeout});
    return {
      status: await page.textContent('#status'),
      statusIsError: await page.evaluate(() => document.getElementById('status').classList.contains('error')),
      errors,
    };
  } finally {
    await close();
  }
}

async function openFile() {
  const {page, errors, close} = await launch();
  try {
    await page.goto(opts.url);
    await waitReady(page);
    await page.setInputFiles('#file', opts.file);
    const name = opts.file.split('/').pop();
    await page.waitForFunction((n) => document.getElementById('status').textContent.includes(n), name, {timeout});
    if (opts.frames) {  // a video: wait until that many frames are classified
      await page.waitForFunction((n) => window.emotionDetector.stats.frames >= n, opts.frames, {timeout});
    }
    const {list, boxPixels} = await shown(page, {live: Boolean(opts.frames)});
    return {
      stats: await page.evaluate(() => ({...window.emotionDetector.stats, history: undefined})),
      status: await page.textContent('#status'),
      statusIsError: await page.evaluate(() => document.getElementById('status').classList.contains('error')),
      list,
      boxPixels,
      errors,
    };
  } finally {
    await close();
  }
}

async function bench() {
  const {page, errors, close} = await launch({camera: opts.y4m, grant: true, fakeUi: true});
  const modelDownloads = [];  // bytes of each model file sent (workers' requests included; 304s send none)
  page.context().on('response', (response) => {
    if (response.url().includes('/models/emotion/') && response.status() === 200) {
      modelDownloads.push(Number(response.headers()['content-length'] || 0));
    }
  });
  try {
    const start = Date.now();
    await page.goto(`${opts.url}${opts.url.includes('?') ? '&' : '?'}camera=1`);
    const ready = await waitReady(page);
    await page.waitForFunction(() => window.emotionDetector.stats.firstResultAt !== null, null, {timeout});
    const loadMs = Date.now() - start;
    const seconds = opts.seconds || 10;
    await page.waitForTimeout(1000);  // past the first frames
    const t0 = await page.evaluate(() => performance.now());
    await page.waitForTimeout(seconds * 1000);  // no polling meanwhile: the page keeps its 2 cores
    const {history, timing} = await page.evaluate(() => ({
      history: window.emotionDetector.stats.history,
      timing: {readyAt: window.emotionDetector.stats.readyAt, firstResultAt: window.emotionDetector.stats.firstResultAt},
    }));
    const frames = history.filter((h) => h.at >= t0 && h.at <= t0 + seconds * 1000);
    const median = (xs) => (xs.length ? [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] : null);
    const oneFace = frames.filter((h) => h.faces === 1);
    return {
      ready,
      fps: frames.length / seconds,
      framesMeasured: frames.length,
      framesWithOneFace: oneFace.length,
      fpsOneFace: oneFace.length / seconds,  // classified frames with exactly one face, per second
      medianFrameMs: median(frames.map((h) => h.ms)),
      meanFrameMs: frames.reduce((sum, h) => sum + h.ms, 0) / Math.max(1, frames.length),
      medianDetectMs: median(frames.map((h) => h.detectMs)),
      medianClassifyMs: median(frames.map((h) => h.classifyMs)),
      readyMs: timing.readyAt,
      firstResultAfterReadyMs: timing.firstResultAt - timing.readyAt,
      pageLoadToFirstResultMs: loadMs,
      modelBytes: modelDownloads.reduce((sum, n) => sum + n, 0),
      modelRequests: modelDownloads.length,
      errors,
    };
  } finally {
    await close();
  }
}

const scenarios = {classify, camera, history, file: openFile, refused: () => cameraFailure(true), nocamera: () => cameraFailure(false), bench};
try {
  if (!scenarios[opts.scenario]) throw new Error(`unknown scenario ${opts.scenario}: ${Object.keys(scenarios).join(', ')}`);
  console.log(JSON.stringify(await scenarios[opts.scenario]()));
} catch (err) {
  console.log(JSON.stringify({error: String(err && err.stack || err)}));
  process.exitCode = 1;
}
