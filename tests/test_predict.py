"""recognizer.py and predict.py on real photos: crops classified exactly as the model does, two faces, the
whole-image path for AffectNet crops, batched folders, JSON, annotated copies, bad files and exit codes.

One random-init 96x96 ResNet50 is built and saved once for the module and served by the Keras backend (the
TFLite conversion of a ResNet50 takes most of a minute here: tests/test_classifier.py covers it); the TFLite
path of predict.py runs on a tiny model of the same kind (preprocess layer, conv, BatchNorm, softmax).
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import queue
import shutil
import threading
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
from support import (FACES_GRAY, VIDEOS, YOLO_SAMPLE, as_set_args, count_to_rgb, keras_probs, require, run_script,
                     tiny_config, tiny_model)

import predict
from emotion.common import cli, config
from emotion.common.errors import UserError
from emotion.data import faces
from emotion.runtime import drawing, photos, recognizer, tracking, video, video_threads

# Real images, checked once against the BlazeFace detector (see the preconditions asserted where used).
PHOTOS = ["Allison_Janney_0001.jpg", "Andre_Agassi_0034.jpg", "Arnaud_Clement_0001.jpg"]
AFFECTNET_NO_FACE = "test/images/image0042142.jpg"  # one of the 9 of 6,320 sample crops BlazeFace finds no face in
SIZE = (96, 96)


class CountingClassifier:
    """Wraps a classifier; counts predict() calls and the faces each was given."""

    def __init__(self, inner):
        self.inner, self.calls = inner, []
        self.input_shape, self.num_classes, self.backend = inner.input_shape, inner.num_classes, inner.backend

    def predict(self, faces_):
        self.calls.append(len(faces_))
        return self.inner.predict(faces_)


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """A saved random-init 96x96 model, its config (keras backend), the Keras model, and one recognizer."""
    if faces.blazeface_model_path() is None:
        pytest.skip(f"BlazeFace model not installed ({faces.BLAZEFACE_INSTALL})")
    from emotion.model import network as model_lib
    from emotion.runtime import classifier

    tmp = tmp_path_factory.mktemp("predict")
    overrides = tiny_config(tmp, "input_shape=[96, 96, 3]", "classifier_backend=keras", "face_detector=blazeface")
    cfg = config.load_config(None, overrides)
    model = model_lib.build_model(cfg)
    model_lib.save_model_atomic(model, cfg.model_save_path)
    clf = classifier.load_classifier(cfg.model_save_path, prefer="keras")
    rec = recognizer.EmotionRecognizer(cfg, classifier=clf)
    return {"tmp": tmp, "overrides": overrides, "cfg": cfg, "model": model, "clf": clf, "rec": rec}


@pytest.fixture
def spy(env, monkeypatch):
    """predict.main's recognizer gets the module's loaded classifier (no reload per test), wrapped to count calls."""
    from emotion.runtime import classifier
    counting = CountingClassifier(env["clf"])
    monkeypatch.setattr(classifier, "load_classifier", lambda path, prefer="tflite", **kw: counting)
    return counting


def rgb(path: Path) -> np.ndarray:
    return cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)


def photo(name: str) -> Path:
    return require(FACES_GRAY) / "images" / name


def two_face_frame() -> np.ndarray:
    """Two real photos side by side on a 640x480 RGB frame."""
    frame = np.zeros((480, 640, 3), np.uint8)
    for i, name in enumerate(PHOTOS[:2]):
        face = cv2.resize(rgb(photo(name)), (300, 300), interpolation=cv2.INTER_AREA)
        frame[90:390, 10 + 320 * i:310 + 320 * i] = face
    return frame


def run_main(args: list[str], env) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = predict.main([*as_set_args(env["overrides"]), *args])
    return code, out.getvalue(), err.getvalue()


def summary(stdout: str) -> dict:
    return json.loads(stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------------------------------
# recognizer


def test_crops_classified_equal_the_model_on_crops(env):
    rec, model = env["rec"], env["model"]
    assert rec.class_names == config.load_config().class_names and rec.input_size == SIZE
    image = rgb(photo(PHOTOS[0]))
    found = rec.detect(image)
    assert len(found) == 1
    boxes = [f.box for f in found]
    probs = rec.classifier.predict(rec.crops(image, boxes))  # the two steps apart, as the video run takes them
    expected = keras_probs(model, np.stack([faces.crop_face(image, b, size=SIZE) for b in boxes]))
    assert probs.shape == (1, 8) and probs.dtype == np.float32
    np.testing.assert_allclose(probs, expected, atol=1e-4)
    assert rec.crops(image, []).shape == (0, *SIZE[::-1], 3)

    (results,) = rec.analyze_batch([image])
    assert len(results) == 1
    r = results[0]
    assert r.box == found[0].box and r.detector_score == pytest.approx(found[0].score) and not r.whole_image
    assert list(r.probabilities) == rec.class_names
    assert sum(r.probabilities.values()) == pytest.approx(1.0, abs=1e-9)
    np.testing.assert_allclose(list(r.probabilities.values()), expected[0], atol=1e-4)
    assert r.top_label == rec.class_names[int(expected[0].argmax())] and r.confidence == max(r.probabilities.values())
    d = json.loads(json.dumps(r.to_dict()))
    assert d["box"] == list(r.box) and d["label"] == r.label and d["whole_image"] is False
    assert set(d) == {"box", "label", "top_label", "confidence", "probabilities", "detector_score", "whole_image"}


def test_results_from_probs():
    out = recognizer.results_from_probs([(1, 2, 3, 4), (5, 6, 7, 8)], np.array([[1.0, 3.0], [0.5, 0.5]]),
                                        ["a", "b"], None)
    assert [(r.label, r.confidence, r.detector_score) for r in out] == [("b", 0.75, None), ("a", 0.5, None)]
    assert out[0].probabilities == {"a": 0.25, "b": 0.75} and out[0].box == (1, 2, 3, 4)
    assert recognizer.results_from_probs([], np.zeros((0, 2)), ["a", "b"], []) == []
    with pytest.raises(ValueError, match="columns"):
        recognizer.results_from_probs([(0, 0, 1, 1)], np.ones((1, 3)), ["a", "b"], [0.9])


def test_two_faces_one_call_and_drawing(env):
    clf = CountingClassifier(env["clf"])
    rec = recognizer.EmotionRecognizer(env["cfg"], detector=env["rec"].detector, classifier=clf)
    frame = two_face_frame()
    (results,) = rec.analyze_batch([frame])
    assert clf.calls == [2]
    assert len(results) == 2
    centres = sorted(r.box[0] + r.box[2] / 2 for r in results)
    assert 10 < centres[0] < 310 and 330 < centres[1] < 630
    expected = keras_probs(env["model"], np.stack([faces.crop_face(frame, r.box, size=SIZE) for r in results]))
    np.testing.assert_allclose([list(r.probabilities.values()) for r in results], expected, atol=1e-4)

    bgr = cv2.cvtColor(frame, cv2.COLOR_RGB2BGR)
    before = bgr.copy()
    assert drawing.draw_results(bgr, results, fps=41.5, ids=[3, 7]) is bgr  # in place
    changed = np.any(bgr != before, axis=2)
    for r in results:
        x, y, w, h = r.box
        assert changed[y + h // 2, x] and changed[y + h // 2, x + w - 1]  # the box's left and right edges
    assert changed[:20, :60].any()  # the FPS counter
    with pytest.raises(ValueError, match="ids"):
        drawing.draw_results(bgr, results, ids=[1])


def test_tight_crop_without_a_face_is_classified_whole(env):
    rec, model = env["rec"], env["model"]
    image = rgb(require(YOLO_SAMPLE) / AFFECTNET_NO_FACE)
    assert image.shape == (96, 96, 3) and rec.detect(image) == []  # precondition: BlazeFace misses this one
    ((r,),) = rec.analyze_batch([image])
    assert r.whole_image and r.box == (0, 0, 96, 96) and r.detector_score is None
    np.testing.assert_allclose(list(r.probabilities.values()), keras_probs(model, image[None])[0], atol=1e-4)
    assert rec.analyze_batch([image], allow_whole_image=False) == [[]]
    # A face-less image that is not a tight crop gives nothing; a small one is resized whole.
    assert rec.analyze_batch([np.zeros((480, 640, 3), np.uint8)]) == [[]]
    small = cv2.resize(image, (64, 64), interpolation=cv2.INTER_AREA)
    if not rec.detect(small):
        ((s,),) = rec.analyze_batch([small])
        expected = keras_probs(model, cv2.resize(small, SIZE, interpolation=cv2.INTER_LINEAR)[None])[0]
        assert s.box == (0, 0, 64, 64)
        np.testing.assert_allclose(list(s.probabilities.values()), expected, atol=1e-4)
    bgr = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    drawing.draw_results(bgr, [r])  # no room for bars on a 96x96 image: label only, no error


def test_analyze_batch_is_batched_and_equals_one_image_at_a_time(env):
    clf = CountingClassifier(env["clf"])
    rec = recognizer.EmotionRecognizer(env["cfg"], detector=env["rec"].detector, classifier=clf)
    images = [rgb(photo(n)) for n in PHOTOS] + [two_face_frame(), rgb(require(YOLO_SAMPLE) / AFFECTNET_NO_FACE),
                                                 np.zeros((300, 400, 3), np.uint8)]
    batched = rec.analyze_batch(images)
    assert clf.calls == [6]  # 3 photos + 2 faces + 1 whole image, in one call
    assert [len(b) for b in batched] == [1, 1, 1, 2, 1, 0]
    assert batched[4][0].whole_image and not any(r.whole_image for b in batched[:4] for r in b)
    clf.calls.clear()
    single = [rec.analyze_batch([im])[0] for im in images]
    assert clf.calls == [1, 1, 1, 2, 1]
    for b, s in zip(batched, single):
        assert [r.box for r in b] == [r.box for r in s] and [r.label for r in b] == [r.label for r in s]
        for rb, rs in zip(b, s):
            np.testing.assert_allclose(list(rb.probabilities.values()), list(rs.probabilities.values()), atol=1e-5)
    clf.calls.clear()
    assert [[r.box for r in b] for b in rec.analyze_batch(images, max_batch=4)] == [[r.box for r in b] for b in batched]
    assert clf.calls == [4, 2]
    clf.calls.clear()
    assert rec.analyze_batch([np.zeros((300, 400, 3), np.uint8)]) == [[]] and clf.calls == []


# ---------------------------------------------------------------------------------------------
# One conversion to RGB per image (faces.to_rgb, or the video frame's BGR -> RGB), however many faces it has


@pytest.fixture(scope="module")
def blazeface_installed():
    if faces.blazeface_model_path() is None:
        pytest.skip(f"BlazeFace model not installed ({faces.BLAZEFACE_INSTALL})")


@pytest.fixture(scope="module")
def light(blazeface_installed):
    """A recognizer with BlazeFace, as the scripts build it, on a tiny model of the project's kind served by the
    Keras backend (seconds to build, where env's ResNet50 takes most of a minute): its cfg and recognizer."""
    from emotion.runtime import classifier
    cfg = config.load_config(None, ["face_detector=blazeface"])
    rec = recognizer.EmotionRecognizer(cfg, classifier=classifier.KerasClassifier(tiny_model((*SIZE[::-1], 3))))
    return {"cfg": cfg, "rec": rec}


def test_an_image_is_converted_to_rgb_once_on_its_way_through_analyze_batch(light, monkeypatch):
    """predict.py's path (analyze_batch): detecting, cropping every face (or taking the whole image) and
    classifying converts each image once, whatever it comes as (gray, HxWx1, RGB, RGBA), with the same results."""
    clf = CountingClassifier(light["rec"].classifier)
    rec = recognizer.EmotionRecognizer(light["cfg"], detector=light["rec"].detector, classifier=clf)
    gray = cv2.imread(str(photo(PHOTOS[0])), cv2.IMREAD_GRAYSCALE)
    colour = cv2.cvtColor(gray, cv2.COLOR_GRAY2RGB)
    images = {"gray": gray, "gray HxWx1": gray[:, :, None], "rgb": colour,
              "rgba": np.dstack([colour, np.full(gray.shape, 255, np.uint8)]), "two faces": two_face_frame(),
              "tight crop, no face": np.full((96, 96, 3), 128, np.uint8), "no face": np.zeros((300, 400, 3), np.uint8)}
    faces_in = {"gray": 1, "gray HxWx1": 1, "rgb": 1, "rgba": 1, "two faces": 2, "tight crop, no face": 0,
                "no face": 0}
    assert {name: len(rec.detect(image)) for name, image in images.items()} == faces_in  # precondition
    faces_classified = {"gray": [1], "gray HxWx1": [1], "rgb": [1], "rgba": [1], "two faces": [2],
                        "tight crop, no face": [1], "no face": []}  # the tight crop: classified whole

    conversions = count_to_rgb(monkeypatch)
    results = {}
    for name, image in images.items():
        conversions.clear()
        clf.calls.clear()
        (results[name],) = rec.analyze_batch([image])
        assert conversions == [image.shape], name
        assert clf.calls == faces_classified[name], name
    assert results["tight crop, no face"][0].whole_image and results["no face"] == []
    for name in ("gray HxWx1", "rgb", "rgba"):  # the same image in any of the accepted layouts: the same result
        assert [r.box for r in results[name]] == [r.box for r in results["gray"]], name
        np.testing.assert_allclose([list(r.probabilities.values()) for r in results[name]],
                                   [list(r.probabilities.values()) for r in results["gray"]], atol=1e-6)

    conversions.clear()
    batched = rec.analyze_batch(list(images.values()))  # many images: still once each
    assert conversions == [image.shape for image in images.values()]
    assert [[r.box for r in b] for b in batched] == [[r.box for r in b] for b in results.values()]

    # The public entry points on their own still take gray (and convert it, once per call).
    box = results["gray"][0].box
    for call in (lambda: rec.detect(gray), lambda: rec.crops(gray, [box, box]), lambda: rec.whole(gray),
                 lambda: rec.detector.detect(gray), lambda: faces.crop_face(gray, box, size=SIZE)):
        conversions.clear()
        call()
        assert conversions == [gray.shape]
    assert np.array_equal(rec.crops(gray, [box])[0], faces.crop_face(colour, box, size=SIZE))


class FramesInMemory:
    """A frame source over BGR frames in memory: frame_sources.FrameSource's read(buffer), kind and stop_reason."""

    kind, stop_reason = "video", "end"

    def __init__(self, frames):
        self.frames, self.position = list(frames), 0

    def read(self, buffer=None):
        if self.position == len(self.frames):
            return None
        self.position += 1
        return self.frames[self.position - 1].copy(), self.position - 1


def test_a_video_frame_is_converted_to_rgb_once_on_its_way_through_the_producer(light, monkeypatch):
    """inference.py's path (video_threads.Producer): the frame's BGR -> RGB conversion is the only one; the
    detector and the crops take that RGB array as it is. Same for a face classified on its own (classify_every)."""
    rec = light["rec"]
    frames_rgb = [rgb(photo(PHOTOS[0])), two_face_frame()]
    frames_bgr = [cv2.cvtColor(f, cv2.COLOR_RGB2BGR) for f in frames_rgb]
    expected_boxes = [[f.box for f in rec.detect(frame)] for frame in frames_rgb]
    assert [len(b) for b in expected_boxes] == [1, 2]  # precondition

    real_cvt_color = cv2.cvtColor
    bgr_to_rgb = []

    def counting_cvt_color(src, code, *args, **kwargs):
        if code == cv2.COLOR_BGR2RGB:
            bgr_to_rgb.append(src.shape)
        return real_cvt_color(src, code, *args, **kwargs)

    conversions = count_to_rgb(monkeypatch)
    monkeypatch.setattr(cv2, "cvtColor", counting_cvt_color)
    producer = video_threads.Producer(FramesInMemory(frames_bgr), rec, tracking.FaceTracker(), 1, None,
                                      threading.Event(), queue.Queue())
    producer.run()  # in this thread
    assert producer.error is None
    assert conversions == [] and bgr_to_rgb == [f.shape for f in frames_bgr]  # once per frame
    items = [producer.frames.get_nowait() for _ in range(len(frames_bgr) + 1)]
    assert items[-1] is video_threads.END
    for item, frame, boxes in zip(items, frames_rgb, expected_boxes):
        assert [f.box for f in item.found] == boxes and item.due == list(range(len(boxes)))
        expected = np.stack([faces.crop_face(frame, b, size=SIZE) for b in boxes])
        assert item.crops.dtype == np.uint8 and np.array_equal(item.crops, expected)

    face = rec.detect(frames_rgb[1])[1]
    conversions.clear()
    bgr_to_rgb.clear()
    row = video.VideoRun._classify_one(SimpleNamespace(rec=rec), frames_bgr[1], face)
    assert conversions == [] and bgr_to_rgb == [frames_bgr[1].shape]
    np.testing.assert_allclose(row, rec.classifier.predict(faces.crop_face(frames_rgb[1], expected_boxes[1][1],
                                                                           size=SIZE)[None])[0], atol=1e-6)


# ---------------------------------------------------------------------------------------------
# predict.py


def photo_folder(tmp: Path) -> Path:
    folder = tmp / "photos"
    folder.mkdir()
    for name in PHOTOS:
        shutil.copy(photo(name), folder / name)
    shutil.copy(require(YOLO_SAMPLE) / AFFECTNET_NO_FACE, folder / "affectnet.jpg")
    cv2.imwrite(str(folder / "blank.png"), np.full((300, 400, 3), 90, np.uint8))
    (folder / "notes.txt").write_text("not an image, and not picked up from a folder\n")
    return folder


def test_folder_printed_and_json_in_one_batch(env, spy, tmp_path):
    folder = photo_folder(tmp_path)
    code, out, err = run_main(["--image_path", str(folder), "--json", "--top-k", "2"], env)
    assert code == 0, err
    assert spy.calls == [4]  # 3 photos + 1 whole AffectNet crop; the blank image has no face
    lines = out.splitlines()
    names = sorted(PHOTOS + ["affectnet.jpg", "blank.png"])
    heads = [ln for ln in lines if ln.startswith(str(folder))]
    assert [h.split(": ")[0] for h in heads] == [str(folder / n) for n in names]
    assert f"{folder / 'blank.png'}: no face found" in lines
    assert (f"{folder / 'affectnet.jpg'}: 1 face (whole image: no face detected, classified as a face crop)"
            in lines)
    face_lines = [ln for ln in lines if ln.startswith("  face 1 [")]
    assert len(face_lines) == 4 and all(ln.count("(") == 1 and ", " not in ln.split("(")[1] for ln in face_lines)

    data = json.loads((Path(env["cfg"].results_dir) / "photos" / "predictions.json").read_text())
    assert [e["image"] for e in data] == [str(folder / n) for n in names]
    for e in data:
        assert set(e) >= {"image", "faces", "whole_image", "error"} and e["error"] is None
        for f in e["faces"]:
            assert set(f) == {"box", "label", "top_label", "confidence", "probabilities", "detector_score", "whole_image"}
            assert sum(f["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)
            assert f["top_label"] == max(f["probabilities"], key=f["probabilities"].get)
    by_name = {Path(e["image"]).name: e for e in data}
    assert by_name["blank.png"]["faces"] == [] and not by_name["blank.png"]["whole_image"]
    aff = by_name["affectnet.jpg"]
    assert aff["whole_image"] and aff["faces"][0]["box"] == [0, 0, 96, 96] and aff["faces"][0]["detector_score"] is None
    # The printed numbers are the JSON's.
    first = by_name[PHOTOS[0]]["faces"][0]
    shown = f"{first['top_label']} {first['confidence']:.2f}"
    shown = f"uncertain: {shown}" if first["label"] == "uncertain" else shown  # below min_confidence
    assert f"  face 1 [{','.join(map(str, first['box']))}] {shown}" in out
    s = summary(out)
    assert (s["images"], s["faces"], s["failed"]) == (5, 4, 0) and s["ms_per_image"] > 0
    # Batches of 2 images (A..., A... | Arnaud, affectnet | blank): two classifier calls, same output.
    spy.calls.clear()
    code, out2, _ = run_main(["--image_path", str(folder), "--batch-size", "2"], env)
    assert code == 0 and spy.calls == [2, 2]
    assert [ln.split(" (")[0] for ln in out2.splitlines() if ln.startswith("  face")] == [
        ln.split(" (")[0] for ln in face_lines]


def test_glob_and_labeled_images(env, spy, tmp_path):
    folder = photo_folder(tmp_path)
    cv2.imwrite(str(folder / "two.jpg"), cv2.cvtColor(two_face_frame(), cv2.COLOR_RGB2BGR))
    code, out, err = run_main(["--image_path", str(folder / "A*.jpg"), str(folder / "two.jpg"), "--save-images",
                               "--json"], env)
    assert code == 0, err
    expected = sorted(n for n in PHOTOS if n.startswith("A")) + ["two.jpg"]
    data = json.loads((Path(env["cfg"].results_dir) / "photos" / "predictions.json").read_text())
    assert [Path(e["image"]).name for e in data] == expected
    assert f"{folder / 'two.jpg'}: 2 faces" in out.splitlines()
    labeled = Path(env["cfg"].results_dir) / "photos" / "labeled_images"
    assert sorted(p.name for p in labeled.iterdir()) == sorted(expected + [".written-by-emotion-recognition"])
    for e in data:
        original, annotated = cv2.imread(e["image"]), cv2.imread(str(labeled / Path(e["image"]).name))
        assert annotated.shape == original.shape
        diff = np.abs(annotated.astype(int) - original.astype(int)).max(axis=2) > 40
        for f in e["faces"]:
            x, y, w, h = f["box"]
            assert diff[y + h // 2, x] and diff[y + h // 2, x + w - 1], e["image"]  # box edges drawn
    assert summary(out)["labeled_images"] == str(labeled)



def test_two_images_whose_copies_would_share_a_name_both_get_one(env, spy, tmp_path):
    """face.txt (a PNG by its bytes) gets a PNG copy: its name is reserved as face.png's twin, never written over
    face.png's copy."""
    folder = tmp_path / "names"
    folder.mkdir()
    shutil.copy(photo(PHOTOS[0]), folder / "face.png")
    shutil.copy(photo(PHOTOS[1]), folder / "face.txt")
    code, out, err = run_main(["--image_path", str(folder / "face.png"), str(folder / "face.txt"), "--save-images"],
                              env)
    assert code == 0, err
    labeled = Path(env["cfg"].results_dir) / "photos" / "labeled_images"
    assert sorted(p.name for p in labeled.iterdir()) == [".written-by-emotion-recognition", "face.png", "face_1.png"]
    sources = [cv2.imread(str(photo(name))).astype(int) for name in PHOTOS[:2]]
    for i, copy in enumerate(("face.png", "face_1.png")):  # each copy is its own image, annotated
        image = cv2.imread(str(labeled / copy)).astype(int)
        own, other = (float(np.abs(image - s).mean()) for s in (sources[i], sources[1 - i]))
        assert own < other / 2, copy

def test_blank_image_is_no_face_and_exit_0(env, spy, tmp_path):
    blank = tmp_path / "blank.jpg"
    cv2.imwrite(str(blank), np.zeros((480, 640, 3), np.uint8))
    code, out, err = run_main(["--image_path", str(blank)], env)
    assert code == 0 and err == ""
    assert f"{blank}: no face found" in out.splitlines() and spy.calls == []
    assert summary(out)["faces"] == 0


def test_nothing_matches_is_exit_2(env, tmp_path, capsys):
    """Before any model is loaded: one line, exit code 2."""
    missing, pattern = tmp_path / "missing.jpg", tmp_path / "nope" / "*.jpg"
    looked = ", ".join(photos.IMAGE_EXTENSIONS)
    for arg, line in [(pattern, f"error: no image matches {pattern}"),
                      (missing, f"error: no such file or folder: {missing}"),
                      (tmp_path, f"error: no images in the folder {tmp_path} (looked for {looked})")]:
        with pytest.raises(SystemExit) as exc:
            cli.run(predict.main, ["--image_path", str(arg), *as_set_args(env["overrides"])])
        assert exc.value.code == 2
        assert capsys.readouterr().err.strip().splitlines() == [line]


def test_missing_model_names_the_path(env, tmp_path):
    with pytest.raises(UserError, match=r"no trained model at .*nowhere\.h5: run python src/train\.py"):
        run_main(["--image_path", str(photo(PHOTOS[0])), "--set", f"model_save_path={tmp_path / 'nowhere.h5'}"], env)


def test_bad_files_exit_1_and_the_rest_carries_on(env, tmp_path):
    """As a user runs it (real model load, keras backend): one error line per bad file, exit code 1."""
    folder = tmp_path / "mixed"
    folder.mkdir()
    shutil.copy(photo(PHOTOS[0]), folder / "a_good.jpg")
    good = photo(PHOTOS[1]).read_bytes()
    (folder / "b_corrupt.jpg").write_bytes(good[:20] + bytes(range(256)) * 8)  # JPEG header, then garbage
    (folder / "c_text.jpg").write_text("this is not an image\n")
    shutil.copy(photo(PHOTOS[2]), folder / "d_good.jpg")
    (folder / "e_bomb.png").write_bytes(png_claiming(100_000, 100_000))  # OpenCV raises on its size
    proc = run_script("predict.py", "--image_path", str(folder), "--json", *as_set_args(env["overrides"]),
                      timeout=300)
    assert proc.returncode == 1, proc.stderr[-2000:]
    # (TensorFlow's own start-up lines go to stderr too; libjpeg's "Corrupt JPEG data" warnings must not)
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error") or str(folder) in ln or "JPEG" in ln]
    assert errors == [f"error: cannot read image: {folder / 'b_corrupt.jpg'}",
                      f"error: cannot read image: {folder / 'c_text.jpg'}",
                      f"error: cannot read image: {folder / 'e_bomb.png'}"], proc.stderr[-2000:]
    lines = proc.stdout.splitlines()
    assert f"{folder / 'a_good.jpg'}: 1 face" in lines and f"{folder / 'd_good.jpg'}: 1 face" in lines
    s = summary(proc.stdout)
    assert (s["images"], s["faces"], s["failed"]) == (5, 2, 3)
    data = json.loads((Path(env["cfg"].results_dir) / "photos" / "predictions.json").read_text())
    assert [e["error"] for e in data] == [None, "cannot read image", "cannot read image", None, "cannot read image"]


def png_claiming(width: int, height: int) -> bytes:
    """A small, valid PNG file whose header says width x height pixels (an image bomb's header)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
            + chunk(b"IEND", b""))


def test_tflite_backend(env, tmp_path):
    """predict.py with classifier_backend=tflite (a tiny model of the project's kind, converted in seconds):
    the cached conversion is made beside the model and its probabilities equal the Keras model's."""
    from emotion.model import network as model_lib

    tiny = tiny_model((96, 96, 3), seed=1)
    path = tmp_path / "tiny.h5"
    model_lib.save_model_atomic(tiny, path)
    image = photo(PHOTOS[0])
    code, out, err = run_main(["--image_path", str(image), "--json", "--set", "classifier_backend=tflite",
                               "--set", f"model_save_path={path}"], env)
    assert code == 0, err
    assert "tflite + blazeface" in out.splitlines()[0]
    assert len(list(tmp_path.glob("tiny.*.float32.tflite"))) == 1
    (entry,) = json.loads((Path(env["cfg"].results_dir) / "photos" / "predictions.json").read_text())
    (face,) = entry["faces"]
    crop = faces.crop_face(rgb(image), face["box"], size=SIZE)
    np.testing.assert_allclose(list(face["probabilities"].values()), keras_probs(tiny, crop[None])[0], atol=1e-4)


# ---------------------------------------------------------------------------------------------
# Outputs: one run's, published together; inputs: regular files only


def _tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_run_s_outputs_are_that_run_s_and_an_interrupted_run_leaves_the_last_ones(env, spy, tmp_path):
    """The second run's labeled_images/ holds its images only; a run stopped half-way (Ctrl-C in the classifier)
    leaves the previous run's predictions.json and labeled_images/ byte-identical, and no temporary file."""
    folder = photo_folder(tmp_path)
    results = tmp_path / "results"
    at = ["--set", f"results_dir={results}", "--json", "--save-images"]
    code, _, err = run_main(["--image_path", str(folder), *at], env)
    assert code == 0, err
    code, _, err = run_main(["--image_path", str(folder / PHOTOS[0]), *at], env)
    assert code == 0, err
    results = results / "photos"   # predict.py's own folder (inference.py's names lie in results_dir)
    before = _tree(results)
    assert sorted(before) == ["labeled_images/.written-by-emotion-recognition", f"labeled_images/{PHOTOS[0]}",
                              "predictions.json"]
    assert [e["image"] for e in json.loads(before["predictions.json"])] == [str(folder / PHOTOS[0])]

    calls = []

    def interrupted(faces_):
        calls.append(len(faces_))
        raise KeyboardInterrupt

    spy.predict = interrupted
    with pytest.raises(KeyboardInterrupt):
        run_main(["--image_path", str(folder), "--batch-size", "2", *at], env)
    assert calls and _tree(results) == before
    assert sorted(p.name for p in results.iterdir()) == ["labeled_images", "predictions.json"]


def test_predictions_json_is_written_as_the_images_are_classified(env, spy, tmp_path):
    """Issue 21 item 8: predictions.json is streamed: when the classifier is called for the second batch, the first
    batch's entries are on disk already (the staged file), and the published file is the same JSON as before."""
    from emotion.runtime.prediction_stream import read_frames

    folder = photo_folder(tmp_path)
    results = tmp_path / "results"
    seen, inner = [], spy.predict

    def watching(faces_):
        seen.append([e["image"] for p in (results / "photos").glob(".predictions.tmp-*.json") for e in read_frames(p)])
        return inner(faces_)

    spy.predict = watching
    code, _, err = run_main(["--image_path", str(folder), "--json", "--batch-size", "2",
                             "--set", f"results_dir={results}"], env)
    assert code == 0, err
    names = sorted(PHOTOS + ["affectnet.jpg", "blank.png"])
    assert seen == [[], [str(folder / n) for n in names[:2]]]   # batch 1 on disk while batch 2 is classified
    data = json.loads((results / "photos" / "predictions.json").read_text())
    assert [e["image"] for e in data] == [str(folder / n) for n in names]
    assert sorted(p.name for p in (results / "photos").iterdir()) == ["predictions.json"]


def _interrupt_on_second_call(spy):
    """Make spy's classifier raise KeyboardInterrupt (Ctrl-C) on its second call; returns (the sizes of the
    calls made, the classifier's own predict, to put back)."""
    calls, inner = [], spy.predict

    def interrupted(faces_):
        calls.append(len(faces_))
        if len(calls) == 2:
            raise KeyboardInterrupt
        return inner(faces_)

    spy.predict = interrupted
    return calls, inner


def test_an_interrupted_run_resumed_classifies_only_the_rest_and_equals_an_uninterrupted_one(env, spy, tmp_path):
    """Issue 21 item 8: --resume. A run stopped in its second batch (Ctrl-C in the classifier), run again with
    --resume, classifies only the images not yet done and publishes what an uninterrupted run does."""
    folder = photo_folder(tmp_path)
    shutil.copy(photo(PHOTOS[0]), folder / "zz_copy.jpg")
    whole, resumed = tmp_path / "whole", tmp_path / "resumed"
    args = ["--image_path", str(folder), "--json", "--summary", "--batch-size", "2"]
    code, _, err = run_main([*args, "--set", f"results_dir={whole}"], env)
    assert code == 0, err
    calls, inner = _interrupt_on_second_call(spy)
    at = [*args, "--resume", "--set", f"results_dir={resumed}"]
    with pytest.raises(KeyboardInterrupt):
        run_main(at, env)
    assert calls == [2, 2]
    (journal,) = (resumed / "photos").glob(".resume-*.jsonl")   # batch 1's two images
    assert len(journal.read_text().splitlines()) == 2 and not (resumed / "photos" / "predictions.json").exists()

    spy.predict, spy.calls = inner, []
    code, out, err = run_main(at, env)
    assert code == 0, err
    assert "resuming: 2 image(s) done by an earlier run" in out
    assert spy.calls == [2, 1]   # Arnaud + affectnet, then (blank: no face) zz_copy: never batch 1's again
    assert json.loads((resumed / "photos" / "predictions.json").read_text()) == json.loads(
        (whole / "photos" / "predictions.json").read_text())
    assert (resumed / "photos" / "summary.csv").read_text() == (whole / "photos" / "summary.csv").read_text()
    assert sorted(p.name for p in (resumed / "photos").iterdir()) == ["predictions.json", "summary.csv"]


def test_resume_redoes_an_image_changed_since_it_was_journaled(env, spy, tmp_path):
    """An image's identity is its path, size and mtime: one rewritten since the interrupted run is classified
    again; a journal line torn by a kill is dropped."""
    folder = tmp_path / "two"
    folder.mkdir()
    for name in PHOTOS[:2]:
        shutil.copy(photo(name), folder / name)
    results = tmp_path / "results"
    at = ["--image_path", str(folder), "--json", "--resume", "--batch-size", "1", "--set", f"results_dir={results}"]
    calls, inner = _interrupt_on_second_call(spy)
    with pytest.raises(KeyboardInterrupt):
        run_main(at, env)
    (journal,) = (results / "photos").glob(".resume-*.jsonl")
    with open(journal, "a") as f:
        f.write('{"id": ["torn')   # a kill in the middle of a line
    first = folder / PHOTOS[0]
    st = first.stat()
    os.utime(first, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    spy.predict, spy.calls = inner, []
    code, out, err = run_main(at, env)
    assert code == 0, err
    assert "resuming: 1 image(s) done" in out and spy.calls == [1, 1]   # the changed one is classified again
    assert [e["image"] for e in json.loads((results / "photos" / "predictions.json").read_text())] == [
        str(folder / n) for n in PHOTOS[:2]]
    assert not list((results / "photos").glob(".resume-*"))


def test_a_labeled_images_folder_the_project_did_not_write_is_refused_before_the_model_loads(env, tmp_path):
    labeled = tmp_path / "results" / "photos" / "labeled_images"
    labeled.mkdir(parents=True)
    shutil.copy(photo(PHOTOS[0]), labeled / "mine.jpg")
    before = _tree(tmp_path)
    with pytest.raises(UserError, match=f"{labeled} was not written by this project"):
        run_main(["--image_path", str(photo(PHOTOS[1])), "--save-images", "--set", f"results_dir={tmp_path / 'results'}",
                  "--set", f"model_save_path={tmp_path / 'no-model.h5'}"], env)
    assert _tree(tmp_path) == before and [p.name for p in labeled.parent.iterdir()] == ["labeled_images"]


def test_a_read_only_results_dir_is_refused_before_the_model_loads(env, read_only_folder, tmp_path):
    for flag in ("--json", "--save-images"):
        with pytest.raises(UserError, match="results_dir .* is not writable"):
            run_main(["--image_path", str(photo(PHOTOS[0])), flag, "--set", f"results_dir={read_only_folder}",
                      "--set", f"model_save_path={tmp_path / 'no-model.h5'}"], env)
    assert list(read_only_folder.iterdir()) == []


def test_a_fifo_is_never_read(env, tmp_path):
    """A named pipe given as an image (alone, beside a photo, or in a folder) is an error line, not a hang."""
    pipe = tmp_path / "pipe.png"
    os.mkfifo(pipe)
    proc = run_script("predict.py", "--image_path", str(pipe), *as_set_args(env["overrides"]), timeout=60)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines() == [f"error: {pipe} is not a regular file (a pipe, socket or device): "
                                                f"give an image file"]
    good = tmp_path / PHOTOS[0]
    shutil.copy(photo(PHOTOS[0]), good)
    proc = run_script("predict.py", "--image_path", str(pipe), str(good), str(tmp_path), "--json",
                      *as_set_args(env["overrides"]), timeout=300)
    assert proc.returncode == 1, proc.stderr[-2000:]
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error")]
    assert errors == [f"error: {pipe} is not a regular file (a pipe, socket or device): give an image file"]
    data = json.loads((Path(env["cfg"].results_dir) / "photos" / "predictions.json").read_text())
    assert [(e["image"], e["error"]) for e in data] == [(str(pipe), "not a regular file"), (str(good), None)]


def test_inputs_inside_the_outputs_it_replaces_are_refused(env, spy, tmp_path):
    """Annotated images of an earlier run given as input with --save-images (the folder would be replaced),
    or predictions.json named as an image with --json: one error line, nothing changed."""
    results = tmp_path / "results"
    at = ["--set", f"results_dir={results}", "--json", "--save-images"]
    code, _, err = run_main(["--image_path", str(photo(PHOTOS[0])), *at], env)
    assert code == 0, err
    results = results / "photos"
    before = _tree(results)
    labeled = results / "labeled_images"
    for given, match in ((labeled, f"{labeled / PHOTOS[0]} is an input of this run and lies in {labeled}"),
                         (results / "predictions.json", "is an input of this run and .*predictions.json an output")):
        with pytest.raises(UserError, match=match):
            run_main(["--image_path", str(given), *at], env)
        assert _tree(results) == before


# ---------------------------------------------------------------------------------------------
# Colour order: a colour photo's probabilities are the model's on the RGB crop


def test_a_colour_photo_s_probabilities_are_the_model_on_its_rgb_crop(spread_model_path, tmp_path):
    """Two colour photos (a Megamind frame; a real face photo tinted orange), PNG so nothing is lost: predict.py's
    probabilities equal the model on recognizer's RGB crop of each box within 1e-4. The test model's outputs
    spread, so the same crop in BGR order gives probabilities tenths away (asserted: the check has teeth)."""
    from emotion.model import network as model_lib

    path, overrides = spread_model_path
    cap = cv2.VideoCapture(str(require(VIDEOS / "Megamind.avi")))
    for _ in range(30):
        ok, frame = cap.read()
    cap.release()
    gray = cv2.imread(str(photo(PHOTOS[0])))
    tinted = np.clip(gray * np.array([0.35, 0.75, 1.0]) + np.array([0, 10, 30]), 0, 255).astype(np.uint8)  # BGR
    cv2.imwrite(str(tmp_path / "megamind.png"), frame)
    cv2.imwrite(str(tmp_path / "tinted.png"), tinted)
    results = tmp_path / "results"
    with contextlib.redirect_stdout(io.StringIO()):
        code = predict.main(["--image_path", str(tmp_path / "megamind.png"), str(tmp_path / "tinted.png"), "--json",
                             *as_set_args([*overrides, "classifier_backend=keras", f"results_dir={results}"])])
    assert code == 0
    entries = {Path(e["image"]).name: e for e in json.loads((results / "photos" / "predictions.json").read_text())}
    model = model_lib.load_model(path)
    class_names = config.load_config().class_names
    checked, swapped = 0, []
    for name, bgr in (("megamind.png", frame), ("tinted.png", tinted)):
        image_rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        assert not np.array_equal(image_rgb[..., 0], image_rgb[..., 2])  # really colour
        assert entries[name]["faces"], name
        for face in entries[name]["faces"]:
            crop = faces.crop_face(image_rgb, face["box"], size=SIZE)
            expected = keras_probs(model, crop[None])[0]
            got = np.array([face["probabilities"][c] for c in class_names])
            np.testing.assert_allclose(got, expected, atol=1e-4)
            swapped.append(np.abs(keras_probs(model, crop[None, ..., ::-1].copy())[0] - expected).max())
            checked += 1
    assert checked >= 2 and max(swapped) > 0.1, swapped


def test_photo_and_video_runs_never_share_an_output_or_a_lock(env, spy, tmp_path):
    """Issue 18 D-8: predict.py --json --save-images and inference.py -v used to write the same
    results/predictions.json and results/labeled_images/. predict.py now writes into results/photos/: a photo run
    after a video run leaves every file of the video's set as it was, and its places never hold the video's."""
    results = tmp_path / "results"
    video_set = video.staged_outputs(results, results / "test_out.avi", labeled=True)
    video_set.prepare()
    for key, tmp in video_set.tmp.items():        # a finished video run's outputs, byte for byte known
        (tmp / "frame_000.png").write_bytes(b"frame") if key == "labeled" else tmp.write_bytes(key.encode())
    video_set.publish()
    before = _tree(results)
    code, _, err = run_main(["--image_path", str(photo(PHOTOS[0])), "--json", "--save-images", "--summary",
                             "--set", f"results_dir={results}"], env)
    assert code == 0, err
    after = _tree(results)
    assert {k: after[k] for k in before} == before
    assert sorted(set(after) - set(before)) == ["photos/labeled_images/.written-by-emotion-recognition",
                                                f"photos/labeled_images/{PHOTOS[0]}", "photos/predictions.json",
                                                "photos/summary.csv"]
    cfg = config.load_config(None, [f"results_dir={results}"])
    photo_set = photos.plan(cfg, [str(photo(PHOTOS[0]))], True, True, True, True).staged
    for mine in photo_set.finals.values():
        for theirs in video_set.finals.values():
            assert not (mine == theirs or theirs in mine.parents or mine in theirs.parents), (mine, theirs)


# ---------------------------------------------------------------------------------------------
# --workers N: chunks classified by worker processes, the outputs those of one process (issue 21 item 8)


def _workers_folder(tmp_path: Path) -> tuple[Path, list[str]]:
    """photo_folder with face.png (a real photo), an unreadable broken.jpg, and face.txt (another photo, PNG bytes'
    twin: its copy would share face.png's name) named beside the folder; the --image_path arguments."""
    folder = photo_folder(tmp_path)
    shutil.copy(photo(PHOTOS[0]), folder / "face.png")
    (folder / "broken.jpg").write_text("not an image\n")
    shutil.copy(photo(PHOTOS[1]), tmp_path / "face.txt")
    return folder, [str(folder), str(tmp_path / "face.txt")]


def _lines(text: str, prefix: str) -> list[str]:
    return [ln for ln in text.splitlines() if ln.startswith(prefix)]


def test_workers_give_byte_identical_outputs_to_one_process(env, tmp_path):
    """--workers 2 (spawned processes, each loading the model): predictions.json, summary.csv, labeled_images/ and
    explanations/ byte for byte those of --workers 1 (the same names where two images share one), the same blocks
    printed in input order, the same failure line, exit 1."""
    folder, inputs = _workers_folder(tmp_path)
    runs = {}
    for n in (1, 2):
        results = tmp_path / f"results{n}"
        code, out, err = run_main(["--image_path", *inputs, "--json", "--save-images", "--summary", "--explain",
                                   "--batch-size", "3", "--workers", str(n), "--set", f"results_dir={results}"], env)
        runs[n] = (code, out, err, _tree(results / "photos"))
    (code1, out1, err1, tree1), (code2, out2, err2, tree2) = runs[1], runs[2]
    assert code1 == code2 == 1
    assert _lines(err1, "error") == _lines(err2, "error") == [f"error: cannot read image: {folder / 'broken.jpg'}"]
    assert "2 workers" in out2.splitlines()[0] and "workers" not in out1.splitlines()[0]
    printed = [ln for ln in out1.splitlines()[2:] if not ln.startswith("{")]   # blocks, counts, "wrote" lines
    assert printed == [ln.replace("results2", "results1") for ln in out2.splitlines()[2:] if not ln.startswith("{")]
    s1, s2 = summary(out1), summary(out2)
    assert (s1["images"], s1["faces"], s1["failed"]) == (s2["images"], s2["faces"], s2["failed"]) == (8, 6, 1)
    stems = [Path(n).stem for n in PHOTOS] + ["affectnet", "face", "face_2"]   # face.txt's figure: face_2_face1
    assert sorted(tree1) == sorted(tree2) == sorted(
        ["predictions.json", "summary.csv", "labeled_images/.written-by-emotion-recognition",
         "explanations/.written-by-emotion-recognition"]
        + [f"labeled_images/{n}" for n in [*PHOTOS, "affectnet.jpg", "blank.png", "face.png", "face_1.png"]]
        + [f"explanations/{stem}_face1.png" for stem in stems])
    assert tree1 == tree2   # byte for byte: the same probabilities, names, annotated pixels and figures
    data = json.loads(tree2["predictions.json"])
    assert [Path(e["image"]).name for e in data] == [*sorted(PHOTOS), "affectnet.jpg", "blank.png", "broken.jpg",
                                                     "face.png", "face.txt"]
    assert [len(e["faces"]) for e in data] == [1, 1, 1, 1, 0, 0, 1, 1] and data[5]["error"] == "cannot read image"
    assert data[6]["faces"][0]["probabilities"] == data[0]["faces"][0]["probabilities"]   # face.png: Allison's copy


class CrashingJob(photos.PhotoJob):
    """A worker's job whose process ends (os._exit(3), as a crash would) on the chunk holding crash.jpg. Put in
    photos.PhotoJob's place by the test; the spawned worker unpickles it from this module."""

    def run(self, state, chunk, send):
        if any(Path(p).name == "crash.jpg" for p in chunk.paths):
            os._exit(3)
        return super().run(state, chunk, send)


def test_a_worker_that_dies_costs_only_its_chunk(env, tmp_path, monkeypatch):
    """A worker process that dies on a chunk: its images are failed (one line each, with the exit code), a worker
    is started in its place, every other image is classified as one process classifies it; exit code 1."""
    folder = tmp_path / "photos"
    folder.mkdir()
    names = ["a.jpg", "b.jpg", "c.jpg", "crash.jpg", "e.jpg", "f.jpg", "g.jpg"]
    for i, name in enumerate(names):
        shutil.copy(photo(PHOTOS[i % len(PHOTOS)]), folder / name)
    at = ["--image_path", str(folder), "--json", "--save-images", "--batch-size", "2"]
    code, _, err = run_main([*at, "--set", f"results_dir={tmp_path / 'one'}"], env)
    assert code == 0, err
    expected = json.loads((tmp_path / "one" / "photos" / "predictions.json").read_text())

    monkeypatch.setattr(photos, "PhotoJob", CrashingJob)
    results = tmp_path / "workers" / "photos"
    code, out, err = run_main([*at, "--workers", "2", "--set", f"results_dir={results.parent}"], env)
    assert code == 1
    lost = [str(folder / "c.jpg"), str(folder / "crash.jpg")]   # the second chunk of two
    assert _lines(err, "error") == [f"error: worker died analysing {p} (exit code 3)" for p in lost]
    s = summary(out)
    assert (s["images"], s["faces"], s["failed"]) == (7, 5, 2)
    data = json.loads((results / "predictions.json").read_text())
    assert [e["image"] for e in data] == [e["image"] for e in expected]
    for got, want in zip(data, expected):
        if got["image"] in lost:
            assert (got["faces"], got["error"]) == ([], "worker died (exit code 3)")
        else:
            assert got == want   # the same boxes and probabilities as in one process
    assert sorted(p.name for p in (results / "labeled_images").iterdir()) == [
        ".written-by-emotion-recognition", "a.jpg", "b.jpg", "e.jpg", "f.jpg", "g.jpg"]   # no scratch file left
