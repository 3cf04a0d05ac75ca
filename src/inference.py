"""Emotion recognition on a video file or a webcam: every face boxed, labelled, tracked and smoothed.

    python src/inference.py -v                                   # cfg.video_path (videos/test.mp4)
    python src/inference.py -v ../shared/videos/Megamind.avi --no-display
    python src/inference.py -c --camera-index 0                  # webcam; q in the window (or Ctrl-C) stops
    python src/inference.py -v clip.mp4 --output clip_out.avi --max-frames 300

Each frame: faces found with cfg.face_detector (BlazeFace, about 2 ms), matched to the faces of the previous
frames so each keeps a stable id (src/tracking.py: IoU / centre distance; a face missed for up to 5 frames
keeps its id), cropped like AffectNet and classified in one call per frame (cfg.classifier_backend: TFLite
by default), its probabilities smoothed over time (exponential average, weight cfg.smoothing on the past;
0 = off). Threads overlap the work: decode + detect in one, classification in two (two single-threaded
TFLite interpreters on two frames at once; classifier_workers), smoothing + drawing in the main thread,
encoding + writing in another. --classify-every N classifies each face every Nth frame of its track only
(reusing its last probabilities in between) for about N times fewer classifier calls.
Speed (benchmarks/bench_inference.py, Megamind.avi, random-init 96x96 ResNet50, 2 shared CPU cores): about
4-5x the seed's whole-frame model.predict loop; frames/s depend on how busy the cores are.

Writes to cfg.results_dir:
  test_out.avi (--output NAME)   the annotated video (MJPG; .mp4 gives mp4v), same fps and size as the input,
                                 one frame per frame read; never the input file itself (refused)
  predictions.json               per frame read: frame, source_frame, time_s and faces [{id, box, label,
                                 top_label, confidence, probabilities, raw_probabilities, detector_score}];
                                 label is "uncertain" below config min_confidence, top_label the argmax
  labeled_images/frame_NNN.png   every cfg.labeled_frame_stride-th annotated frame (0 = none)
  inference_logs.txt             one line per frame (decode, detect, classify, draw, write ms), then one
                                 JSON summary line (frames, faces, fps, ms_per_frame_median, skipped_frames...)
These four are written under temporary names (.NAME.tmp-PID) and renamed into place together at the end (also
after Ctrl-C or an error once frames were written), so what lies there is always one complete run's outputs: a
run killed on the way leaves the previous run's, and the next run removes its temporary files. A
labeled_images/ folder this project did not write (no .written-by-emotion-recognition file) is never replaced.
A window shows the annotated frames with an FPS counter when a display is available (not with --no-display).
A frame that cannot be decoded in the middle of a file is skipped by seeking past it, and counted
(skipped_frames); a file that cannot be read at all, or a missing camera, stops with one 'error:' line.
Prints one JSON summary line at the end; the exit code is 130 after Ctrl-C (outputs still complete).
"""
from __future__ import annotations

import json
import os
import queue
import signal
import socket
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

# libav prints a line per damaged macroblock to stderr; damaged frames are counted instead (before cv2 loads).
os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")

from emotion import cli  # noqa: E402
from emotion import outputs  # noqa: E402
from emotion import paths  # noqa: E402
from emotion.config import UserError  # noqa: E402

WINDOW = "emotion recognition (q quits)"
LOG_NAME = "inference_logs.txt"
PREDICTIONS_NAME = "predictions.json"
LABELED_DIR = "labeled_images"
FOURCC = {".avi": "MJPG", ".mp4": "mp4v"}
DEFAULT_FPS = 30.0          # for the output video when the source reports none (most webcams)
QUEUE_FRAMES = 4            # decoded frames waiting for the detector (and annotated ones for the writer)
MAX_MISSED = 5              # a face track survives this many frames without a detection
SEEK_TRIES = 12             # a damaged stretch of a file: attempts to seek past it before giving up
CAMERA_RETRIES = 25         # a webcam frame that does not come: retries (20 ms apart) before stopping
FPS_WINDOW = 30             # frames in the on-screen FPS average


def parse_args(argv=None):
    p = cli.parser(__doc__)
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("-c", "--camera", action="store_true", help="read the webcam (--camera-index)")
    source.add_argument("-v", "--video", nargs="?", const="", default=None, metavar="PATH",
                        help="read a video file (no PATH: config key video_path)")
    p.add_argument("--camera-index", type=cli.non_negative_int, default=0, metavar="N", help="which webcam, for -c")
    p.add_argument("--output", default="test_out.avi", metavar="NAME",
                   help="annotated video, in results_dir unless a path is given (.avi: MJPG, .mp4: mp4v)")
    p.add_argument("--no-display", action="store_true", help="never open a window (headless run)")
    p.add_argument("--classify-every", type=cli.positive_int, default=1, metavar="N",
                   help="classify a face on the first frame of its track and every Nth frame after, reusing its "
                        "last probabilities in between (about N times fewer classifier calls); 1 = every frame")
    p.add_argument("--max-frames", type=cli.positive_int, default=None, metavar="N",
                   help="stop after N frames (quick runs; a webcam otherwise runs until q or Ctrl-C)")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    cfg = cli.load_config(args)
    output = Path(args.output).expanduser()
    if output.suffix.lower() not in FOURCC:
        raise UserError(f"--output must end in {' or '.join(FOURCC)}, got {args.output}")
    if not output.is_absolute() and output.parent == Path("."):
        output = Path(cfg.results_dir) / output
    check_outputs(args, cfg, output)
    source = open_source(args, cfg)  # a missing file or camera fails here, before the model loads
    try:
        started = time.perf_counter()
        rec = load_recognizer(cfg)  # imports TensorFlow
        startup_s = time.perf_counter() - started
        from emotion import card
        print(card.summary_line(rec.model_path), flush=True)  # how good the model is, from its model card
        display = not args.no_display and display_available()
        if source.kind == "camera" and not display and not args.no_display:
            print("note: no display found, so no window: stop with Ctrl-C (or use --max-frames N)", file=sys.stderr)
        summary = run(source, rec, cfg, output, display=display, max_frames=args.max_frames, startup_s=startup_s,
                      classify_every=args.classify_every)
    finally:
        source.release()
    print(json.dumps(summary), flush=True)
    return 130 if summary.get("interrupted") else 0


def check_outputs(args, cfg, output: Path) -> None:
    """Before the model loads: the output video is not the input video, and both output folders are writable."""
    video = Path(args.video or cfg.video_path).expanduser() if args.video is not None else None
    if video is not None and paths.same_file(video, output):
        raise UserError(f"--output {output} is the input video {video}: it would be overwritten; "
                        f"choose another --output")
    results_dir = Path(cfg.results_dir)
    paths.check_writable(results_dir, "results_dir")
    if not paths.same_file(output.parent, results_dir):
        paths.check_writable(output.parent, "--output folder", hint="--output PATH")
    _staged_outputs(results_dir, output, bool(cfg.labeled_frame_stride)).check(inputs=[video] if video else [])


# ------------------------------------------------------------------------------------------------
# Frame sources


class FrameSource:
    """A cv2.VideoCapture that reads on past damaged frames.

    read(buffer) -> (frame BGR, source frame number) or None at the end. A video file whose read() fails
    before the frame count its header announces is sought past the failing frame (CAP_PROP_POS_FRAMES),
    1, 2, 3, 4, then 8, 16, ... frames ahead, up to SEEK_TRIES times; the frames passed over count in
    `skipped`. When no seek helps (a truncated file), reading stops and the frames never reached count in
    `lost_at_end`. (OpenCV's FFmpeg decoder conceals most damage itself: a frame with broken macroblocks
    comes out patched and read() succeeds; only what it cannot decode at all fails.)
    A webcam is retried CAMERA_RETRIES times, 20 ms apart, before it counts as gone (stop_reason)."""

    def __init__(self, cap, kind: str, name: str, first_frame=None):
        import cv2
        self._cv2 = cv2
        self.cap, self.kind, self.name = cap, kind, name
        fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
        self.fps = fps if 0 < fps <= 240 else None
        count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0) if kind == "video" else 0
        self.frame_count = count if count > 0 else None
        self.position = 0          # source frame number of the next read
        self.skipped = 0           # frames passed over mid-stream (video) or failed reads (camera)
        self.lost_at_end = 0       # frames the header announces that could not be reached
        self.read_failures = 0     # read() calls that returned False, end of file excluded
        self.stop_reason = "end"
        self._first = first_frame

    def read(self, buffer=None):
        if self._first is not None:
            frame, self._first = self._first, None
            self.position = 1
            return frame, 0
        cap = self.cap
        ok, frame = cap.read(buffer) if buffer is not None else cap.read()
        if ok:
            self.position += 1
            return frame, self.position - 1
        if self.kind == "camera":
            return self._retry_camera(buffer)
        return self._skip_damaged(buffer)

    def _retry_camera(self, buffer):
        for _ in range(CAMERA_RETRIES):
            self.read_failures += 1
            time.sleep(0.02)
            ok, frame = self.cap.read(buffer) if buffer is not None else self.cap.read()
            if ok:
                self.skipped += 1
                self.position += 1
                return frame, self.position - 1
        self.stop_reason = "camera stopped delivering frames"
        return None

    def _skip_damaged(self, buffer):
        cv2 = self._cv2
        if self.frame_count is None or self.position >= self.frame_count:
            return None  # the end of the file
        failed_at = self.position
        self.read_failures += 1
        step = 1
        for attempt in range(SEEK_TRIES):
            target = failed_at + step
            if target >= self.frame_count:
                break
            self.cap.set(cv2.CAP_PROP_POS_FRAMES, target)
            landed = int(self.cap.get(cv2.CAP_PROP_POS_FRAMES))
            if landed > failed_at:
                ok, frame = self.cap.read(buffer) if buffer is not None else self.cap.read()
                if ok:
                    self.skipped += landed - failed_at
                    self.position = landed + 1
                    return frame, landed
            self.read_failures += 1
            step = step + 1 if attempt < 3 else step * 2
        self.lost_at_end = self.frame_count - failed_at
        self.stop_reason = f"unreadable from frame {failed_at} of {self.frame_count}"
        return None

    def release(self) -> None:
        self.cap.release()


def open_source(args, cfg) -> FrameSource:
    """The webcam or the video file of the arguments, with its first frame read (one clear error otherwise)."""
    import cv2
    if args.camera:
        index = args.camera_index
        level = _set_cv_log_level(0)  # OpenCV logs 2-3 lines for a missing camera: we say it in one
        try:
            cap = cv2.VideoCapture(index)
            opened = cap.isOpened()
            ok, frame = cap.read() if opened else (False, None)
        finally:
            _set_cv_log_level(level)
        if not opened:
            cap.release()
            raise UserError(f"no camera at index {index} (is a webcam connected and free? try --camera-index N, "
                            f"or -v PATH for a video file)")
        if not ok:
            cap.release()
            raise UserError(f"camera {index} opened but delivered no frame (in use by another program?)")
        return FrameSource(cap, "camera", f"camera:{index}", frame)
    path = Path(args.video or cfg.video_path).expanduser()
    if not path.exists():
        hint = "" if args.video else " (config key video_path; pass -v PATH for another file)"
        raise UserError(f"video not found: {path}{hint}")
    if path.is_dir():
        raise UserError(f"not a video file: {path} is a folder")
    try:
        with open(path, "rb"):
            pass
    except OSError as exc:
        raise UserError(f"cannot read video {path}: {exc.strerror}") from None
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        cap.release()
        raise UserError(f"cannot read video {path}: not a video OpenCV can open (damaged, or an unknown format)")
    ok, frame = cap.read()
    if not ok:
        cap.release()
        raise UserError(f"cannot read video {path}: no frame could be decoded (damaged or empty file)")
    return FrameSource(cap, "video", str(path), frame)


def _set_cv_log_level(level: int) -> int:
    import cv2
    try:
        old = cv2.getLogLevel()
        cv2.setLogLevel(level)  # 0: silent
        return old
    except (AttributeError, cv2.error):
        return level


# ------------------------------------------------------------------------------------------------
# Display


def display_available() -> bool:
    """Whether a window can be shown: an X display that accepts connections (Linux), or another desktop OS.
    Checked before OpenCV's Qt backend is touched, because Qt aborts the process when it finds no display."""
    if sys.platform in ("win32", "darwin"):
        return True
    display = os.environ.get("DISPLAY", "")
    if not display or not _x_display_reachable(display):
        return False
    import cv2
    try:
        cv2.namedWindow(WINDOW, cv2.WINDOW_NORMAL)
    except cv2.error as exc:
        print(f"warning: cannot open a window ({str(exc).strip().splitlines()[-1]}); running without one",
              file=sys.stderr)
        return False
    return True


def _x_display_reachable(display: str) -> bool:
    host, _, rest = display.rpartition(":")
    try:
        number = int(rest.split(".")[0])
    except ValueError:
        return False
    try:
        if host in ("", "unix") or host.startswith("/"):
            path = host if host.startswith("/") else f"/tmp/.X11-unix/X{number}"
            for address in (path, "\0" + path):  # the socket file, or Linux's abstract socket
                with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                    s.settimeout(0.5)
                    try:
                        s.connect(address)
                        return True
                    except OSError:
                        continue
            return False
        with socket.create_connection((host, 6000 + number), timeout=0.5):
            return True
    except OSError:
        return False


# ------------------------------------------------------------------------------------------------
# The pipeline: decode + detect + ids (_Producer) -> classify (_Classifiers) -> smooth + draw (main) -> _Writer


_END = object()


class _Producer(threading.Thread):
    """Decodes frames into recycled buffers, finds the faces, gives them track ids, and crops those due for
    classification (every face when classify_every is 1; else a track's first frame and every
    classify_every-th after its last classification); queues _Frame items, then _END."""

    def __init__(self, source: FrameSource, rec, tracker, classify_every: int, max_frames: int | None,
                 stop: threading.Event, pool: queue.Queue):
        super().__init__(name="decode-detect", daemon=True)
        self.source, self.rec, self.max_frames, self.stop, self.pool = source, rec, max_frames, stop, pool
        self.tracker, self.classify_every = tracker, classify_every
        self._classified_at: dict[int, int] = {}  # track id -> frame index of its last classification
        self.frames: queue.Queue = queue.Queue(maxsize=QUEUE_FRAMES if source.kind == "video" else 2)
        self.error: BaseException | None = None

    def _put(self, item) -> bool:
        while not self.stop.is_set():
            try:
                self.frames.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def run(self):
        import cv2
        import numpy as np
        index, rgb = 0, None
        try:
            while not self.stop.is_set():
                if self.max_frames is not None and index >= self.max_frames:
                    self.source.stop_reason = "max_frames"
                    break
                try:
                    buffer = self.pool.get_nowait()
                except queue.Empty:
                    buffer = None
                start = time.perf_counter()
                got = self.source.read(buffer)
                decoded = time.perf_counter()
                if got is None:
                    break
                frame, source_index = got
                if rgb is None or rgb.shape != frame.shape:
                    rgb = np.empty_like(frame)
                cv2.cvtColor(frame, cv2.COLOR_BGR2RGB, dst=rgb)
                found = self.rec.detect(rgb)
                boxes = [f.box for f in found]
                ids = self.tracker.assign(boxes)
                due = self._due(index, ids)
                crops = self.rec.crops(rgb, [boxes[i] for i in due]) if due else None
                done = time.perf_counter()
                item = _Frame(index, source_index, frame, found, ids, due, crops, (decoded - start) * 1000,
                              (done - decoded) * 1000)
                if not self._put(item):
                    break
                index += 1
        except BaseException as exc:  # reported by the main thread
            self.error = exc
        finally:
            self._put(_END)

    def _due(self, index: int, ids: list[int]) -> list[int]:
        """Positions (in ids) of the faces to classify in frame `index`."""
        if self.classify_every <= 1:
            return list(range(len(ids)))
        due = []
        for i, face_id in enumerate(ids):
            last = self._classified_at.get(face_id)
            if last is None or index - last >= self.classify_every:
                self._classified_at[face_id] = index
                due.append(i)
        if len(self._classified_at) > 4 * (len(self.tracker.tracks) + 8):  # forget dropped tracks
            live = {t.id for t in self.tracker.tracks}
            self._classified_at = {k: v for k, v in self._classified_at.items() if k in live}
        return due


@dataclass
class _Frame:
    index: int              # frame number in this run
    source_index: int       # frame number in the file
    frame: object           # BGR uint8, annotated in place later
    found: list             # faces.Face
    ids: list               # track id per face
    due: list               # positions of the faces classified in this frame
    crops: object           # uint8 [len(due), H, W, 3] or None
    decode_ms: float
    detect_ms: float


class _Classifiers:
    """Runs the classifier on the crops of one frame at a time on a small pool of threads, each with its own
    single-threaded TFLite interpreter, so that two frames are classified at once on two cores (a Keras
    classifier, which spreads one call over all cores itself, gets one thread)."""

    def __init__(self, clf, workers: int):
        from concurrent.futures import ThreadPoolExecutor
        self.free: queue.Queue = queue.Queue()
        self.free.put(clf)
        for _ in range(workers - 1):
            self.free.put(type(clf)(clf.path, num_threads=getattr(clf, "num_threads", 1) or 1))
        self.workers = workers
        self.executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="classify")

    def _predict(self, crops):
        clf = self.free.get()
        try:
            start = time.perf_counter()
            probs = clf.predict(crops)
            return probs, (time.perf_counter() - start) * 1000
        finally:
            self.free.put(clf)

    def submit(self, crops):
        return self.executor.submit(self._predict, crops)

    def shutdown(self) -> None:
        self.executor.shutdown(wait=True, cancel_futures=True)


class _Writer(threading.Thread):
    """Encodes annotated frames into the video, saves every stride-th one as PNG and writes the log lines,
    then gives the frame buffer back to the producer's pool."""

    def __init__(self, video_path: Path, fourcc: str, fps: float, labeled_dir: Path | None, stride: int,
                 log, pool: queue.Queue):
        super().__init__(name="frame-writer", daemon=True)
        self.video_path, self.fourcc, self.fps = video_path, fourcc, fps
        self.labeled_dir, self.stride, self.log, self.pool = labeled_dir, stride, log, pool
        self.jobs: queue.Queue = queue.Queue(maxsize=QUEUE_FRAMES)
        self.writer = None
        self.size = None
        self.written = 0
        self.labeled = 0
        self.write_ms: list[float] = []
        self.error: BaseException | None = None

    def open(self, size: tuple[int, int]) -> None:
        import cv2
        self.size = size
        self.video_path.parent.mkdir(parents=True, exist_ok=True)
        self.writer = cv2.VideoWriter(str(self.video_path), cv2.VideoWriter_fourcc(*self.fourcc), self.fps, size)
        if not self.writer.isOpened():
            raise UserError(f"cannot write the video {self.video_path} ({self.fourcc} at {self.fps:.2f} fps, "
                            f"{size[0]}x{size[1]})")

    def run(self):
        import cv2
        while True:
            job = self.jobs.get()
            if job is _END:
                break
            frame, index, line = job
            if self.error is not None:
                continue  # keep draining, so that the main thread never blocks
            try:
                start = time.perf_counter()
                out = frame
                if (frame.shape[1], frame.shape[0]) != self.size:  # a camera changing resolution
                    out = cv2.resize(frame, self.size)
                self.writer.write(out)
                if self.labeled_dir is not None and self.stride and index % self.stride == 0:
                    cv2.imwrite(str(self.labeled_dir / f"frame_{index:03d}.png"), out)
                    self.labeled += 1
                write_ms = (time.perf_counter() - start) * 1000
                self.write_ms.append(write_ms)
                self.log.write(f"{line} write_ms={write_ms:.2f}\n")
                self.written += 1
            except BaseException as exc:
                self.error = exc
            finally:
                self.pool.put(frame)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.release()


def classifier_workers(clf) -> int:
    """Frames classified at once: 2 single-threaded TFLite interpreters side by side on a machine with 2 or
    more cores, else 1 (a Keras classifier spreads each call over the cores itself: 1). Measured on this
    project's shared 2-core machine, same runs alternated (Megamind.avi, 120-270 frames): 55 vs 35 frames/s
    with one other process busy; 13.6 vs 15.0 when two others kept both cores busy. EMOTION_CLASSIFIER_WORKERS
    overrides it (1 = classification in one thread, still overlapping decoding, detection and writing)."""
    if getattr(clf, "backend", None) != "tflite" or getattr(clf, "path", None) is None:
        return 1
    env = os.environ.get("EMOTION_CLASSIFIER_WORKERS", "").strip()
    if env:
        if not env.isdigit() or int(env) < 1:
            raise UserError(f"EMOTION_CLASSIFIER_WORKERS must be a whole number >= 1, got {env!r}")
        return int(env)
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    return 2 if cores >= 2 else 1


def load_recognizer(cfg):
    """EmotionRecognizer with single-threaded TFLite interpreters (threads: classifier_workers), unless
    EMOTION_TFLITE_THREADS says otherwise."""
    from emotion import classifier
    from emotion import recognizer
    threads = None if os.environ.get("EMOTION_TFLITE_THREADS") else 1
    clf = classifier.load_classifier(cfg.model_save_path, prefer=cfg.classifier_backend, num_threads=threads)
    return recognizer.EmotionRecognizer(cfg, classifier=clf)


def run(source: FrameSource, rec, cfg, output: Path, display: bool = False, max_frames: int | None = None,
        startup_s: float = 0.0, workers: int | None = None, classify_every: int = 1) -> dict:
    """Process every frame of `source` with the recognizer `rec`; write the outputs; return the summary.

    Threads: decode + detect + track ids + crop (_Producer) -> classify (_Classifiers, `workers` frames at
    once; default classifier_workers) -> smooth + draw + display (this thread, in frame order) -> encode +
    write + log (_Writer). classify_every N > 1: a face is classified on its track's first frame and every
    Nth frame after; in between its last raw probabilities are reused (about N times fewer classifier calls)."""
    import collections

    import cv2
    import numpy as np
    from emotion import recognizer
    from emotion import tracking

    results_dir = Path(cfg.results_dir)
    log_path = results_dir / LOG_NAME
    predictions_path = results_dir / PREDICTIONS_NAME
    staged = _staged_outputs(results_dir, output, bool(cfg.labeled_frame_stride))
    labeled_dir = staged.tmp.get("labeled") if cfg.labeled_frame_stride else None
    try:
        staged.prepare()
        log = open(staged.tmp["log"], "w", encoding="utf-8", buffering=1 << 16)
    except OSError as exc:
        staged.discard()
        raise UserError(f"cannot write to results_dir {results_dir}: {exc.strerror or exc}") from None
    try:
        classifiers = _Classifiers(rec.classifier, workers or classifier_workers(rec.classifier))
    except BaseException:
        log.close()
        staged.discard()
        raise
    fps_in = source.fps or DEFAULT_FPS
    smoothing = float(cfg.smoothing)
    tracker = tracking.FaceTracker(smoothing=smoothing, max_missed=MAX_MISSED)   # ids: the producer's
    smoother = tracking.ProbabilitySmoother(smoothing, forget_after=MAX_MISSED)  # probabilities: this thread's
    held: dict[int, np.ndarray] = {}  # track id -> its last raw probabilities (classify_every > 1)
    class_names = rec.class_names
    no_probs = np.zeros((0, len(class_names)), np.float32)

    stop = threading.Event()
    pool: queue.Queue = queue.Queue()
    writer = _Writer(staged.tmp["video"], FOURCC[output.suffix.lower()], fps_in, labeled_dir, cfg.labeled_frame_stride,
                     log, pool)
    producer = _Producer(source, rec, tracker, classify_every, max_frames, stop, pool)
    pending: collections.deque = collections.deque()
    predictions: list[dict] = []
    stage = {"decode": [], "detect": [], "classify": [], "draw": [], "wall": []}
    stop_reason = None
    interrupted = False
    error: BaseException | None = None
    recent: collections.deque = collections.deque(maxlen=FPS_WINDOW)
    started = time.perf_counter()
    last_done = started

    def finish(item: _Frame, future) -> None:
        """Smooth, draw, show and hand one classified frame to the writer (frames arrive in order)."""
        nonlocal last_done, stop_reason
        fresh, classify_ms = future.result() if future is not None else (no_probs, 0.0)
        t0 = time.perf_counter()
        frame, found, ids = item.frame, item.found, item.ids
        boxes = [f.box for f in found]
        raw = np.empty((len(found), len(class_names)), np.float32)
        for row, i in zip(fresh, item.due):
            raw[i] = row
        if classify_every > 1:
            classified = set(item.due)
            for i, face_id in enumerate(ids):
                if i in classified:
                    held[face_id] = raw[i]
                elif face_id in held:
                    raw[i] = held[face_id]
                else:  # not expected: the producer classifies every new track; classify it here
                    rgb = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
                    raw[i] = held[face_id] = rec.classifier.predict(rec.crops(rgb, [boxes[i]]))[0]
                    classified.add(i)
            if len(held) > 4 * (len(ids) + 8):
                held_ids = set(smoother.state) | set(ids)
                for face_id in [k for k in held if k not in held_ids]:
                    del held[face_id]
        smoothed = smoother.update(ids, raw)
        results = (recognizer.results_from_probs(boxes, smoothed, class_names, [f.score for f in found],
                                                 min_confidence=rec.min_confidence)
                   if boxes else [])
        fps_now = len(recent) / sum(recent) if recent and sum(recent) > 0 else None
        recognizer.draw_results(frame, results, fps=fps_now, ids=ids)
        faces_out = []
        for i, (face_id, result, raw_row) in enumerate(zip(ids, results, raw)):
            entry = {"id": int(face_id), **result.to_dict()}
            entry.pop("whole_image", None)
            if smoothing > 0:
                entry["raw_probabilities"] = {k: round(float(v), 6) for k, v in zip(class_names, raw_row)}
            if classify_every > 1:
                entry["classified"] = i in classified
            faces_out.append(entry)
        index, source_index, decode_ms, detect_ms = item.index, item.source_index, item.decode_ms, item.detect_ms
        time_s = source_index / fps_in if source.kind == "video" else t0 - started
        draw_ms = (time.perf_counter() - t0) * 1000
        if display:
            cv2.imshow(WINDOW, frame)
            key = cv2.waitKey(1) & 0xFF
            if key in (ord("q"), ord("Q"), 27) or cv2.getWindowProperty(WINDOW, cv2.WND_PROP_VISIBLE) < 1:
                stop_reason = "quit by user"
                stop.set()
        now = time.perf_counter()
        wall_ms = (now - last_done) * 1000
        last_done = now
        recent.append(wall_ms / 1000)
        for name, value in (("decode", decode_ms), ("detect", detect_ms), ("classify", classify_ms),
                            ("draw", draw_ms), ("wall", wall_ms)):
            stage[name].append(value)
        line = (f"frame={index} source_frame={source_index} faces={len(faces_out)} classified={len(item.due)} "
                f"decode_ms={decode_ms:.2f} "
                f"detect_ms={detect_ms:.2f} classify_ms={classify_ms:.2f} draw_ms={draw_ms:.2f} wall_ms={wall_ms:.2f}")
        predictions.append({"frame": index, "source_frame": source_index, "time_s": round(time_s, 4),
                            "faces": faces_out})
        writer.jobs.put((frame, index, line))
        if writer.error is not None:
            raise writer.error

    producer.start()
    writer_started = False
    try:
        while not stop.is_set():
            item = producer.frames.get()
            if item is _END:
                break
            if not writer_started:
                writer.open((item.frame.shape[1], item.frame.shape[0]))
                writer.start()
                writer_started = True
            pending.append((item, classifiers.submit(item.crops) if item.crops is not None else None))
            while len(pending) > classifiers.workers:
                finish(*pending.popleft())
        while pending and not stop.is_set():
            finish(*pending.popleft())
    except KeyboardInterrupt:
        interrupted = True
        stop_reason = "interrupted"
    except BaseException as exc:
        error = exc
    finally:
        previous_handler = _ignore_sigint()
        try:
            stop.set()
            classifiers.shutdown()
            if writer_started:
                writer.jobs.put(_END)
                writer.join()
            writer.close()
            producer.join(timeout=5)
            if error is None and producer.error is not None:
                error = producer.error
            if error is None and writer.error is not None:
                error = writer.error
            # Ctrl-C between the two lines of finish() that record and queue a frame: keep them in step.
            del predictions[writer.written:]
            frames = len(predictions)
            faces_total = sum(len(p["faces"]) for p in predictions)
            track_frames = collections.Counter(face["id"] for p in predictions for face in p["faces"])
            if stop_reason is None:
                stop_reason = source.stop_reason if error is None else f"error: {error}"
            staged.tmp["predictions"].write_text(json.dumps(predictions, separators=(",", ":")) + "\n",
                                                 encoding="utf-8")
            elapsed = time.perf_counter() - started

            def median(values):
                return round(float(np.median(values)), 2) if values else None

            summary = {
                "frames": frames, "faces": faces_total, "fps": round(frames / elapsed, 2) if elapsed > 0 else None,
                "ms_per_frame_median": median(stage["wall"]),
                "skipped_frames": source.skipped, "frames_lost_at_end": source.lost_at_end,
                "read_failures": source.read_failures,
                "source": source.name, "source_kind": source.kind, "source_frames": source.frame_count,
                "source_fps": round(fps_in, 3), "size": list(writer.size) if writer.size else None,
                "stopped": stop_reason, "interrupted": interrupted,
                "decode_ms_median": median(stage["decode"]), "detect_ms_median": median(stage["detect"]),
                "classify_ms_median": median(stage["classify"]), "draw_ms_median": median(stage["draw"]),
                "write_ms_median": median(writer.write_ms),
                "frames_with_faces": sum(1 for p in predictions if p["faces"]), "tracks": len(track_frames),
                "dominant_track_frames": max(track_frames.values()) if track_frames else 0,
                "smoothing": smoothing, "classify_every": classify_every,
                "faces_classified": sum(1 for p in predictions for f in p["faces"] if f.get("classified", True)),
                "backend": getattr(rec, "backend", None),
                "classifier_workers": classifiers.workers,
                "startup_s": round(startup_s, 2), "elapsed_s": round(elapsed, 3),
                "frames_written": writer.written, "labeled_images": writer.labeled,
                "video": str(output), "predictions": str(predictions_path), "log": str(log_path),
            }
            log.write(json.dumps(summary) + "\n")
            log.close()
            if writer_started:  # a video with at least one frame: this run's outputs replace the last run's
                staged.publish()
            else:
                staged.discard()
            if display:
                try:
                    cv2.destroyAllWindows()
                except cv2.error:
                    pass
        finally:
            _restore_sigint(previous_handler)
    if error is not None:
        raise error
    return summary


def _staged_outputs(results_dir: Path, video: Path, labeled: bool) -> outputs.Staged:
    """The four outputs of a run, published together. labeled_images/ is staged (empty with stride 0) when
    frames are labeled or when a previous run's folder would otherwise be left beside this run's outputs."""
    finals = {"video": video, "predictions": results_dir / PREDICTIONS_NAME, "log": results_dir / LOG_NAME}
    folder = results_dir / LABELED_DIR
    legacy = _is_frame_name
    if labeled or outputs.is_own_folder(folder, legacy):
        finals["labeled"] = folder
    return outputs.Staged(finals, journal_dir=results_dir, folders={"labeled"} & finals.keys(), legacy=legacy)


def _is_frame_name(name: str) -> bool:
    """frame_NNN.png: what labeled_images/ held before folders were marked as this project's."""
    return name.startswith("frame_") and name.endswith(".png") and name[6:-4].isdigit()


def _ignore_sigint():
    if threading.current_thread() is threading.main_thread():
        return signal.signal(signal.SIGINT, signal.SIG_IGN)
    return None


def _restore_sigint(handler) -> None:
    if handler is not None:
        signal.signal(signal.SIGINT, handler)


if __name__ == "__main__":
    cli.run(main)
