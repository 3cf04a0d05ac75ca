"""Emotion recognition on a video file or a webcam (what inference.py runs): every face boxed, labelled, tracked
and smoothed; the annotated video, predictions.json, labeled frames, a log and the per-track report (tracks.csv,
emotion_timeline.png: track_report.py) written together.

    output = output_path("test_out.avi", cfg)              # in results_dir unless a path is given; None: no video
    check_outputs(cfg, output, input_video=Path("clip.mp4"))   # before the model loads
    source = frame_sources.open_video(Path("clip.mp4"))    # or frame_sources.open_camera(0)
    summary = recognize(source, cfg, output, display=False, max_frames=300, classify_every=1)   # releases source
    # a batch's video (batch_workers.py): its outputs in a folder of their own, published whole
    summary = run(source, rec, cfg, output=None, staged=VideoFolder(folder, journal_dir, "test_out.avi", True))

Per-frame records go to disk as the frames are written (prediction_stream.py) and the per-track report is
counted as they go (track_report.TrackReport): a run's memory does not grow with its length.

Importing this module loads OpenCV (not TensorFlow: load_recognizer does). The work is split three ways:
frames come from frame_sources.py, the threads are video_threads.py's, and what is computed per frame and per
run is video_frames.py's; VideoRun wires them together and publishes the outputs.
"""
from __future__ import annotations

import json
import os
import queue
import signal
import sys
import threading
import time
from pathlib import Path

import numpy as np

from emotion.common import outputs, paths, plots
from emotion.common.errors import UserError
from emotion.evaluation import card
from emotion.runtime import display as display_lib
from emotion.runtime import track_report, tracking
from emotion.runtime.prediction_stream import FrameFile, PredictionStream
from emotion.runtime.video_frames import FrameAnnotator, RunRecorder, StageTimes, log_line
from emotion.runtime.video_threads import END, Classifiers, Producer, Writer, classifier_workers

LOG_NAME = "inference_logs.txt"
PREDICTIONS_NAME = "predictions.json"
PREDICTION_LINES_NAME = "predictions.jsonl"   # a batch's videos: JSON Lines (VideoFolder)
LABELED_DIR = "labeled_images"
TRACKS_NAME, TIMELINE_NAME = "tracks.csv", "emotion_timeline.png"   # the per-track report (track_report.py)
FOURCC = {".avi": "MJPG", ".mp4": "mp4v"}
DEFAULT_FPS = 30.0          # for the output video when the source reports none (most webcams)
MAX_MISSED = 5              # a face track survives this many frames without a detection
FPS_WINDOW = 30             # frames in the on-screen FPS average


def output_path(name: str, cfg) -> Path:
    """The annotated video's path for --output NAME: in cfg.results_dir unless NAME has a folder; .avi or .mp4."""
    output = Path(name).expanduser()
    if output.suffix.lower() not in FOURCC:
        raise UserError(f"--output must end in {' or '.join(FOURCC)}, got {name}")
    if not output.is_absolute() and output.parent == Path("."):
        output = Path(cfg.results_dir) / output
    return output


def check_outputs(cfg, output: Path | None, input_video: Path | None = None) -> None:
    """Before the model loads: the output video (None: --no-video) is not the input video, and both output
    folders are writable."""
    if output is not None and input_video is not None and paths.same_file(input_video, output):
        raise UserError(f"--output {output} is the input video {input_video}: it would be overwritten; "
                        f"choose another --output")
    results_dir = Path(cfg.results_dir)
    paths.check_writable(results_dir, "results_dir")
    if output is not None and not paths.same_file(output.parent, results_dir):
        paths.check_writable(output.parent, "--output folder", hint="--output PATH")
    staged_outputs(results_dir, output, bool(cfg.labeled_frame_stride) and output is not None).check(
        inputs=[input_video] if input_video else [])


def staged_outputs(results_dir: Path, video: Path | None, labeled: bool) -> outputs.Staged:
    """The outputs of a run, published together (video None: --no-video, none written). labeled_images/ is
    staged (empty with stride 0) when frames are labeled or when a previous run's folder would otherwise be
    left beside this run's outputs."""
    finals = {"predictions": results_dir / PREDICTIONS_NAME, "log": results_dir / LOG_NAME,
              "tracks": results_dir / TRACKS_NAME, "timeline": results_dir / TIMELINE_NAME}
    if video is not None:
        finals["video"] = video
    folder = results_dir / LABELED_DIR
    legacy = is_frame_name
    if labeled or outputs.is_own_folder(folder, legacy):
        finals["labeled"] = folder
    return outputs.Staged(finals, journal_dir=results_dir, folders={"labeled"} & finals.keys(), legacy=legacy)


class VideoFolder:
    """One video's outputs in a folder of their own, published whole (outputs.Staged of the folder): a batch's
    layout (batch.py). The files of a single run, with predictions.jsonl (JSON Lines) for predictions.json; no
    video and no labeled frames when video_name is None (--no-video). Has what VideoRun uses of a Staged: tmp
    and finals (paths by key), check, prepare, publish, discard."""

    def __init__(self, folder: Path, journal_dir: Path, video_name: str | None, labeled: bool):
        self.staged = outputs.Staged({"folder": folder}, journal_dir=journal_dir, folders={"folder"})
        names = {"predictions": PREDICTION_LINES_NAME, "log": LOG_NAME, "tracks": TRACKS_NAME,
                 "timeline": TIMELINE_NAME}
        if video_name is not None:
            names["video"] = video_name
            if labeled:
                names["labeled"] = LABELED_DIR
        self.folder = Path(folder)
        self.finals = {key: self.folder / name for key, name in names.items()}
        self.tmp = {key: self.staged.tmp["folder"] / name for key, name in names.items()}

    def check(self, inputs=()) -> None:
        self.staged.check(inputs)

    def prepare(self) -> None:
        self.staged.prepare()
        if "labeled" in self.tmp:
            self.tmp["labeled"].mkdir()

    def publish(self) -> None:
        self.staged.publish()

    def discard(self) -> None:
        self.staged.discard()


def is_frame_name(name: str) -> bool:
    """frame_NNN.png: what labeled_images/ held before folders were marked as this project's."""
    return name.startswith("frame_") and name.endswith(".png") and name[6:-4].isdigit()


def load_recognizer(cfg):
    """EmotionRecognizer with single-threaded TFLite interpreters (threads: classifier_workers), unless
    EMOTION_TFLITE_THREADS says otherwise."""
    from emotion.runtime import classifier, recognizer
    threads = None if os.environ.get("EMOTION_TFLITE_THREADS") else 1
    clf = classifier.load_classifier(cfg.model_save_path, prefer=cfg.classifier_backend, num_threads=threads)
    return recognizer.EmotionRecognizer(cfg, classifier=clf)


def recognize(source, cfg, output: Path | None, display: bool = True, max_frames: int | None = None,
              classify_every: int = 1) -> dict:
    """Load the model, run every frame of `source` (released at the end) and return the summary. display:
    show a window when one can be opened (display.display_available)."""
    try:
        started = time.perf_counter()
        rec = load_recognizer(cfg)  # imports TensorFlow
        plots.pyplot()  # matplotlib for the end-of-run report, loaded at startup rather than after the last frame
        startup_s = time.perf_counter() - started
        print(card.summary_line(rec.model_path), flush=True)  # how good the model is, from its model card
        shown = display and display_lib.display_available()
        if source.kind == "camera" and not shown and display:
            print("note: no display found, so no window: stop with Ctrl-C (or use --max-frames N)", file=sys.stderr)
        return run(source, rec, cfg, output, display=shown, max_frames=max_frames, startup_s=startup_s,
                   classify_every=classify_every)
    finally:
        source.release()


def run(source, rec, cfg, output: Path | None, display: bool = False, max_frames: int | None = None,
        startup_s: float = 0.0, workers: int | None = None, classify_every: int = 1, staged=None,
        progress=None, keep_partial: bool = True) -> dict:
    """Process every frame of `source` (sources.FrameSource) with the recognizer `rec`; write the outputs; return
    the summary. Threads (video_threads.py): decode + detect + track ids + crop (Producer) -> classify
    (Classifiers, `workers` frames at once; default classifier_workers) -> smooth + draw + display (this
    thread, in frame order) -> encode + write + log (Writer). classify_every N > 1: a face is classified on its
    track's first frame and every Nth frame after; in between its last raw probabilities are reused.
    output None: no annotated video (nor labeled frames). staged: where the outputs go (default
    staged_outputs in results_dir; a VideoFolder for a batch's video). progress(frames done): called after each
    frame. keep_partial False: a run that fails part-way publishes nothing (its outputs are discarded)."""
    results_dir = Path(cfg.results_dir)
    if staged is None:
        staged = staged_outputs(results_dir, output, bool(cfg.labeled_frame_stride) and output is not None)
    try:
        staged.prepare()
        log = open(staged.tmp["log"], "w", encoding="utf-8", buffering=1 << 16)
    except OSError as exc:
        staged.discard()
        raise UserError(f"cannot write to results_dir {results_dir}: {exc.strerror or exc}") from None
    classifiers = None
    try:
        classifiers = Classifiers(rec.classifier, workers or classifier_workers(rec.classifier))
        video_run = VideoRun(source, rec, cfg, output, staged, log, classifiers, display=display,
                             max_frames=max_frames, startup_s=startup_s, classify_every=classify_every,
                             progress=progress, keep_partial=keep_partial)
    except BaseException:
        if classifiers is not None:
            classifiers.shutdown()
        log.close()
        staged.discard()
        raise
    video_run.loop()
    return video_run.close()


class VideoRun:
    """One run's threads and bookkeeping wired together (see run()): loop() until the source ends, the user
    quits or Ctrl-C, then close() stops the threads, writes predictions.json and the log's summary line,
    publishes the outputs (or discards them when no frame was written) and returns the summary (or raises the
    error a thread met). The per-face results of every frame go to self.recorder (video_frames.RunRecorder)."""

    def __init__(self, source, rec, cfg, output: Path | None, staged, log, classifiers,
                 display: bool = False, max_frames: int | None = None, startup_s: float = 0.0,
                 classify_every: int = 1, progress=None, keep_partial: bool = True):
        self.source, self.rec, self.output, self.staged, self.log = source, rec, output, staged, log
        self.classifiers, self.classify_every, self.startup_s = classifiers, classify_every, startup_s
        self.progress, self.keep_partial = progress, keep_partial
        self.window = display_lib.Window() if display else None
        self.fps_in = source.fps or DEFAULT_FPS
        self.smoothing = float(cfg.smoothing)
        self.uncertain = "min_confidence" in cfg  # the report's share_uncertain column (below min_confidence)
        tracker = tracking.FaceTracker(smoothing=self.smoothing, max_missed=MAX_MISSED)  # ids: the producer's
        self.annotator = FrameAnnotator(rec.class_names, self.smoothing, classify_every, forget_after=MAX_MISSED,
                                        classify_missing=self._classify_one,
                                        min_confidence=getattr(rec, "min_confidence", 0.0))
        self.stop = threading.Event()
        pool: queue.Queue = queue.Queue()
        labeled_dir = staged.tmp.get("labeled") if cfg.labeled_frame_stride and output is not None else None
        self.writer = Writer(staged.tmp.get("video"), FOURCC[output.suffix.lower()] if output else "", self.fps_in,
                             labeled_dir, cfg.labeled_frame_stride, log, pool)
        self.producer = Producer(source, rec, tracker, classify_every, max_frames, self.stop, pool)
        predictions = staged.tmp["predictions"]  # predictions.json: a JSON array; .jsonl: JSON Lines
        self.recorder = RunRecorder(PredictionStream(predictions, array=predictions.suffix == ".json"),
                                    track_report.TrackReport(rec.class_names, uncertain=self.uncertain))
        self.times = StageTimes(FPS_WINDOW)
        self.pending: list = []  # (Frame, future) submitted to the classifiers, in frame order
        self.stop_reason: str | None = None
        self.interrupted = False
        self.error: BaseException | None = None
        self.writer_started = False
        self.started = self.last_done = time.perf_counter()

    def _classify_one(self, frame_bgr, face):
        import cv2
        rgb = cv2.cvtColor(frame_bgr, cv2.COLOR_BGR2RGB)
        return self.rec.classifier.predict(self.rec.crops_rgb(rgb, [face.box], angles=self.rec.angles([face])))[0]

    def loop(self) -> None:
        """Frames from the producer to the classifiers, and back in order through finish_frame; a Ctrl-C or an
        error is kept for close()."""
        self.producer.start()
        try:
            while not self.stop.is_set():
                item = self.producer.frames.get()
                if item is END:
                    break
                if not self.writer_started:
                    self.writer.open((item.frame.shape[1], item.frame.shape[0]))
                    self.writer.start()
                    self.writer_started = True
                self.pending.append((item, self.classifiers.submit(item.crops) if item.crops is not None else None))
                while len(self.pending) > self.classifiers.workers:
                    self.finish_frame(*self.pending.pop(0))
            while self.pending and not self.stop.is_set():
                self.finish_frame(*self.pending.pop(0))
        except KeyboardInterrupt:
            self.interrupted = True
            self.stop_reason = "interrupted"
        except BaseException as exc:
            self.error = exc

    def finish_frame(self, item, future) -> None:
        """Smooth, draw, show, record and hand one classified frame to the writer (frames arrive in order)."""
        fresh, classify_ms = future.result() if future is not None else (
            np.zeros((0, len(self.rec.class_names)), np.float32), 0.0)
        t0 = time.perf_counter()
        faces = self.annotator.annotate(item.frame, item.found, item.ids, item.due, fresh, fps=self.times.fps())
        time_s = item.source_index / self.fps_in if self.source.kind == "video" else t0 - self.started
        draw_ms = (time.perf_counter() - t0) * 1000
        if self.window is not None and self.window.show(item.frame):
            self.stop_reason = "quit by user"
            self.stop.set()
        now = time.perf_counter()
        ms = {"decode": item.decode_ms, "detect": item.detect_ms, "classify": classify_ms, "draw": draw_ms,
              "wall": (now - self.last_done) * 1000}
        self.last_done = now
        self.times.add(**ms)
        line = log_line(item.index, item.source_index, len(faces), len(item.due), ms)
        self.recorder.add(item.index, time_s, faces, source_frame=item.source_index)
        self.writer.jobs.put((item.frame, item.index, line))
        self.recorder.keep(self.writer.written)  # the frames written so far: to disk, out of memory
        if self.writer.error is not None:
            raise self.writer.error
        if self.progress is not None:
            self.progress(item.index + 1)

    def close(self) -> dict:
        """Stop the threads, write and publish the outputs; the summary, or the error a thread met."""
        previous_handler = ignore_sigint()
        try:
            summary = self._close_outputs()
        finally:
            restore_sigint(previous_handler)
        if self.error is not None:
            raise self.error
        return summary

    def _close_outputs(self) -> dict:
        self.stop.set()
        self.classifiers.shutdown()
        if self.writer_started:
            self.writer.jobs.put(END)
            self.writer.join()
        self.writer.close()
        self.producer.join(timeout=5)
        for thread in (self.producer, self.writer):
            if self.error is None and thread.error is not None:
                self.error = thread.error
        if self.stop_reason is None:
            self.stop_reason = self.source.stop_reason if self.error is None else f"error: {self.error}"
        # Ctrl-C between the two lines of finish_frame() that record and queue a frame: keep them in step.
        counts = self.recorder.finish(written=self.writer.written)
        rows = track_report.write_report(FrameFile(self.staged.tmp["predictions"]), self.rec.class_names,
                                         self.staged.tmp["tracks"], self.staged.tmp["timeline"],
                                         title=f"{self.source.name}: {counts['frames']} frames",
                                         report=self.recorder.report)
        summary = self.summary(counts, time.perf_counter() - self.started)
        self.log.write(json.dumps(summary) + "\n")
        self.log.close()
        if self.writer_started and (self.error is None or self.keep_partial):
            self.staged.publish()  # a video with at least one frame: this run's outputs replace the last run's
            if rows:  # one line per track, before the script prints the JSON summary
                print("\n".join(track_report.track_lines(rows)), flush=True)
        else:
            self.staged.discard()
        if self.window is not None:
            self.window.close()
        return summary

    def summary(self, counts: dict, elapsed: float) -> dict:
        """The JSON summary line (printed, and the log's last line)."""
        source, writer, times, frames = self.source, self.writer, self.times, counts["frames"]
        return {
            "frames": frames, "faces": counts["faces"], "fps": round(frames / elapsed, 2) if elapsed > 0 else None,
            "ms_per_frame_median": times.median("wall"),
            "skipped_frames": source.skipped, "frames_lost_at_end": source.lost_at_end,
            "read_failures": source.read_failures,
            "source": source.name, "source_kind": source.kind, "source_frames": source.frame_count,
            "source_fps": round(self.fps_in, 3), "size": list(writer.size) if writer.size else None,
            "stopped": self.stop_reason, "interrupted": self.interrupted,
            "decode_ms_median": times.median("decode"), "detect_ms_median": times.median("detect"),
            "classify_ms_median": times.median("classify"), "draw_ms_median": times.median("draw"),
            "write_ms_median": writer.write_ms.median(),
            "frames_with_faces": counts["frames_with_faces"], "tracks": counts["tracks"],
            "dominant_track_frames": counts["dominant_track_frames"],
            "smoothing": self.smoothing, "classify_every": self.classify_every,
            "faces_classified": counts["faces_classified"],
            "backend": getattr(self.rec, "backend", None),
            "classifier_workers": self.classifiers.workers,
            "startup_s": round(self.startup_s, 2), "elapsed_s": round(elapsed, 3),
            "frames_written": writer.written, "labeled_images": writer.labeled,
            "video": str(self.output) if self.output is not None else None,
            "predictions": str(self.staged.finals["predictions"]), "log": str(self.staged.finals["log"]),
            "tracks_csv": str(self.staged.finals["tracks"]), "timeline": str(self.staged.finals["timeline"]),
        }


def ignore_sigint():
    """Ignore Ctrl-C while the outputs are written (main thread only); the previous handler, or None."""
    if threading.current_thread() is threading.main_thread():
        return signal.signal(signal.SIGINT, signal.SIG_IGN)
    return None


def restore_sigint(handler) -> None:
    if handler is not None:
        signal.signal(signal.SIGINT, handler)
