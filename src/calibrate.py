"""Calibrate a trained model's confidences (temperature scaling on the val split) and save it in place.

    python src/calibrate.py                                  # model_save_path, fitted on <data_path>/val
    python src/calibrate.py --max-images-per-class 50        # quick run on fewer val images

Fits one scalar T > 0 minimising the negative log-likelihood of softmax(logits / T) on the val split and
stores it inside the model (logits -> temperature -> softmax), so evaluate, predict, inference, the exports and
the web page all get calibrated probabilities; the predicted class never changes. A model saved before
temperature scaling existed (softmax head) is rebuilt with the same weights. The model is written to a temp
file and renamed over the old one; its model card (<model stem>.card.md / .card.json) is rewritten with T and
the val metrics, and its test metrics are cleared until evaluate.py runs again. train.py does this itself as
its last step; evaluate.py --calibrate does it before evaluating. Ends with one JSON line.
"""
from __future__ import annotations

import json
from pathlib import Path

from emotion.common import cli, outputs, paths

# What an out-of-memory's one line tells the user to lower (cli.run).
MEMORY = ["--set val_batch_size=N"]


def parse_args(argv=None):
    p = cli.parser(__doc__)
    p.add_argument("--max-images-per-class", type=cli.positive_int, default=None, metavar="N",
                   help="fit on at most N val images per class (quick runs)")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    cfg = cli.load_config(args)
    paths.require_model_file(cfg.model_save_path)
    paths.check_writable(Path(cfg.model_save_path).parent, "model_save_path")
    from emotion.training import calibration_step  # TensorFlow from here on, after the arguments are parsed

    with outputs.exclusive(cfg.model_save_path):  # the model file and its card
        summary = calibration_step.calibrate_file(cfg, args.max_images_per_class)
    print(json.dumps({"model": str(cfg.model_save_path), **summary}), flush=True)
    return 0


if __name__ == "__main__":
    cli.run(main, memory=MEMORY)
