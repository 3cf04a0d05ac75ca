"""The main job: organize -> train -> evaluate -> predict -> video inference -> export, in one command.

    python src/pipeline.py --dataset ~/Downloads/archive.zip                 # the whole thing, config.yaml as it is
    python src/pipeline.py --dataset ../shared/data/affectnet-yolo-sample/YOLO_format --epochs 1 --max-images 25 \
        --video ../shared/videos/Megamind.avi
    python src/pipeline.py                                                   # data/ as it is, or download from Kaggle

--dataset takes the Kaggle YOLO_format folder or its zip; without it, organize_data.py uses what lies in
data/ and downloads the Kaggle dataset when data/ is empty. --epochs and --max-images set a short budget
for a demo. predict runs on the test split's photos and writes results_dir/photos/predictions.json (its own
folder, as always; the video stage's predictions.json lies in results_dir); the video stage reads --video (default: config
video_path) and is skipped when there is no clip. Stages that are not part of the project yet are listed
and skipped. Every stage is also a script of its own (src/<stage>.py) with the same --config/--set, and runs
as one: in a process of its own, so nothing one stage leaves in memory or in global state (the decoded-image
cache, Keras' mixed-precision policy) reaches the next, and the pipeline's peak memory is its largest stage's.
--formats (e.g. saved_model,tflite_float32) exports fewer formats; --verbose shows TensorFlow's own logging.
The evaluate stage also runs evaluate.py --robustness (corruptions, faces found end to end: about 7 minutes for
the sample's 320 test images on 2 busy cores) when the budget is full, i.e. without --epochs and --max-images; a short demo skips it (its model is
at chance, so the report would only say so); --robustness / --no-robustness decide it by hand.
When the ImageNet weights cannot be downloaded (train.py's exit code 3), the demo goes on from random init.
"""
from __future__ import annotations

import argparse
import glob
import os
import subprocess
import sys
import time
from pathlib import Path

from emotion.common import cli, console, errors
from emotion.serving import exporting

SRC = Path(__file__).resolve().parent

STAGES = ["organize_data", "train", "evaluate", "predict", "inference", "export"]


def parse_args(argv=None):
    p = cli.parser(__doc__)
    p.add_argument("--dataset", metavar="PATH", help="Kaggle YOLO_format folder or .zip (default: data/ or download)")
    p.add_argument("--video", metavar="PATH", help="clip for the video stage (default: config video_path; "
                                                   "the stage is skipped when there is none)")
    p.add_argument("--epochs", type=cli.non_negative_int, metavar="N",
                   help="short budget: N epochs for each training phase")
    p.add_argument("--max-images", type=cli.positive_int, metavar="N", help="short budget: at most N images per class and split")
    p.add_argument("--restart", action="store_true", help="train from scratch even if an earlier run can be resumed")
    p.add_argument("--formats", type=exporting.formats_argument, metavar="LIST",
                   help="export only these comma-separated formats (default: export.py's; see python src/export.py "
                        "--help); checked before the first stage runs")
    p.add_argument("--robustness", action=argparse.BooleanOptionalAction, default=None,
                   help="evaluate.py --robustness in the evaluate stage (unset: only without --epochs and "
                        "--max-images, as it takes minutes)")
    p.add_argument("--dry-run", action="store_true", help="print the stages and their arguments, run nothing")
    return p.parse_args(argv)


def stage_arguments(args, cfg) -> dict[str, list[str] | None]:
    """Each stage's command line, from the pipeline's own; None skips a stage that has no input."""
    common = (["--config", args.config] + [a for o in args.overrides for a in ("--set", o)]
              + (["--verbose"] if args.verbose else []))
    video = args.video or cfg.video_path
    budget = ["--max-images-per-class", str(args.max_images)] if args.max_images else []
    epochs = (["--set", f"num_epochs={args.epochs}", "--set", f"fine_tune_epochs={args.epochs}"]
              if args.epochs is not None else [])
    robustness = args.robustness if args.robustness is not None else (args.epochs is None and not args.max_images)
    return {
        "organize_data": common + (["--source", args.dataset] if args.dataset else []),
        "train": common + epochs + budget + (["--restart"] if args.restart else []),
        "evaluate": common + budget + (["--robustness"] if robustness else []),
        # The test split's photos: faces found (or whole crops), every face classified, into results/photos/.
        "predict": common + ["--image_path", os.path.join(glob.escape(str(Path(cfg.data_path) / "test")), "*", "*"),
                             "--json"],
        "inference": common + ["-v", video, "--no-display"] if Path(video).is_file() else None,
        "export": common + budget + (["--formats", ",".join(args.formats)] if args.formats else []),
    }


def main(argv=None) -> int:
    args = parse_args(argv)
    cfg = cli.load_config(args)  # fail on a bad config before any stage runs
    stage_args = stage_arguments(args, cfg)
    for stage in STAGES:
        if stage_args[stage] is None:
            print(f"\n=== {stage}: skipped, no video at {args.video or cfg.video_path} (pass --video PATH)")
            continue
        print(f"\n=== {stage}: python src/{stage}.py {' '.join(stage_args[stage])}", flush=True)
        if args.dry_run:
            continue
        start = time.perf_counter()
        code, error_lines = run_stage(stage, stage_args[stage])
        if code:
            print(f"pipeline: stage {stage} failed (exit code {code}); later stages not run", flush=True)
        for line in error_lines:  # the stage's error line stays the last line of the output
            print(line, file=sys.stderr, flush=True)
        if code:
            return code
        print(f"=== {stage} done in {time.perf_counter() - start:.0f} s", flush=True)
    if not args.dry_run:
        print("\nnext: make web (or python src/web.py) serves the live page on http://127.0.0.1:8000")
    return 0


def run_stage(stage: str, argv: list[str]) -> tuple[int, list[str]]:
    """Run src/<stage>.py argv in a process of its own; returns its exit code and its 'error: ...' lines."""
    code, error_lines = run_script(stage, argv)
    if stage == "train" and code == errors.EXIT_WEIGHTS_DOWNLOAD:
        # The demo should run the first time even offline; train.py alone never falls back silently.
        for line in error_lines:
            console.warn(line.removeprefix("error: "))
        console.warn("the demo goes on from random init (weights=null); accuracy will be far below a pretrained run")
        return run_script(stage, argv + ["--set", "weights=null"])
    return code, error_lines


def _dies_with(parent: int):
    """What a stage's process runs before the script (Linux): the kernel kills it when the pipeline dies, even
    by kill -9, so no stage outlives the run that started it (prctl PR_SET_PDEATHSIG). Elsewhere None: there,
    the output locks still stop a second run from writing beside an orphaned stage."""
    if not sys.platform.startswith("linux"):
        return None

    def set_death_signal():
        import ctypes
        import signal
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # 1: PR_SET_PDEATHSIG
        if os.getppid() != parent:  # the pipeline died before the line above: do not start at all
            os._exit(1)
    return set_death_signal


def run_script(stage: str, argv: list[str]) -> tuple[int, list[str]]:
    """Run the script with this interpreter, its stdout straight to ours and its stderr passed on line by line,
    except its 'error: ...' lines (the last of its output), which are returned with its exit code for the
    caller to print or turn into a warning."""
    with subprocess.Popen([sys.executable, str(SRC / f"{stage}.py"), *argv], stderr=subprocess.PIPE, text=True,
                          errors="replace", env=console.child_env(), preexec_fn=_dies_with(os.getpid())) as proc:
        error_lines = []
        for line in proc.stderr:
            if line.startswith("error: "):
                error_lines.append(line.rstrip("\n"))
            else:
                sys.stderr.write(line)
                sys.stderr.flush()
    return proc.returncode, error_lines


if __name__ == "__main__":
    cli.run(main)
