"""Evaluate the best model on <data_path>/test: metrics, confusion matrix, per-class report, predictions.

    python src/evaluate.py                                   # model_save_path on data/test
    python src/evaluate.py --tta                             # average each image with its horizontal flip
    python src/evaluate.py --split val --max-images-per-class 20
    python src/evaluate.py --dry-run                         # check the model and the data, evaluate nothing
    python src/evaluate.py --calibrate                       # first fit the temperature on val (src/calibrate.py)
    python src/evaluate.py --robustness                      # + corruptions and faces found in scenes, end to end

Writes to performance_dir, with the model card, as one set (outputs.Staged: under temporary names, renamed into
place together at the end, so a run killed on the way leaves the previous run's files and card, all of one split):
  evaluation_metrics.txt / .json   accuracy, balanced accuracy, macro and weighted precision/recall/F1,
                                   top-2 accuracy, loss, image count, model file and its sha256
  confusion_matrix.png             counts and row-normalised
  detailed_report.csv              precision, recall, F1 and support per class
  predictions.csv                  one row per image: path, true_class, predicted_class, prob_<class> ...
  confident_mistakes.png           the wrong predictions made with the highest confidence
  confident_mistakes_gradcam.png   the same images with the Grad-CAM map of the predicted class over them
  reliability_diagram.png          accuracy per confidence bin (15 bins, count per bin), uncalibrated and calibrated
  coverage_accuracy.png            accuracy on the faces answered against the share answered, as the threshold rises
evaluation_metrics also holds calibration: ece (15 equal-width bins), ece_uncalibrated, nll, brier (and their
_uncalibrated values), temperature (null: the model has none), and at config min_confidence the coverage and
answered_accuracy. The model's card (<model stem>.card.md / .json beside it) gets the split's figures.
With --robustness, in the same set (the shared sample's 320 test images: about 7 min on 2 busy cores, 4.5 min of CPU):
  robustness.csv                   one row per corruption and severity (blur, downscale, brightness, contrast,
                                   jpeg, grayscale, rotation, eyes / mouth covered, flip; severity 0 = clean):
                                   accuracy, balanced accuracy, macro-F1, ECE, share "uncertain", agreement with
                                   the clean answer; and per face detector installed, background and face size,
                                   the test images placed in 640x480 scenes and run through predict.py's path:
                                   share of faces found, accuracy on them, agreement with the crop's answer
  robustness.png                   accuracy against severity, one panel per corruption; the end-to-end figures
and the card's "Robustness" section; one more terminal line says what it found (or that the model is at chance).
The robustness run classifies without TTA, as predict.py does.
Ends with one JSON line of the headline metrics. Images stream through the model batch by batch; only the
labels and probabilities are kept, so memory does not grow with the number of images.
"""
from __future__ import annotations

import functools

from emotion.common import cli, outputs

# What an out-of-memory's one line tells the user to lower (cli.run).
MEMORY = ["--set test_batch_size=N", "--set val_batch_size=N (--calibrate)"]


def parse_args(argv=None):
    p = cli.parser(__doc__)
    p.add_argument("--split", choices=["test", "val"], default="test", help="which folder of data_path to evaluate")
    p.add_argument("--max-images-per-class", type=cli.positive_int, default=None, metavar="N",
                   help="evaluate at most N images per class (quick runs)")
    p.add_argument("--tta", action="store_true", help="test-time augmentation: average with the horizontal flip")
    p.add_argument("--dry-run", action="store_true", help="check the model and the data, print the plan, write nothing")
    p.add_argument("--calibrate", action="store_true",
                   help="fit the temperature on the val split and save the model (as src/calibrate.py) first")
    p.add_argument("--robustness", action="store_true",
                   help="also measure accuracy under corruptions and end to end through the face detectors "
                        "(robustness.csv, robustness.png, the card's Robustness section)")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    cfg = cli.load_config(args)
    from emotion.evaluation import evaluator  # TensorFlow is imported here, after the arguments are parsed

    calibrate = None
    if args.calibrate:  # T is fitted on val, never on the split evaluated
        from emotion.training import calibration_step
        calibrate = functools.partial(calibration_step.calibrate_file, cfg, args.max_images_per_class)
    end_to_end = None
    if args.robustness:  # the scenes run predict.py's path (runtime), which the evaluation package may not import
        from emotion.runtime.end_to_end import EndToEnd as end_to_end
    with outputs.exclusive(*([] if args.dry_run else [cfg.model_save_path, cfg.performance_dir])):  # the card too
        evaluator.evaluate(cfg, args.split, args.max_images_per_class, args.tta, args.dry_run, before_load=calibrate,
                           robustness=args.robustness, end_to_end=end_to_end)
    return 0


if __name__ == "__main__":
    cli.run(main, memory=MEMORY)
