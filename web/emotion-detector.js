// Facial emotion recognition in the browser: BlazeFace finds the faces, the project's exported ResNet50
// (a TF.js graph model) classifies each one. Needs the TF.js UMD scripts loaded first (window.tf).
//
//   const detector = await EmotionDetector.create(await (await fetch('config.json')).json());
//   const faces = await detector.classify(videoOrImageOrCanvas);             // one still picture
//   const faces = await detector.classify(video, {track: true});             // live: ids + smoothing
//   // faces: [{box: [x, y, w, h], label, topLabel, confidence, probabilities: {anger: 0.01, ...}, detectorScore,
//   //          angle, wholeImage, id}]; label is 'uncertain' when confidence < config.minConfidence, topLabel the
//   //          argmax, angle the degrees the crop was turned by (config.faceAlignment 'eyes'; 0 with 'none')
//
// The geometry follows src/emotion/data/faces.py and src/emotion/runtime/recognizer.py: a square crop around the detector's box
// (cropMargin of the box side on each side, centre moved by cropDy box heights), resized to the model's
// input; a small near-square picture with no face found is classified whole (an AffectNet-style crop). With
// config.faceAlignment 'eyes' every crop (and a whole picture) is turned about its centre so that BlazeFace's eye
// line is level, as Python's face_alignment: eyes does.
// Live tracking and smoothing follow src/emotion/runtime/tracking.py (exponential average of each face's probabilities).
// On the WASM backend the emotion model runs in Web Workers (classifier-worker.js), one per core; BlazeFace,
// cropping and tracking stay on the page's thread.

const tf = globalThis.tf;

const SCORE_CLIP = 100;             // as src/emotion/data/faces.py: logits clipped before the sigmoid

/** Anchor centres in detector pixels: (size/8)^2 cells x 2 anchors, then (size/16)^2 cells x 6 (MediaPipe's SSD
 * anchors; 896 for the 128x128 front-camera model). */
function blazefaceAnchors(size) {
  const anchors = [];
  for (const [stride, perCell] of [[size / 16, 2], [size / 8, 6]]) {
    const cells = size / stride;
    for (let y = 0; y < cells; y++) {
      for (let x = 0; x < cells; x++) {
        for (let k = 0; k < perCell; k++) anchors.push([stride * (x + 0.5), stride * (y + 0.5)]);
      }
    }
  }
  return anchors;
}

function iou(a, b) {  // boxes [x0, y0, x1, y1]
  const iw = Math.max(0, Math.min(a[2], b[2]) - Math.max(a[0], b[0]));
  const ih = Math.max(0, Math.min(a[3], b[3]) - Math.max(a[1], b[1]));
  const inter = iw * ih;
  const union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter;
  return union > 0 ? inter / union : 0;
}

/** MediaPipe's weighted NMS (as src/emotion/data/faces.py): overlapping candidates are averaged, weighted by score. */
function weightedNms(candidates, threshold) {
  const remaining = [...candidates].sort((a, b) => b.score - a.score);
  const out = [];
  while (remaining.length) {
    const best = remaining[0];
    const group = remaining.filter((c) => iou(best.box, c.box) > threshold);
    const total = group.reduce((s, c) => s + c.score, 0);
    const box = [0, 1, 2, 3].map((i) => group.reduce((s, c) => s + c.box[i] * c.score, 0) / total);
    const keypoints = best.keypoints && best.keypoints.map((_, k) => [0, 1].map(
      (j) => group.reduce((s, c) => s + c.keypoints[k][j] * c.score, 0) / total));
    out.push({box, score: best.score, keypoints});
    for (const c of group) remaining.splice(remaining.indexOf(c), 1);
  }
  return out;
}

/** Degrees from the picture's x axis to the line from the subject's right eye to the left one (BlazeFace keypoints
 * 0 and 1, picture pixels, y down), as src/emotion/data/faces.py eye_angle: the turn that levels the eyes. */
export function eyeAngle(keypoints) {
  if (!keypoints || keypoints.length < 2) return 0;
  const [[rx, ry], [lx, ly]] = keypoints;
  if (lx === rx && ly === ry) return 0;
  return Math.atan2(ly - ry, lx - rx) * 180 / Math.PI;
}

/** [width, height] of a video, image, ImageData, canvas or ImageBitmap. */
export function sourceSize(source) {
  if (source instanceof HTMLVideoElement) return [source.videoWidth, source.videoHeight];
  if (source instanceof HTMLImageElement) return [source.naturalWidth, source.naturalHeight];
  if (typeof ImageData !== 'undefined' && source instanceof ImageData) return [source.width, source.height];
  return [source.width, source.height];  // canvas, ImageBitmap, OffscreenCanvas
}

/** Follows faces over frames (src/emotion/runtime/tracking.py, simplified to one pass): stable ids, smoothed probabilities. */
export class FaceTracker {
  constructor({smoothing = 0.6, iouThreshold = 0.3, maxCenterDistance = 0.5, maxMissed = 5} = {}) {
    Object.assign(this, {smoothing, iouThreshold, maxCenterDistance, maxMissed});
    this.tracks = [];
    this.nextId = 1;
  }

  reset() { this.tracks = []; }

  /** boxes [[x, y, w, h]], probs [[C floats]] -> [{id, probabilities}] in the same order. */
  update(boxes, probs) {
    const pairs = [];
    boxes.forEach((b, i) => this.tracks.forEach((t, j) => {
      const overlap = iou([b[0], b[1], b[0] + b[2], b[1] + b[3]], [t.box[0], t.box[1], t.box[0] + t.box[2], t.box[1] + t.box[3]]);
      const side = (b[2] + b[3] + t.box[2] + t.box[3]) / 4;
      const dist = Math.hypot(b[0] + b[2] / 2 - t.box[0] - t.box[2] / 2, b[1] + b[3] / 2 - t.box[1] - t.box[3] / 2) / Math.max(side, 1e-9);
      if (overlap >= this.iouThreshold) pairs.push([2 + overlap, i, j]);
      else if (dist <= this.maxCenterDistance) pairs.push([1 - dist, i, j]);
    }));
    pairs.sort((a, b) => b[0] - a[0]);
    const boxTrack = new Map();
    const usedTracks = new Set();
    for (const [, i, j] of pairs) {
      if (boxTrack.has(i) || usedTracks.has(j)) continue;
      boxTrack.set(i, this.tracks[j]);
      usedTracks.add(j);
    }
    this.tracks.forEach((t, j) => { if (!usedTracks.has(j)) t.misses += 1; });
    const out = boxes.map((box, i) => {
      let track = boxTrack.get(i);
      if (!track) {
        track = {id: this.nextId++, box, misses: 0, probs: null};
        this.tracks.push(track);
      }
      const p = probs[i];
      track.probs = track.probs && this.smoothing > 0
        ? track.probs.map((old, c) => this.smoothing * old + (1 - this.smoothing) * p[c]) : Array.from(p);
      track.box = box;
      track.misses = 0;
      return {id: track.id, probabilities: track.probs};
    });
    this.tracks = this.tracks.filter((t) => t.misses <= this.maxMissed);
    return out;
  }
}

/** The emotion model on the page's own thread (GPU backends, or a single core). run() -> Float32Array [n * C]. */
class LocalClassifier {
  static async create(modelUrl) {
    const {model, inputSize} = await globalThis.emotionModel.load(modelUrl);
    return Object.assign(new LocalClassifier(), {model, inputSize, size: 1});
  }

  run(pixels, n, height, width) {
    return globalThis.emotionModel.run(this.model, pixels, n, height, width);
  }
}

/** The emotion model in `size` Web Workers (classifier-worker.js), each on one WASM thread: consecutive frames
 * are classified in parallel, one per core. run() goes to the worker with the fewest jobs waiting. */
class WorkerPool {
  static async create(size, {modelUrl, backend, wasmPath, workerUrl}) {
    const pool = Object.assign(new WorkerPool(), {size, workers: [], pending: new Map(), nextId: 1});
    // downloaded once here and copied to each worker: the page fetches the model's bytes once, not per worker
    const artifacts = await tf.io.browserHTTPRequest(modelUrl).load();
    const started = [];
    for (let i = 0; i < size; i++) {
      const worker = new Worker(workerUrl);
      worker.jobs = 0;
      pool.workers.push(worker);
      started.push(new Promise((resolve, reject) => {
        worker.onmessage = ({data}) => (data.type === 'ready' ? resolve(data) : reject(new Error(data.message)));
        worker.onerror = (e) => reject(new Error(`classifier worker: ${e.message || 'failed to start'}`));
      }));
      worker.postMessage({type: 'init', artifacts, backend, wasmPath});
    }
    const [first] = await Promise.all(started);
    for (const worker of pool.workers) worker.onmessage = ({data}) => pool.settle(worker, data);
    pool.inputSize = first.inputShape;
    return pool;
  }

  run(pixels, n, height, width) {
    const worker = this.workers.reduce((a, b) => (b.jobs < a.jobs ? b : a));
    const id = this.nextId++;
    worker.jobs += 1;
    return new Promise((resolve, reject) => {
      this.pending.set(id, {resolve, reject});
      worker.postMessage({type: 'classify', id, pixels, n, height, width}, [pixels.buffer]);
    });
  }

  settle(worker, data) {
    worker.jobs -= 1;
    const job = this.pending.get(data.id);
    this.pending.delete(data.id);
    if (!job) return;
    if (data.type === 'result') job.resolve(data.probs);
    else job.reject(new Error(data.message));
  }
}

export class EmotionDetector {
  /**
   * config: what src/emotion/serving/webpage.py writes to config.json: {model, detector, classNames, cropMargin,
   * cropDy, faceAlignment ('none' | 'eyes'), tightCropCanvas, minScore,
   * nmsIou, smoothing, tightCropMaxSide, tightCropMaxAspect, minConfidence, modelCard}. options: backend 'webgpu' | 'webgl' | 'wasm' | 'cpu'
   * to force one (default: the fastest that works here, see pickBackend); workers: how many Web Workers run the
   * emotion model on WASM (default: one per core, up to 4; 0 or 1 = on this thread).
   */
  static async create(config, {backend = null, wasmPath = 'vendor/', threads = null, workers = null,
    workerUrl = 'classifier-worker.js'} = {}) {
    const chosen = await pickBackend(backend, wasmPath, threads);
    const size = workers ?? Math.min(4, navigator.hardwareConcurrency || 1);
    const modelUrl = new URL(config.model, location.href).href;
    const [detector, runner] = await Promise.all([
      tf.loadGraphModel(config.detector),
      chosen.name === 'wasm' && size >= 2 && typeof Worker !== 'undefined'
        ? WorkerPool.create(size, {modelUrl, backend: 'wasm', wasmPath: new URL(wasmPath, location.href).href,
          workerUrl: new URL(workerUrl, location.href).href})
        : LocalClassifier.create(modelUrl),
    ]);
    if (runner.size > 1) chosen.detail += ` x ${runner.size} workers`;
    const self = new EmotionDetector(config, detector, runner, chosen);
    tf.tidy(() => detector.execute(tf.zeros([1, self.detectorSize, self.detectorSize, 3])));  // warm-up
    return self;
  }

  constructor(config, detector, runner, backend) {
    this.config = config;
    this.detector = detector;
    this.runner = runner;
    this.backend = backend;
    this.parallelism = runner.size;  // frames the live loop may keep in flight
    this.classNames = config.classNames;
    this.inputSize = runner.inputSize;  // [H, W]
    this.detectorSize = detector.inputs[0].shape[1];  // 128: BlazeFace front-camera (short-range) model
    this.anchors = blazefaceAnchors(this.detectorSize);
    this.tracker = new FaceTracker({smoothing: config.smoothing});
    this.calls = 0;
    this.lastTracked = 0;
  }

  /**
   * Faces in a picture with their emotions: [{box, label, confidence, probabilities, detectorScore,
   * wholeImage, id}]. options.track: follow faces across calls and smooth their probabilities (live video);
   * options.detect false: classify the whole picture as one face. With workers, calls may overlap: a tracked
   * call that finishes after a later one is marked `stale` (result.stale) and leaves the tracker alone.
   */
  async classify(source, {track = false, detect = true} = {}) {
    const call = ++this.calls;
    const [width, height] = sourceSize(source);
    if (!width || !height) return [];
    const t0 = performance.now();
    let faces = detect ? await this.detectFaces(source, width, height) : [];
    const t1 = performance.now();
    let wholeImage = false;
    if (!faces.length && (!detect || this.isTightFaceCrop(width, height))) {
      faces = [{box: [0, 0, width, height], score: null}];
      wholeImage = true;
    }
    if (!faces.length) return [];
    const [h, w] = this.inputSize;
    const eyes = this.config.faceAlignment === 'eyes';  // each crop turned so that its eyes are level
    for (const face of faces) face.angle = eyes && !wholeImage ? eyeAngle(face.keypoints) : 0;
    const pixels = wholeImage ? await this.wholePixels(source, width, height, faces[0])
      : this.cropPixels(source, faces, width, height);
    const flat = await this.runner.run(pixels, faces.length, h, w);
    const timing = {detectMs: t1 - t0, classifyMs: performance.now() - t1};
    const n = this.classNames.length;
    let rows = faces.map((_, i) => Array.from(flat.subarray(i * n, (i + 1) * n)));
    let ids = faces.map(() => null);
    const stale = track && call < this.lastTracked;
    if (track && !stale) {
      this.lastTracked = call;
      const tracked = this.tracker.update(faces.map((f) => f.box), rows);
      rows = tracked.map((t) => t.probabilities);
      ids = tracked.map((t) => t.id);
    }
    const results = faces.map((face, i) => {
      const best = rows[i].indexOf(Math.max(...rows[i]));
      return {
        box: face.box.map((v) => Math.round(v)),
        // src/emotion/runtime/confidence.py's rule: below config.minConfidence the answer is "uncertain"
        label: rows[i][best] >= (this.config.minConfidence ?? 0) ? this.classNames[best] : 'uncertain',
        topLabel: this.classNames[best],
        confidence: rows[i][best],
        probabilities: Object.fromEntries(this.classNames.map((name, c) => [name, rows[i][c]])),
        detectorScore: face.score,
        angle: face.angle,  // degrees the crop was turned by (faceAlignment 'eyes'; 0 with 'none')
        wholeImage,
        id: ids[i],
      };
    });
    results.timing = timing;
    if (stale) results.stale = true;
    return results;
  }

  isTightFaceCrop(width, height) {
    const long = Math.max(width, height);
    return long <= this.config.tightCropMaxSide && long / Math.min(width, height) <= this.config.tightCropMaxAspect;
  }

  /** A reusable 2D canvas of the given size (CPU-backed: TF.js reads its pixels back every frame). */
  canvas(key, width, height) {
    this.canvases = this.canvases || {};
    let c = this.canvases[key];
    if (!c) {
      c = document.createElement('canvas');
      this.canvases[key] = c;
      c.ctx = c.getContext('2d', {willReadFrequently: true});
    }
    if (c.width !== width || c.height !== height) Object.assign(c, {width, height});
    return c;
  }

  /** BlazeFace on the picture letterboxed to its input (128x128) -> [{box: [x, y, w, h] image pixels, score}].
   * The same model and decoding as src/emotion/data/faces.py. The letterbox is drawn by the canvas (one scaled drawImage),
   * so no full-size frame tensor is made. */
  async detectFaces(source, width, height) {
    const size = this.detectorSize;
    const scale = size / Math.max(width, height);
    const padX = (size - width * scale) / 2;
    const padY = (size - height * scale) / 2;
    const canvas = this.canvas('detector', size, size);
    canvas.ctx.fillStyle = '#000';
    canvas.ctx.fillRect(0, 0, size, size);
    canvas.ctx.drawImage(source, padX, padY, width * scale, height * scale);
    const outputs = tf.tidy(() => {
      const input = tf.sub(tf.div(tf.expandDims(tf.cast(tf.browser.fromPixels(canvas), 'float32'), 0), 127.5), 1);
      const raw = this.detector.execute(input);
      // outputs by size: scores of the coarse grid (384), of the fine grid (512), their boxes (384x16, 512x16)
      const [s384, s512, b384, b512] = [...raw].sort((a, b) => a.size - b.size);
      return tf.squeeze(tf.concat([tf.concat([s512, b512], 2), tf.concat([s384, b384], 2)], 1), [0]);  // [896, 17]
    });
    const data = await outputs.data();
    tf.dispose(outputs);
    const minLogit = Math.log(this.config.minScore / (1 - this.config.minScore));
    const candidates = [];
    for (let i = 0; i < this.anchors.length; i++) {
      const r = data.subarray(i * 17, (i + 1) * 17);
      if (r[0] < minLogit) continue;
      const [ax, ay] = this.anchors[i];
      const cx = r[1] + ax;
      const cy = r[2] + ay;
      candidates.push({
        box: [cx - r[3] / 2, cy - r[4] / 2, cx + r[3] / 2, cy + r[4] / 2],
        score: 1 / (1 + Math.exp(-Math.max(-SCORE_CLIP, Math.min(SCORE_CLIP, r[0])))),
        // 6 keypoints (right eye, left eye, nose tip, mouth centre, right and left ear tragion) around the anchor
        keypoints: [0, 1, 2, 3, 4, 5].map((k) => [r[5 + 2 * k] + ax, r[6 + 2 * k] + ay]),
      });
    }
    // Boxes rounded to whole pixels and clipped to the picture, as src/emotion/data/faces.py's detect_rgb: the
    // crop is framed around the clipped box, so a face at the edge gets the crop Python gives it. Keypoints are
    // mapped to picture pixels the same way, neither rounded nor clipped.
    return weightedNms(candidates, this.config.nmsIou).map(({box, score, keypoints}) => {
      const [x0, y0, x1, y1] = box.map((v, k) => (v - (k % 2 ? padY : padX)) / scale);
      const [xa, ya] = [Math.max(0, Math.round(x0)), Math.max(0, Math.round(y0))];
      const [xb, yb] = [Math.min(width, Math.round(x1)), Math.min(height, Math.round(y1))];
      return {box: [xa, ya, xb - xa, yb - ya], score,
        keypoints: keypoints.map(([px, py]) => [(px - padX) / scale, (py - padY) / scale])};
    }).filter(({box}) => box[2] > 0 && box[3] > 0);
  }

  /** Square crops framed like AffectNet's (src/emotion/data/faces.py crop_box), scaled to the model's input by the canvas and
   * stacked in one canvas: RGBA bytes of all faces. Where a crop leaves the picture the edge pixels are repeated,
   * as src/emotion/data/faces.py crop_face does (border "replicate"): a black band there changed the answers. */
  cropPixels(source, faces, width, height) {
    const {cropMargin, cropDy} = this.config;
    const [h, w] = this.inputSize;
    const canvas = this.canvas('crops', w, h * faces.length);
    canvas.ctx.fillStyle = '#000';
    canvas.ctx.fillRect(0, 0, canvas.width, canvas.height);
    faces.forEach(({box: [x, y, bw, bh], angle}, i) => {
      if (angle) {
        this.drawTurnedCrop(canvas.ctx, source, [x, y, bw, bh], angle, width, height, i * h);
        return;
      }
      const side = Math.max(1, Math.round(Math.max(bw, bh) * (1 + 2 * cropMargin)));
      const x0 = Math.round(x + bw / 2 - side / 2);
      const y0 = Math.round(y + bh / 2 + cropDy * bh - side / 2);
      // the part of the square inside the picture, drawn where it belongs in the output square
      const [sx0, sy0] = [Math.max(0, x0), Math.max(0, y0)];
      const [sx1, sy1] = [Math.min(width, x0 + side), Math.min(height, y0 + side)];
      if (sx1 <= sx0 || sy1 <= sy0) return;
      const k = w / side;
      drawReplicated(canvas.ctx, source, [sx0, sy0, sx1, sy1], [x0, y0, x0 + side, y0 + side], k, i * h);
    });
    return canvas.ctx.getImageData(0, 0, canvas.width, canvas.height).data;
  }

  /** crop_box's square turned by `angle` degrees about its centre (src/emotion/data/faces.py _rotated_crop, the
   * same two steps): the upright square holding the turned one is drawn at the output's scale into a canvas (edges
   * repeated, as drawReplicated does), then drawn turned into the output's cell at row `top`, so that output
   * pixel p samples c + R(angle) (p - side / 2). The centre moves by cropDy box heights along the face's own
   * vertical. */
  drawTurnedCrop(ctx, source, [x, y, bw, bh], angle, width, height, top) {
    const {cropMargin, cropDy} = this.config;
    const [h, w] = this.inputSize;
    const a = angle * Math.PI / 180;
    const [cos, sin] = [Math.cos(a), Math.sin(a)];
    const side = Math.max(1, Math.round(Math.max(bw, bh) * (1 + 2 * cropMargin)));
    // whole-pixel corners as the upright crop has them
    const cx = Math.round(x + bw / 2 - sin * cropDy * bh - side / 2) + side / 2;
    const cy = Math.round(y + bh / 2 + cos * cropDy * bh - side / 2) + side / 2;
    const outer = Math.ceil(side * (Math.abs(cos) + Math.abs(sin))) + 4;  // the turned square fits inside
    const [ox, oy] = [Math.floor(cx - outer / 2), Math.floor(cy - outer / 2)];
    const [sx0, sy0] = [Math.max(0, ox), Math.max(0, oy)];
    const [sx1, sy1] = [Math.min(width, ox + outer), Math.min(height, oy + outer)];
    if (sx1 <= sx0 || sy1 <= sy0) return;
    const n = Math.max(1, Math.round(outer * Math.min(1, Math.max(w, h) / side)));
    const q = n / outer;  // pixels of the intermediate canvas per picture pixel
    // Shrunk like INTER_AREA: drawn at n * 2^k pixels (at most the picture's own scale), then halved k times (an
    // exact 2x2 mean each time), where one scaled drawImage would skip most pixels.
    let k = 0;
    while (q * 2 ** (k + 1) <= 1) k += 1;
    let size = n * 2 ** k;
    let region = this.canvas(`turn${k}`, size, size);
    region.ctx.clearRect(0, 0, size, size);
    drawReplicated(region.ctx, source, [sx0, sy0, sx1, sy1], [ox, oy, ox + outer, oy + outer], size / outer, 0);
    while (k > 0) {
      k -= 1;
      size /= 2;
      const half = this.canvas(`turn${k}`, size, size);
      half.ctx.clearRect(0, 0, size, size);
      half.ctx.drawImage(region, 0, 0, size, size);
      region = half;
    }
    ctx.save();
    ctx.beginPath();
    ctx.rect(0, top, w, h);
    ctx.clip();
    ctx.translate(w / 2, top + h / 2);
    ctx.scale(w / side, h / side);
    ctx.rotate(-a);
    ctx.scale(1 / q, 1 / q);
    ctx.translate(-q * (cx - ox), -q * (cy - oy));
    ctx.drawImage(region, 0, 0);
    ctx.restore();
  }

  /** The whole picture as one face, RGBA bytes at the model's input size: its own pixels when it already has
   * that size (an AffectNet crop), else scaled by the canvas. With faceAlignment 'eyes' it is then turned about
   * its centre to level the eyes BlazeFace finds in it pasted in the middle of a black square tightCropCanvas
   * times its size (src/emotion/data/faces.py tight_crop_angle and turn; no face: not turned); face.angle
   * says by how much. */
  async wholePixels(source, width, height, face = {}) {
    const [h, w] = this.inputSize;
    face.angle = 0;
    let picture = source;
    let [pw, ph] = [width, height];
    if (this.config.faceAlignment === 'eyes') {
      // its own canvas: an overlapping call (live video with workers) cannot draw over it while BlazeFace runs
      const small = document.createElement('canvas');
      Object.assign(small, {width: w, height: h});
      const sctx = small.getContext('2d');
      if (width === w && height === h) sctx.drawImage(source, 0, 0);
      else sctx.drawImage(source, 0, 0, width, height, 0, 0, w, h);
      const side = (this.config.tightCropCanvas ?? 3) * Math.max(w, h);
      const pasted = this.canvas('tightCrop', side, side);
      pasted.ctx.fillStyle = '#000';
      pasted.ctx.fillRect(0, 0, side, side);
      pasted.ctx.drawImage(small, Math.floor((side - w) / 2), Math.floor((side - h) / 2));
      const [best] = await this.detectFaces(pasted, side, side);
      face.angle = best ? eyeAngle(best.keypoints) : 0;
      [picture, pw, ph] = [small, w, h];
    }
    const canvas = this.canvas('whole', w, h);
    canvas.ctx.clearRect(0, 0, w, h);
    if (face.angle) {
      // output pixel p samples c + R(angle) (p - c) about the picture's centre, edges repeated
      const m = Math.ceil(Math.max(w, h) / 2) + 2;
      const region = this.canvas('turnWhole', w + 2 * m, h + 2 * m);
      region.ctx.clearRect(0, 0, region.width, region.height);
      drawReplicated(region.ctx, picture, [0, 0, w, h], [-m, -m, w + m, h + m], 1, 0);
      const {ctx} = canvas;
      ctx.save();
      ctx.translate(w / 2, h / 2);
      ctx.rotate(-face.angle * Math.PI / 180);
      ctx.translate(-w / 2 - m, -h / 2 - m);
      ctx.drawImage(region, 0, 0);
      ctx.restore();
    } else if (pw === w && ph === h) canvas.ctx.drawImage(picture, 0, 0);
    else canvas.ctx.drawImage(picture, 0, 0, pw, ph, 0, 0, w, h);
    return canvas.ctx.getImageData(0, 0, w, h).data;
  }
}

/** Draws the picture's rectangle [sx0, sy0, sx1, sy1] (inside it) where it lies in the crop square [x0, y0, x1, y1]
 * (which may reach past the picture), scaled by k, at row offset `top` of the canvas; the parts of the square
 * outside the picture repeat the nearest edge pixels (one-pixel strips, and the corner pixels, stretched). */
function drawReplicated(ctx, source, [sx0, sy0, sx1, sy1], [x0, y0, x1, y1], k, top) {
  const cols = [[x0, sx0, sx0, 1], [sx0, sx1, sx0, sx1 - sx0], [sx1, x1, sx1 - 1, 1]];  // [from, to, source x, width]
  const rows = [[y0, sy0, sy0, 1], [sy0, sy1, sy0, sy1 - sy0], [sy1, y1, sy1 - 1, 1]];
  for (const [dx0, dx1, srcX, srcW] of cols) {
    if (dx1 <= dx0) continue;
    for (const [dy0, dy1, srcY, srcH] of rows) {
      if (dy1 <= dy0) continue;
      ctx.drawImage(source, srcX, srcY, srcW, srcH, (dx0 - x0) * k, top + (dy0 - y0) * k, (dx1 - dx0) * k, (dy1 - dy0) * k);
    }
  }
}

/** Whether WebGL here is a software renderer (SwiftShader, llvmpipe): slower than WASM for this model. */
function softwareWebGL() {
  try {
    const gl = document.createElement('canvas').getContext('webgl2');
    if (!gl) return true;
    const info = gl.getExtension('WEBGL_debug_renderer_info');
    const renderer = info ? gl.getParameter(info.UNMASKED_RENDERER_WEBGL) : gl.getParameter(gl.RENDERER);
    return /swiftshader|llvmpipe|software|basic render/i.test(String(renderer));
  } catch {
    return true;
  }
}

/**
 * The TF.js backend to run on: `preferred` when given, else WebGPU or WebGL with a real GPU, then WASM
 * (SIMD, and threads when the page is cross-origin isolated), then the plain JavaScript CPU backend.
 * Returns {name, detail}.
 */
export async function pickBackend(preferred = null, wasmPath = 'vendor/', threads = null) {
  if (tf.wasm) {
    tf.wasm.setWasmPaths(wasmPath);
    if (threads) tf.wasm.setThreadsCount(threads);
  }
  const order = preferred ? [preferred] : ['webgpu', 'webgl', 'wasm', 'cpu'];
  const skipped = [];
  for (const name of order) {
    if (!tf.findBackendFactory(name)) { skipped.push(`${name}: not loaded`); continue; }
    if (!preferred && name === 'webgpu' && !(navigator.gpu && await navigator.gpu.requestAdapter().catch(() => null))) {
      skipped.push('webgpu: no GPU adapter'); continue;
    }
    if (!preferred && name === 'webgl' && softwareWebGL()) { skipped.push('webgl: software renderer'); continue; }
    try {
      if (await tf.setBackend(name)) {
        await tf.ready();
        return {name, detail: backendDetail(name), skipped};
      }
    } catch (err) {
      skipped.push(`${name}: ${err.message || err}`);
    }
  }
  throw new Error(`no TF.js backend could start (${skipped.join('; ')})`);
}

function backendDetail(name) {
  if (name !== 'wasm') return name;
  const simd = tf.env().getBool('WASM_HAS_SIMD_SUPPORT');
  const threaded = tf.env().getBool('WASM_HAS_MULTITHREAD_SUPPORT');
  const threads = threaded && tf.wasm.getThreadsCount ? tf.wasm.getThreadsCount() : 1;
  return `wasm (${simd ? 'SIMD' : 'no SIMD'}, ${threads} thread${threads === 1 ? '' : 's'})`;
}
