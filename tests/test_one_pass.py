"""The data's way without detours: what a run needs is read once. A model file is hashed once per process (its
conversion cache and its model card both name it by content). That a training run lists and checks each split
once, not once per epoch, and calibrates on the val images it read: test_card.py's training test."""
from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os

from support import FACES_GRAY, as_set_args, require, tiny_config, tiny_model


def _count_calls(monkeypatch, module, name: str) -> list:
    """Every call of module.name from now on, as its argument tuples (the function still runs)."""
    calls, real = [], getattr(module, name)

    def counted(*args, **kwargs):
        calls.append(args)
        return real(*args, **kwargs)
    monkeypatch.setattr(module, name, counted)
    return calls


def test_predict_hashes_the_model_file_once(tmp_path, monkeypatch):
    """predict.py's start-up names the TFLite conversion cache by the model's sha256 and checks the model card
    against it: one read of the file for both."""
    import predict
    from emotion.common import files
    from emotion.evaluation import card
    from emotion.model import network

    face = require(FACES_GRAY) / "images" / "Allison_Janney_0001.jpg"
    model_path = tmp_path / "model.h5"
    network.save_model_atomic(tiny_model((32, 32, 3)), model_path)
    card.update_card(model_path, calibration={"temperature": 1.0})
    files._DIGESTS.clear()  # a fresh process's memory
    digests = _count_calls(monkeypatch, files, "_digest")
    overrides = tiny_config(tmp_path, "input_shape=[32, 32, 3]", "classifier_backend=tflite",
                            f"model_save_path={model_path}", "face_detector=haar")
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        assert predict.main([*as_set_args(overrides), "--image_path", str(face)]) == 0
    assert digests == [(os.path.realpath(model_path),)], digests
    expected = hashlib.sha256(model_path.read_bytes()).hexdigest()
    assert json.loads((model_path.with_name("model.card.json")).read_text())["model_sha256"] == expected
    assert "model: not evaluated yet, calibrated (T=1.00)" in out.getvalue()  # the card matched the file
    assert list(tmp_path.glob(f"model.{expected[:16]}.float32.tflite"))  # the cache is named by the same digest

