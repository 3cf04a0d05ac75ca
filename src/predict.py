"""Recognise the emotion of every face in photos: an image, a folder of images, or a glob.

    python src/predict.py --image_path photo.jpg
    python src/predict.py --image_path photos/ --json --save-images     # every image of the folder (sorted)
    python src/predict.py --image_path 'photos/*.png' --top-k 8           # a glob (quoted, or let the shell expand it)
    python src/predict.py --image_path photos/ --json --workers 4         # 4 worker processes (a large folder)

Prints one block per image, e.g.
    photo.jpg: 1 face
      face 1 [120,84,96,96] happy 0.91 (neutral 0.05, surprise 0.02)
then one JSON summary line (images, faces, failed, ms_per_image). Faces are found with cfg.face_detector,
cropped like AffectNet's images and classified by the model at model_save_path (cfg.classifier_backend).
A small, near-square image without a detected face (a face crop such as AffectNet's 96x96 images) is
classified whole, and the output says so. Folders are classified in batches: the faces of --batch-size
images per classifier call.

Outputs go to <results_dir>/photos/ (inference.py's video outputs lie in results_dir itself, so neither
replaces the other's). --json writes photos/predictions.json: a list with one entry per image, {image, width,
height, faces: [{box, label, top_label, confidence, probabilities, detector_score, whole_image}], whole_image, error}; label is
"uncertain" when the top probability is below config min_confidence (top_label is the argmax, the line printed
says "uncertain: happy 0.42"). At start it prints one line from the model's card (emotion/evaluation/card.py). --save-images
writes annotated copies to photos/labeled_images/. Both are written under temporary names and put in
place together at the end, so they hold one run's results (predictions.json is written as the images are
classified, one entry per line, so memory does not grow with the number of images): labeled_images/ is
replaced whole, and only when this project wrote it (it holds a .written-by-emotion-recognition file); an
interrupted run leaves the previous run's outputs. An unwritable results_dir is refused before any work.
--summary writes photos/summary.csv: one row per image (image, faces, labels, error, count_<class> per
class; the labels are spooled to a temporary file as the images come, so memory does not grow with them either);
the faces per label over all images are printed. --explain writes photos/explanations/<image
stem>_face<k>.png for every face: the crop the model saw, the Grad-CAM map of its predicted class over it (the
Keras model at model_save_path; emotion/model/gradcam.py) and its top-3 probabilities. Both are published with the
other outputs (explanations/ is replaced whole, like labeled_images/).
--resume keeps a journal of the images done (photos/.resume-<hash of the inputs, config and model>.jsonl,
written after each batch, removed once the outputs are published): a run interrupted on a large folder (Ctrl-C,
kill), run again with --resume and the same inputs, classifies only the images not yet done (an image is the same
while its path, size and modification time are) and publishes the complete set, equal to an uninterrupted run's.
--workers N (default 1: this process) classifies the --batch-size chunks in N worker processes, each with its own
detector and classifier ('spawn'; this process then never imports TensorFlow); the outputs, the printed blocks (in
input order), predictions.json, summary.csv, the copies' and figures' names and the --resume journal are the same
as one process's. A worker that dies costs only its chunk: each of its images gets one "error: worker died
analysing PATH (exit code X)" line and a worker is started in its place; one that cannot load the model ends the
run with that one line. It pays only where cores are left over (on 2 idle cores, 279 photos, ResNet50: 20.8 images/s
with one process, 20.3 with --workers 2, start-up included: one process already keeps both cores busy, and each
worker loads TensorFlow; benchmarks/bench_predict.py).
An unreadable file gives one "error: cannot read image: PATH" line and the others carry on; the exit code is
then 1. Only regular files are read (a pipe or a device named as an image is an error, never waited on). A path
matching nothing: exit code 2.
"""
from __future__ import annotations

import os

from emotion.common import cli, outputs
from emotion.runtime import photos

# What an out-of-memory's one line tells the user to lower (cli.run).
MEMORY = ["--batch-size N"]


def parse_args(argv=None):
    p = cli.parser(__doc__)
    p.add_argument("--image_path", "--image-path", dest="image_path", nargs="+", metavar="PATH",
                   help="image file(s), folder(s) (not recursive) or glob(s); required")
    p.add_argument("--top-k", type=cli.positive_int, default=3, metavar="K",
                   help="probabilities printed per face: the label's and the next K-1")
    p.add_argument("--json", action="store_true", help="write <results_dir>/photos/predictions.json")
    p.add_argument("--save-images", action="store_true", help="write annotated copies to <results_dir>/photos/labeled_images/")
    p.add_argument("--summary", action="store_true",
                   help="write <results_dir>/photos/summary.csv: per image its faces and labels, a count per label")
    p.add_argument("--explain", action="store_true",
                   help="write <results_dir>/photos/explanations/<stem>_face<k>.png: the Grad-CAM map of every face")
    p.add_argument("--resume", action="store_true",
                   help="keep a journal of the images done; run again with --resume and the same inputs after an "
                        "interruption to classify only the rest")
    p.add_argument("--batch-size", type=cli.positive_int, default=32, metavar="N",
                   help="images whose faces are classified together in one call")
    p.add_argument("--workers", type=cli.positive_int, default=1, metavar="N",
                   help="processes classifying --batch-size chunks side by side, each with its own detector and "
                        "classifier; the outputs are the same as one process's (1: this process, no worker)")
    args = p.parse_args(argv)
    args.parser = p
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    cfg = cli.load_config(args)  # a configuration mistake is reported first, as by every script
    if not args.image_path:
        args.parser.error("the following arguments are required: --image_path")
    plan = photos.plan(cfg, args.image_path, write_json=args.json, save_images=args.save_images,
                       summary=args.summary, explain=args.explain, resume=args.resume)

    held = [photos.output_dir(cfg)] if plan.staged.finals or plan.journal else []   # outputs, --resume's journal
    with outputs.exclusive(*held):  # before the model loads
        n = len(plan.image_paths)
        if args.workers > 1:  # the workers load the model: this process never imports TensorFlow
            from emotion.common import paths
            from emotion.evaluation import card
            paths.require_model_file(cfg.model_save_path)   # the one line a missing model gives, before any worker
            print(f"{n} image{'s' if n != 1 else ''}; model {cfg.model_save_path} ({cfg.classifier_backend} + "
                  f"{cfg.face_detector}, {args.workers} workers)", flush=True)
            print(card.summary_line(cfg.model_save_path), flush=True)
            return photos.run(plan, None, top_k=args.top_k, batch_size=args.batch_size, workers=args.workers, cfg=cfg)
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        from emotion.runtime import recognizer  # OpenCV, and TensorFlow with the classifier, after parsing
        rec = recognizer.EmotionRecognizer(cfg)
        print(f"{n} image{'s' if n != 1 else ''}; model {rec.model_path} ({rec.backend})", flush=True)
        from emotion.evaluation import card
        print(card.summary_line(rec.model_path), flush=True)  # how good the model is, from its model card
        return photos.run(plan, rec, top_k=args.top_k, batch_size=args.batch_size)


if __name__ == "__main__":
    cli.run(main, memory=MEMORY)
