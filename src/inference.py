"""Emotion recognition on a video file or a webcam: every face boxed, labelled, tracked and smoothed.

    python src/inference.py -v                                   # cfg.video_path (videos/test.mp4)
    python src/inference.py -v ../shared/videos/Megamind.avi --no-display
    python src/inference.py -c --camera-index 0                  # webcam; q in the window (or Ctrl-C) stops
    python src/inference.py -v clip.mp4 --output clip_out.avi --max-frames 300
    python src/inference.py -v archive/ more/*.mp4 --workers 2   # a batch: results/videos/<name>/ per video
    python src/inference.py -v 'archive/**/*.mp4' --no-video     # a glob (quoted); the CSVs only, no video
    python src/inference.py -v archive/ --shard $SLURM_ARRAY_TASK_ID/8   # job I of an 8-job array, then --merge

Each frame: faces found with cfg.face_detector (BlazeFace, about 2 ms), matched to the faces of the previous
frames so each keeps a stable id (src/emotion/runtime/tracking.py: IoU / centre distance; a face missed for up to 5 frames
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
  tracks.csv                     one row per face track: id, first_s, last_s, frames, faces_classified,
                                 dominant_label, mean_<class>, share_<class> (emotion/runtime/track_report.py)
  emotion_timeline.png           per track lasting 1 s or more: its probabilities over time (stacked, in the
                                 overlay's colours) and its labels as a strip; shorter tracks in one line
These are written under temporary names (.NAME.tmp-PID) and renamed into place together at the end (also
after Ctrl-C or an error once frames were written), so what lies there is always one complete run's outputs: a
run killed on the way leaves the previous run's, and the next run removes its temporary files. A
labeled_images/ folder this project did not write (no .written-by-emotion-recognition file) is never replaced.
A window shows the annotated frames with an FPS counter when a display is available (not with --no-display).
A frame that cannot be decoded in the middle of a file is skipped by seeking past it, and counted
(skipped_frames); a file that cannot be read at all, or a missing camera, stops with one 'error:' line.
Prints one line per track ("#1 0:00-0:11 (264 frames): happy 62%, neutral 30%, ...": shares of its frames by
label), then one JSON summary line (with the report's paths: tracks_csv, timeline); the exit code is 130 after
Ctrl-C (outputs still complete). predictions.json is written as the frames go (one frame per line of the JSON
array) and the track report counted as they go, so memory does not grow with the video's length. --no-video:
no annotated video and no labeled frames (the CSVs, the log, predictions.json and the timeline only).

A batch (several paths, a folder searched recursively, a glob, or --shard; emotion/runtime/batch.py): each
video's outputs in results_dir/videos/<name>/ (predictions.jsonl for predictions.json; <name> from the file
name, made unique), results_dir/videos/manifest.csv (one row per video: path, size, frames, faces, tracks,
seconds, status done / failed / skipped, error) and tracks_all.csv (every video's tracks, a `video` column
first). Run again with the same inputs, it skips the videos done (same path, size and modification time) and
analyses the others (--restart: all; --retry-failed: the failed ones too). A video that cannot be read is
failed, with its reason, and the batch goes on; exit code 1 when one failed, 130 after Ctrl-C. --workers N
processes (default: one per 2 cores), one progress bar on stderr. --shard I/N takes every N-th video of the
sorted list from the I-th (I from 0), writing manifest-I-of-N.csv and tracks_all-I-of-N.csv; --merge joins
the N shards' files into manifest.csv and tracks_all.csv.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

# libav prints a line per damaged macroblock to stderr; damaged frames are counted instead (before cv2 loads).
os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")

from emotion.common import cli, outputs  # noqa: E402
from emotion.common.errors import ConfigError  # noqa: E402


def parse_args(argv=None):
    p = cli.parser(__doc__)
    source = p.add_mutually_exclusive_group()
    source.add_argument("-c", "--camera", action="store_true", help="read the webcam (--camera-index)")
    source.add_argument("-v", "--video", nargs="*", default=None, metavar="PATH",
                        help="read a video file (no PATH: config key video_path); several files, a folder "
                             "(searched recursively) or a quoted glob: a batch, outputs in results_dir/videos/")
    p.add_argument("--merge", action="store_true",
                   help="instead of -c/-v: join the shards' manifest-I-of-N.csv and tracks_all-I-of-N.csv in "
                        "results_dir/videos/ into manifest.csv and tracks_all.csv")
    p.add_argument("--camera-index", type=cli.device_index, default=0, metavar="N", help="which webcam, for -c")
    p.add_argument("--output", default="test_out.avi", metavar="NAME",
                   help="annotated video, in results_dir unless a path is given (.avi: MJPG, .mp4: mp4v)")
    p.add_argument("--no-display", action="store_true", help="never open a window (headless run)")
    p.add_argument("--classify-every", type=cli.positive_int, default=1, metavar="N",
                   help="classify a face on the first frame of its track and every Nth frame after, reusing its "
                        "last probabilities in between (about N times fewer classifier calls); 1 = every frame")
    p.add_argument("--max-frames", type=cli.positive_int, default=None, metavar="N",
                   help="stop after N frames (quick runs; a webcam otherwise runs until q or Ctrl-C); a batch: "
                        "per video")
    p.add_argument("--no-video", action="store_true",
                   help="write no annotated video and no labeled frames: the predictions, CSVs and timeline only")
    batch = p.add_argument_group("a batch of videos (several paths, a folder or a glob after -v)")
    batch.add_argument("--workers", type=cli.positive_int, default=None, metavar="N",
                       help="worker processes, each with its own model (default: one per 2 cores, at most one "
                            "per video)")
    batch.add_argument("--shard", default=None, metavar="I/N",
                       help="take every N-th video of the sorted list from the I-th (I from 0): job I of N of a "
                            "cluster array (SLURM --array=0-(N-1): --shard $SLURM_ARRAY_TASK_ID/N)")
    batch.add_argument("--restart", action="store_true",
                       help="analyse every video again, also those an earlier run finished (only their folders "
                            "are replaced)")
    batch.add_argument("--retry-failed", action="store_true",
                       help="analyse again the videos an earlier run recorded as failed")
    args = p.parse_args(argv)
    given = [name for name, on in (("-c/--camera", args.camera), ("-v/--video", args.video is not None)) if on]
    if args.merge and given:
        p.error(f"argument --merge: not allowed with argument {given[0]}")
    if not args.merge and not given:
        p.error("one of the arguments -c/--camera -v/--video is required")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    cfg = cli.load_config(args)
    from emotion.runtime import archive
    if args.merge:
        from emotion.runtime import batch
        return batch.merge(cfg)
    shard = archive.parse_shard(args.shard) if args.shard is not None else None
    if args.video is not None and archive.is_batch(args.video, sharded=shard is not None):
        return run_batch(args, cfg, shard)
    for flag in ("restart", "retry_failed"):
        if getattr(args, flag):
            raise ConfigError(f"--{flag.replace('_', '-')} is for a batch (several videos, a folder or a glob after "
                              f"-v): a single video is always analysed again")
    from emotion.runtime import frame_sources  # OpenCV, after parsing
    from emotion.runtime import video
    output = None if args.no_video else video.output_path(args.output, cfg)
    input_video = None if args.video is None else Path(args.video[0] if args.video else cfg.video_path).expanduser()
    video.check_outputs(cfg, output, input_video)
    with outputs.exclusive(*[p for p in (cfg.results_dir, output) if p is not None]):  # outputs: in results_dir
        if args.camera:  # a missing file or camera fails here, before the model loads
            source = frame_sources.open_camera(args.camera_index)
        else:
            source = frame_sources.open_video(input_video, hint="" if args.video else
                                              " (config key video_path; pass -v PATH for another file)")
        summary = video.recognize(source, cfg, output, display=not args.no_display, max_frames=args.max_frames,
                                  classify_every=args.classify_every)
    print(json.dumps(summary), flush=True)
    return 130 if summary.get("interrupted") else 0


def run_batch(args, cfg, shard) -> int:
    """Many videos (emotion/runtime/batch.py): --output is the annotated video's name in each video's folder."""
    from emotion.runtime import batch
    if args.camera:
        raise ConfigError("-c and a batch of videos do not go together")
    if Path(args.output).name != args.output or not args.output.lower().endswith((".avi", ".mp4")):
        raise ConfigError(f"in a batch, --output is the annotated video's file name in each video's folder "
                          f"(.avi or .mp4, no folder), got {args.output}")
    options = batch.BatchOptions(video_name=None if args.no_video else args.output, max_frames=args.max_frames,
                                 classify_every=args.classify_every, workers=args.workers, shard=shard,
                                 restart=args.restart, retry_failed=args.retry_failed)
    return batch.run_batch(args.video, cfg, options)


if __name__ == "__main__":
    cli.run(main)
