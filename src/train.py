"""Train the emotion classifier on <data_path>/train, validating on <data_path>/val after every epoch.

    python src/train.py                                              # config.yaml as it is
    python src/train.py --set weights=null --max-images-per-class 20 --set num_epochs=1 --set fine_tune_epochs=0
    python src/train.py --dry-run                                    # check data + config, build the model, train nothing

Phase 1 trains the head on a frozen ImageNet backbone (num_epochs at learning_rate); phase 2 unfreezes the
top fine_tune_blocks stages, BatchNorm kept frozen (fine_tune_epochs at fine_tune_learning_rate). With
weights=null there is nothing to freeze: both phases train the whole network.

A run killed at any point resumes from its last finished epoch when started again with the same config,
exactly as if uninterrupted (bit for bit with deterministic ops); a finished run started again changes nothing
(it completes only what a kill after its last epoch left undone); --restart starts over, deleting only
train.py's own files in checkpoint_dir (it refuses when that folder holds anything else). Writes: model_save_path (best by `monitor`), <model>_last.h5 beside it,
<performance_dir>/training_log.csv, loss_accuracy_plot.png, train_config.yaml and versions.json. Last, the best
model is calibrated (temperature scaling fitted on val, stored in the model, emotion/training/calibration_step.py) and its
model card <model stem>.card.md / .card.json written beside it.
Exit code 3 (emotion.common.errors.EXIT_WEIGHTS_DOWNLOAD): the ImageNet weights could not be downloaded (pipeline.py
then goes on with weights=null). Several GPUs: --set strategy=mirrored; several machines: --set strategy=multi_worker with TF_CONFIG (README).
"""
from __future__ import annotations

import json

from emotion.common import cli, outputs

# What an out-of-memory's one line tells the user to lower (cli.run).
MEMORY = ["--set train_batch_size=N", "--set val_batch_size=N", "--set cache_max_mb=N"]


def parse_args(argv=None):
    p = cli.parser(__doc__)
    p.add_argument("--max-images-per-class", type=cli.positive_int, default=None, metavar="N",
                   help="use at most N images per class of each split (quick runs)")
    p.add_argument("--restart", action="store_true", help="ignore an earlier run's checkpoint and start over")
    p.add_argument("--dry-run", action="store_true", help="check data and config, build the model, train nothing")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    cfg = cli.load_config(args)
    from emotion.training import trainer  # TensorFlow is imported here, after the arguments are parsed

    writes = not args.dry_run and trainer.is_chief()  # the other workers of a distributed run write nothing
    with outputs.exclusive(*([cfg.model_save_path, cfg.checkpoint_dir, cfg.performance_dir] if writes else [])):
        summary = trainer.train(cfg, max_images_per_class=args.max_images_per_class, restart=args.restart,
                                dry_run=args.dry_run, calibrate=True)  # calibrated on val, with its model card
    print(json.dumps(summary), flush=True)
    return 0


if __name__ == "__main__":
    cli.run(main, memory=MEMORY)
