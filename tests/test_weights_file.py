"""The path every real user takes: `weights:` pointing at a ResNet50 no-top weights FILE as Keras downloads it
(resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5, Keras' legacy HDF5 layout: one group per layer, in the
file's attributes layer_names and weight_names). The file is written here from a random-init backbone with
random BatchNorm statistics, so "the values were loaded" cannot pass by accident (a fresh backbone's statistics
are 0 and 1). Then train.py's two phases on real images:
  - build_model puts the file's values into the backbone,
  - phase 1 (head) leaves every backbone value as the file holds it,
  - phase 2 (fine_tune) changes the top fine_tune_blocks stages (conv5 for 1) and nothing else,
  - BatchNorm's moving statistics (and its gamma/beta) never change.
"""
from __future__ import annotations

from pathlib import Path

import pytest
from support import link_organized, tiny_config

FILE_NAME = "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5"


@pytest.fixture(scope="module")
def weights_file(tmp_path_factory) -> Path:
    """A no-top ResNet50 weights file in the downloaded (legacy HDF5) layout, random values throughout."""
    import h5py
    import keras
    import numpy as np
    from keras.src.legacy.saving import legacy_h5_format  # what Keras 2's model.save_weights("x.h5") wrote

    keras.utils.set_random_seed(7)
    backbone = keras.applications.ResNet50(include_top=False, weights=None, input_shape=(32, 32, 3))
    rng = np.random.default_rng(7)
    for layer in backbone.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            gamma, beta, mean, var = layer.get_weights()
            layer.set_weights([rng.uniform(0.5, 1.5, gamma.shape), rng.normal(0, 0.1, beta.shape),
                               rng.normal(0, 0.1, mean.shape), rng.uniform(0.5, 1.5, var.shape)])
    path = tmp_path_factory.mktemp("keras-cache") / FILE_NAME
    with h5py.File(path, "w") as f:
        legacy_h5_format.save_weights_to_hdf5_group(f, backbone)
    return path


def file_values(path: Path) -> dict[str, list]:
    """layer name -> its arrays, read from the HDF5 file itself (in the file's own order)."""
    import h5py
    import numpy as np

    with h5py.File(path, "r") as f:
        names = [n.decode() if isinstance(n, bytes) else n for n in f.attrs["layer_names"]]
        values = {}
        for name in names:
            group = f[name]
            weight_names = [w.decode() if isinstance(w, bytes) else w for w in group.attrs["weight_names"]]
            if weight_names:
                values[name] = [np.asarray(group[w]) for w in weight_names]
    return values


def backbone_values(model) -> dict[str, list]:
    from emotion.model import network as model_lib
    return {layer.name: layer.get_weights() for layer in model_lib.backbone(model).layers if layer.weights}


def changed_layers(before: dict, after: dict) -> set[str]:
    import numpy as np
    assert before.keys() == after.keys()
    return {name for name in before
            if any(not np.array_equal(a, b) for a, b in zip(before[name], after[name], strict=True))}


def is_batchnorm(name: str) -> bool:
    return name.endswith("_bn")


def train_config(tmp_path: Path, weights: Path, fine_tune_epochs: int):
    from emotion.common import config
    link_organized(tmp_path / "data", per_class=2, splits=("train", "val"))
    overrides = tiny_config(tmp_path, f"weights={weights}", "num_epochs=1",
                            f"fine_tune_epochs={fine_tune_epochs}", "fine_tune_blocks=1", "dropout=0.0",
                            "fine_tune_learning_rate=1.0e-3")
    return config.load_config(None, overrides)


def test_build_model_loads_the_downloaded_file_layout(weights_file):
    import numpy as np

    from emotion.common import config
    from emotion.model import network as model_lib

    expected = file_values(weights_file)
    assert len(expected) > 100 and any(is_batchnorm(n) for n in expected)
    cfg = config.load_config(None, tiny_config(Path("/nonexistent"), f"weights={weights_file}"))
    loaded = backbone_values(model_lib.build_model(cfg))
    assert loaded.keys() == expected.keys()
    for name, arrays in expected.items():
        assert len(loaded[name]) == len(arrays), name
        for got, want in zip(loaded[name], arrays):
            np.testing.assert_array_equal(got, want, err_msg=name)
    # Not the 0/1 statistics of a fresh backbone: the file's random ones.
    mean = expected["conv1_bn"][2]
    assert np.abs(mean).max() > 0.01


def test_phase1_leaves_the_backbone_and_phase2_changes_only_conv5(weights_file, tmp_path):
    from emotion.model import network as model_lib
    from emotion.training import trainer

    start = file_values(weights_file)

    head_cfg = train_config(tmp_path / "head", weights_file, fine_tune_epochs=0)
    trainer.train(head_cfg, log=lambda *a: None)
    after_head = backbone_values(model_lib.load_model(trainer.last_model_path(head_cfg)))
    assert changed_layers(start, after_head) == set()

    fine_cfg = train_config(tmp_path / "fine", weights_file, fine_tune_epochs=1)
    trainer.train(fine_cfg, log=lambda *a: None)
    after_fine = backbone_values(model_lib.load_model(trainer.last_model_path(fine_cfg)))
    changed = changed_layers(start, after_fine)
    conv5 = {n for n in start if n.startswith("conv5_") and not is_batchnorm(n)}
    assert changed == conv5, (sorted(changed - conv5), sorted(conv5 - changed))
    assert not any(is_batchnorm(n) for n in changed)  # gamma, beta and the moving statistics all kept
