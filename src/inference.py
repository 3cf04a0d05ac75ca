"""Emotion recognition on a video file or a webcam: every face boxed, labelled, tracked and smoothed.

    python src/inference.py -v                                   # cfg.video_path (videos/test.mp4)
    python src/inference.py -v ../shared/videos/Megamind.avi --no-display
    python src/inference.py -c --camera-index 0                  # webcam; q in the window (or Ctrl-C) stops
    python src/inference.py -v clip.mp4 --output clip_out.avi --max-frames 300

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
Ctrl-C (outputs still complete).
"""
from __future__ import annotations

import json
import os
from pathlib import Path

# libav prints a line per damaged macroblock to stderr; damaged frames are counted instead (before cv2 loads).
os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")

from emotion.common import cli, outputs  # noqa: E402


def parse_args(argv=None):
    p = cli.parser(__doc__)
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("-c", "--camera", action="store_true", help="read the webcam (--camera-index)")
    source.add_argument("-v", "--video", nargs="?", const="", default=None, metavar="PATH",
                        help="read a video file (no PATH: config key video_path)")
    p.add_argument("--camera-index", type=cli.device_index, default=0, metavar="N", help="which webcam, for -c")
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
    from emotion.runtime import frame_sources  # OpenCV, after parsing
    from emotion.runtime import video
    output = video.output_path(args.output, cfg)
    input_video = None if args.video is None else Path(args.video or cfg.video_path).expanduser()
    video.check_outputs(cfg, output, input_video)
    with outputs.exclusive(cfg.results_dir, output):  # the outputs beside the video are in results_dir
        if args.camera:  # a missing file or camera fails here, before the model loads
            source = frame_sources.open_camera(args.camera_index)
        else:
            source = frame_sources.open_video(input_video, hint="" if args.video else
                                              " (config key video_path; pass -v PATH for another file)")
        summary = video.recognize(source, cfg, output, display=not args.no_display, max_frames=args.max_frames,
                                  classify_every=args.classify_every)
    print(json.dumps(summary), flush=True)
    return 130 if summary.get("interrupted") else 0


if __name__ == "__main__":
    cli.run(main)
