// The page: camera, dropped or picked files, drawing, and window.emotionDetector for embedders.
//
//   await window.emotionDetector.ready;                       // {backend, classNames, inputSize}
//   const faces = await window.emotionDetector.classify(img); // [{box, label, topLabel, confidence, probabilities, ...}]
//
// Query parameters: ?backend=wasm|webgl|webgpu|cpu forces a backend, ?workers=N sets how many Web Workers run
// the model on WASM (0: on the page's thread), ?threads=N sets WASM threads, ?camera=1 starts the camera at load.
import {EmotionDetector, sourceSize} from './emotion-detector.js';
import {FaceHistory} from './timeline.js';

const params = new URLSearchParams(location.search);
const $ = (id) => document.getElementById(id);
const video = $('video');
const canvas = $('overlay');
const ctx = canvas.getContext('2d');
const stats = {frames: 0, fps: 0, lastMs: 0, readyAt: null, firstResultAt: null, lastFaces: [], history: []};
let detector = null;
let history = null;  // per-face history of the live session: timelines and the CSV (timeline.js)
let running = null;  // the live loop's stop flag holder

function setStatus(text, isError = false) {
  $('status').textContent = text;
  $('status').classList.toggle('error', isError);
}

const ready = (async () => {
  const config = await (await fetch('config.json')).json();
  detector = await EmotionDetector.create(config, {
    backend: params.get('backend'), threads: Number(params.get('threads')) || null,
    workers: params.has('workers') ? Number(params.get('workers')) : null,
  });
  $('backend').textContent = detector.backend.detail;
  $('model-card').textContent = config.modelCard || 'model: no model card';  // the line predict.py prints
  history = new FaceHistory(detector.classNames);
  window.emotionDetector.history = history;
  for (const id of ['camera', 'file']) $(id).disabled = false;
  stats.readyAt = performance.now();
  setStatus('Ready: start the camera, or drop an image or a video file.');
  return {backend: detector.backend.detail, classNames: detector.classNames, inputSize: detector.inputSize,
    minConfidence: config.minConfidence, modelCard: $('model-card').textContent};
})();
ready.catch((err) => setStatus(`The models could not load: ${err.message || err}. Rebuild with python src/web.py.`, true));

window.emotionDetector = {
  ready,
  stats,
  /** Faces and their emotions in an image, video or canvas (options: {track, detect}, see emotion-detector.js). */
  async classify(source, options = {}) {
    await ready;
    return detector.classify(source, options);
  },
};

// ---------------------------------------------------------------------------------------------------
// Drawing

function draw(source, faces) {
  const [w, h] = sourceSize(source);
  if (canvas.width !== w || canvas.height !== h) Object.assign(canvas, {width: w, height: h});
  ctx.drawImage(source, 0, 0, w, h);
  const line = Math.max(2, Math.round(Math.max(w, h) / 300));
  ctx.lineWidth = line;
  ctx.font = `${Math.max(14, Math.round(h / 28))}px system-ui, sans-serif`;
  ctx.textBaseline = 'bottom';
  for (const face of faces) {
    const [x, y, bw, bh] = face.box;
    ctx.strokeStyle = '#00e676';
    ctx.strokeRect(x, y, bw, bh);
    const text = answerText(face, 0);
    const tw = ctx.measureText(text).width + 8;
    const th = parseInt(ctx.font, 10) + 6;
    const ty = y - th >= 0 ? y : y + bh + th;
    ctx.fillStyle = '#00e676';
    ctx.fillRect(x - line / 2, ty - th, tw, th);
    ctx.fillStyle = '#000';
    ctx.fillText(text, x + 4, ty - 3);
  }
  $('hint').hidden = true;
  showList(faces);
}

/** "happy 87%", or below min_confidence "uncertain (happy 42%)" (as src/emotion/runtime/confidence.py's display_text). */
function answerText(face, digits) {
  const best = `${face.topLabel} ${(face.confidence * 100).toFixed(digits)}%`;
  return face.label === 'uncertain' ? `uncertain (${best})` : best;
}

function showList(faces) {
  const list = $('faces');
  list.replaceChildren(...faces.map((face, i) => {
    const li = document.createElement('li');
    li.dataset.label = face.label;
    li.dataset.confidence = face.confidence.toFixed(4);
    const title = document.createElement('strong');
    li.dataset.topLabel = face.topLabel;
    title.textContent = `${face.id ? `face #${face.id}` : `face ${i + 1}`}: ${answerText(face, 1)}`
      + (face.wholeImage ? ' (whole picture)' : '');
    li.append(title);
    const body = document.createElement('div');  // the bars, and beside them the face's timeline
    body.className = 'face-body';
    const bars = document.createElement('div');
    body.append(bars);
    if (face.id !== null && face.id !== undefined && history) {
      const timeline = Object.assign(document.createElement('canvas'), {width: 120, height: 40, className: 'timeline'});
      timeline.dataset.id = face.id;
      timeline.title = 'this face over its last 120 frames';
      history.drawTimeline(timeline, face.id);
      body.append(timeline);
    }
    li.append(body);
    for (const [name, p] of Object.entries(face.probabilities)) {
      const row = document.createElement('div');
      row.className = name === face.topLabel ? 'bar top' : 'bar';
      row.innerHTML = `<span></span><span class="track"><span class="fill"></span></span><span></span>`;
      row.children[0].textContent = name;
      row.children[1].firstChild.style.width = `${(p * 100).toFixed(1)}%`;
      row.children[2].textContent = p.toFixed(2);
      bars.append(row);
    }
    return li;
  }));
}

// ---------------------------------------------------------------------------------------------------
// Live video (camera or file): one frame at a time, the next one as soon as the last is classified

/** Yield to the browser (events, painting) for the shortest time: a message to ourselves, not a timer. */
function nextTask() {
  return new Promise((resolve) => {
    const channel = new MessageChannel();
    channel.port1.onmessage = () => resolve();
    channel.port2.postMessage(null);
  });
}

async function runLive() {
  if (running) running.stop = true;  // a loop already running (another source) ends; the new source stays
  const token = {stop: false};
  running = token;
  detector.tracker.reset();
  history.reset();  // a new session: a new history (ids keep counting, so none is reused)
  const sessionStart = performance.now();
  $('stop').disabled = false;
  const times = [];
  const inFlight = new Set();
  // With a worker per core, up to detector.parallelism frames are classified at once; each video frame once.
  let presented = 0;
  let used = -1;
  const hasFrameCallback = 'requestVideoFrameCallback' in video;
  const onFrame = (now, meta) => {
    presented = meta.presentedFrames;
    if (!token.stop) video.requestVideoFrameCallback(onFrame);
  };
  if (hasFrameCallback) video.requestVideoFrameCallback(onFrame);

  const finish = (faces, start, at) => {
    if (token.stop || faces.stale) return;  // a later frame was already shown
    history.add(at, faces);
    $('download').disabled = false;
    draw(video, faces);
    const end = performance.now();
    stats.frames += 1;
    stats.lastMs = end - start;
    stats.lastFaces = faces;
    stats.history.push({at: end, ms: stats.lastMs, faces: faces.length, ...faces.timing});
    if (stats.history.length > 1000) stats.history.shift();
    if (stats.firstResultAt === null) stats.firstResultAt = end;
    times.push(end);
    while (times.length && end - times[0] > 2000) times.shift();
    stats.fps = times.length > 1 ? (times.length - 1) * 1000 / (end - times[0]) : 0;
    $('fps').textContent = `${stats.fps.toFixed(1)} fps`;
    $('latency').textContent = `${stats.lastMs.toFixed(0)} ms/frame`;
  };

  while (!token.stop && !video.ended) {
    await nextTask();  // not requestAnimationFrame: a frame takes longer than a display refresh anyway
    if (inFlight.size >= detector.parallelism) {
      await Promise.race(inFlight);
      continue;
    }
    if (token.stop || video.readyState < 2 || video.paused) continue;
    if (hasFrameCallback && presented === used) {  // this frame is being classified already: wait for the next
      await new Promise((resolve) => video.requestVideoFrameCallback(() => resolve()));
      continue;
    }
    used = presented;
    const start = performance.now();
    const at = video.srcObject ? (start - sessionStart) / 1000 : video.currentTime;  // s into the session / file
    const job = detector.classify(video, {track: true}).then((faces) => finish(faces, start, at));
    inFlight.add(job);
    job.catch((err) => setStatus(`Classification failed: ${err.message || err}`, true))
      .finally(() => inFlight.delete(job));
  }
  await Promise.allSettled([...inFlight]);
  if (running === token) $('stop').disabled = true;
}

function stopLive() {
  if (running) running.stop = true;
  running = null;
  video.pause();
  const stream = video.srcObject;
  if (stream) stream.getTracks().forEach((t) => t.stop());
  video.srcObject = null;
  $('stop').disabled = true;
}

/** One line saying what went wrong with the camera and what to do (never a blank page). */
export function cameraMessage(err) {
  const name = err && err.name;
  if (name === 'NotAllowedError' || name === 'SecurityError' || name === 'PermissionDeniedError') {
    return 'Camera access was refused. Allow the camera for this page (the camera icon in the address bar, or the '
      + 'site settings) and press Start camera again, or drop an image or a video file.';
  }
  if (name === 'NotFoundError' || name === 'DevicesNotFoundError' || name === 'OverconstrainedError') {
    return 'No camera was found. Connect one and press Start camera again, or drop an image or a video file.';
  }
  if (name === 'NotReadableError' || name === 'TrackStartError' || name === 'AbortError') {
    return 'The camera could not start (another program may be using it). Close that program and try again.';
  }
  return `The camera could not start (${name || 'error'}: ${(err && err.message) || err}).`;
}

async function startCamera() {
  await ready;
  if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
    setStatus('This browser offers no camera to this page: open it at http://localhost (or over https), '
      + 'or drop an image or a video file.', true);
    return;
  }
  stopLive();
  setStatus('Asking for the camera…');
  try {
    const stream = await navigator.mediaDevices.getUserMedia({video: {width: {ideal: 640}, height: {ideal: 480}}, audio: false});
    video.removeAttribute('src');
    video.srcObject = stream;
    await video.play();
    setStatus('Camera on.');
    runLive();
  } catch (err) {
    setStatus(cameraMessage(err), true);
  }
}

// ---------------------------------------------------------------------------------------------------
// Files: an image is classified once; a video plays through the live loop

async function openFile(file) {
  await ready;
  stopLive();
  const url = URL.createObjectURL(file);
  try {
    if (file.type.startsWith('video/')) {
      video.srcObject = null;
      video.src = url;
      await video.play();
      setStatus(`Playing ${file.name}.`);
      await runLive();
      return;
    }
    const img = new Image();
    img.src = url;
    await img.decode();
    const start = performance.now();
    const faces = await detector.classify(img);
    $('latency').textContent = `${(performance.now() - start).toFixed(0)} ms`;
    draw(img, faces);
    setStatus(faces.length ? `${file.name}: ${faces.length} face${faces.length === 1 ? '' : 's'}.`
      : `${file.name}: no face found.`);
  } catch (err) {
    setStatus(`Cannot open ${file.name}: not an image or a video this browser can decode.`, true);
  }
}

$('camera').addEventListener('click', startCamera);
$('stop').addEventListener('click', () => { stopLive(); setStatus('Stopped.'); });
$('download').addEventListener('click', () => history.download());
$('file').addEventListener('change', (e) => e.target.files[0] && openFile(e.target.files[0]));
const stage = $('stage');
stage.addEventListener('dragover', (e) => { e.preventDefault(); stage.classList.add('dragging'); });
stage.addEventListener('dragleave', () => stage.classList.remove('dragging'));
stage.addEventListener('drop', (e) => {
  e.preventDefault();
  stage.classList.remove('dragging');
  if (e.dataTransfer.files[0]) openFile(e.dataTransfer.files[0]);
});
if (params.get('camera') === '1') startCamera();
