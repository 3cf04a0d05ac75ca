// The per-face history of a live session (camera or video file): a small timeline per face beside its
// probability bars, and the CSV the "Download CSV" button saves. Everything stays in the page's memory; the
// CSV is made into a Blob and saved by the browser itself: nothing is sent anywhere.
//
//   const history = new FaceHistory(classNames);
//   history.add(timeS, faces);                       // each classified frame: faces with id, box, label, ...
//   history.drawTimeline(canvas, faceId);             // the face's last canvas.width frames, stacked
//   const text = history.toCSV();                     // frames section, blank line, per-track section
//
// The CSV: one row per classified frame and face (time_s, id, x, y, w, h, label, confidence, prob_<class>),
// then an empty line, then one row per track with the columns of results/tracks.csv (src/emotion/runtime/track_report.py):
// id, first_s, last_s, frames, faces_classified, dominant_label (highest mean probability), mean_<class>,
// share_<class> (share of its frames with that label; share_uncertain when a label "uncertain" occurs).

// The class colours of the Python overlay (src/emotion/runtime/drawing.py PALETTE, there in BGR order), as RGB.
export const CLASS_COLORS = ['#e63c3c', '#c85aaa', '#3ca03c', '#3c78c8', '#f0c828', '#c8c8c8', '#2850dc',
  '#ff9628', '#78dc96', '#ff7878'];
export const UNCERTAIN = 'uncertain';
const MAX_ROWS = 500000;  // about 14 hours of one face at 10 frames/s: the oldest rows go first beyond that

const csvField = (v) => (/[",\n]/.test(String(v)) ? `"${String(v).replace(/"/g, '""')}"` : String(v));
const csvLine = (values) => values.map(csvField).join(',');

export class FaceHistory {
  constructor(classNames) {
    this.classNames = classNames;
    this.reset();
  }

  reset() {
    this.rows = [];          // {time, id, box, label, confidence, probs: [C]}
    this.byId = new Map();   // id -> rows of that face, in time order
    this.dropped = 0;
  }

  /** Record one classified frame: faces as EmotionDetector.classify returns them (with ids when tracked). */
  add(timeS, faces) {
    for (const face of faces) {
      if (face.id === null || face.id === undefined) continue;  // not tracked: no history to keep
      const row = {time: timeS, id: face.id, box: face.box, label: face.label, confidence: face.confidence,
        probs: this.classNames.map((c) => face.probabilities[c])};
      this.rows.push(row);
      if (!this.byId.has(face.id)) this.byId.set(face.id, []);
      this.byId.get(face.id).push(row);
    }
    while (this.rows.length > MAX_ROWS) {
      const old = this.rows.shift();
      this.byId.get(old.id).shift();
      if (!this.byId.get(old.id).length) this.byId.delete(old.id);
      this.dropped += 1;
    }
  }

  /** Per-track rows with the columns of tracks.csv, in order of first appearance. */
  tracks() {
    const uncertain = this.rows.some((r) => r.label === UNCERTAIN);
    const labels = uncertain ? [...this.classNames, UNCERTAIN] : this.classNames;
    return [...this.byId.entries()].map(([id, rows]) => {
      const mean = this.classNames.map((_, c) => rows.reduce((s, r) => s + r.probs[c], 0) / rows.length);
      const dominant = this.classNames[mean.indexOf(Math.max(...mean))];
      const share = labels.map((l) => rows.filter((r) => r.label === l).length / rows.length);
      return {id, first_s: rows[0].time, last_s: rows[rows.length - 1].time, frames: rows.length,
        faces_classified: rows.length, dominant_label: dominant, mean, share, labels};
    });
  }

  toCSV() {
    const names = this.classNames;
    const lines = [csvLine(['time_s', 'id', 'x', 'y', 'w', 'h', 'label', 'confidence', ...names.map((c) => `prob_${c}`)])];
    for (const r of this.rows) {
      lines.push(csvLine([r.time.toFixed(3), r.id, ...r.box, r.label, r.confidence.toFixed(6),
        ...r.probs.map((p) => p.toFixed(6))]));
    }
    const tracks = this.tracks();
    const labels = tracks.length ? tracks[0].labels : names;
    lines.push('', csvLine(['id', 'first_s', 'last_s', 'frames', 'faces_classified', 'dominant_label',
      ...names.map((c) => `mean_${c}`), ...labels.map((l) => `share_${l}`)]));
    for (const t of tracks) {
      lines.push(csvLine([t.id, t.first_s.toFixed(3), t.last_s.toFixed(3), t.frames, t.faces_classified,
        t.dominant_label, ...t.mean.map((m) => m.toFixed(4)), ...t.share.map((s) => s.toFixed(4))]));
    }
    return `${lines.join('\n')}\n`;
  }

  /**
   * The face's last canvas.width frames, one pixel column each (oldest left): its probabilities stacked from
   * the bottom in class order, each class in its colour, round(cumulative probability x height) pixels high.
   */
  drawTimeline(canvas, id) {
    const ctx = canvas.getContext('2d');
    const {width, height} = canvas;
    ctx.clearRect(0, 0, width, height);
    const rows = (this.byId.get(id) || []).slice(-width);
    rows.forEach((row, x) => {
      let below = 0;
      let cum = 0;
      row.probs.forEach((p, c) => {
        cum += p;
        const top = Math.min(height, Math.round(cum * height));
        if (top > below) {
          ctx.fillStyle = CLASS_COLORS[c % CLASS_COLORS.length];
          ctx.fillRect(x, height - top, 1, top - below);
        }
        below = Math.max(below, top);
      });
    });
  }

  /** Save the CSV through the browser's own download (a Blob URL: the data never leaves the page). */
  download(filename = 'emotions.csv') {
    const url = URL.createObjectURL(new Blob([this.toCSV()], {type: 'text/csv'}));
    const a = Object.assign(document.createElement('a'), {href: url, download: filename});
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10000);
  }
}
