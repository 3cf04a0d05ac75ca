"""face_alignment: eyes (issue 19, part 2): the eye line's angle, crops turned so the eyes are level, the same turn
in OpenCV and inside tf.data, dataset images levelled in training and evaluation, and the recognizer's crops in
predict.py's and inference.py's paths. Known answers come from hand geometry (a quarter turn is np.rot90, a
marked pixel lands where the rotation matrix says) and from real faces turned by a known angle."""
from __future__ import annotations

import json
import queue
import threading
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
from support import FACES_GRAY, link_organized, require

from emotion.common import config
from emotion.data import faces

SIZE = (96, 96)
PHOTOS = ["Allison_Janney_0001.jpg", "Andre_Agassi_0034.jpg", "Arnaud_Clement_0001.jpg", "Bertrand_Bonello_0001.jpg"]


@pytest.fixture(scope="module")
def detector():
    if faces.blazeface_model_path() is None:
        pytest.skip(f"BlazeFace model not installed ({faces.BLAZEFACE_INSTALL})")
    return faces.FaceDetector("blazeface")


def smooth_noise(shape, seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return cv2.GaussianBlur(rng.integers(0, 256, shape, dtype=np.uint8), (7, 7), 2)


def on_canvas(gray: np.ndarray, side: int = 700) -> np.ndarray:
    canvas = np.zeros((side, side, 3), np.uint8)
    y0, x0 = (side - gray.shape[0]) // 2, (side - gray.shape[1]) // 2
    canvas[y0:y0 + gray.shape[0], x0:x0 + gray.shape[1]] = gray[:, :, None]
    return canvas


def turned_clockwise(image: np.ndarray, degrees: float) -> np.ndarray:
    """The image turned clockwise on screen by `degrees` about its centre (OpenCV's own rotation matrix)."""
    h, w = image.shape[:2]
    return cv2.warpAffine(image, cv2.getRotationMatrix2D(((w - 1) / 2, (h - 1) / 2), -degrees, 1.0), (w, h))


def test_eye_angle_is_the_line_from_the_right_eye_to_the_left_against_the_x_axis():
    assert faces.eye_angle([(10, 10), (20, 20)]) == pytest.approx(45.0)   # left eye lower: turned clockwise
    assert faces.eye_angle([(10, 20), (20, 10)]) == pytest.approx(-45.0)
    assert faces.eye_angle([(10, 10), (30, 10), (0, 0)]) == 0.0
    assert faces.eye_angle(None) == 0.0 and faces.eye_angle([(5, 5), (5, 5)]) == 0.0
    face = faces.Face((0, 0, 10, 10), 0.9, [(10, 10), (20, 20)])
    assert faces.face_angle(face, "eyes") == pytest.approx(45.0) and faces.face_angle(face, "none") == 0.0
    with pytest.raises(ValueError):
        faces.face_angle(face, "nose")


def test_a_quarter_turned_crop_is_the_upright_crop_rotated_by_numpy():
    """Hand geometry: output pixel p samples c + R(90) (p - c), i.e. turned[v, u] = upright[u, side - 1 - v],
    which is np.rot90. A tiny angle gives the upright square itself; angle 0 is the upright crop's own code."""
    image = smooth_noise((200, 300, 3))
    box = (100, 60, 50, 50)
    upright = faces.crop_face(image, box, dy=0.0)
    assert upright.shape == (75, 75, 3)
    np.testing.assert_array_equal(faces.crop_face(image, box, dy=0.0, angle=90.0), np.rot90(upright, 1))
    np.testing.assert_array_equal(faces.crop_face(image, box, dy=0.0, angle=-90.0), np.rot90(upright, -1))
    np.testing.assert_array_equal(faces.crop_face(image, box, angle=1e-7), faces.crop_face(image, box))
    # Resized to the model's input, a tiny angle differs from the upright crop only by the resampling.
    small = faces.crop_face(image, box, size=SIZE, angle=1e-7).astype(int)
    assert np.abs(small - faces.crop_face(image, box, size=SIZE).astype(int)).mean() < 0.5
    # The crop's centre moves along the face's own vertical: at 90 degrees, CROP_DY shifts it sideways.
    shifted = faces.crop_face(image, (100, 60, 40, 40), dy=-0.15, angle=90.0)
    # dy * h = -6 along the face's "down", which points to image -x here: the centre moves 6 pixels to +x
    np.testing.assert_array_equal(shifted, np.rot90(faces.crop_face(image, (106, 60, 40, 40), dy=0.0), 1))


def test_a_turn_is_the_same_in_opencv_and_in_tensorflow_eagerly_and_inside_tf_data():
    import tensorflow as tf

    from emotion.data import alignment
    marked = np.zeros((9, 9, 3), np.uint8)
    marked[1, 4] = 255  # x 4, y 1: turned by 90 degrees it lands at c + R(-90) (src - c) = (1, 4), row 4 col 1
    for turned in (faces.turn(marked, 90.0), alignment.level_eyes(marked, 90.0).numpy()):
        assert turned[4, 1].tolist() == [255, 255, 255] and int(turned.sum()) == 3 * 255
    image = smooth_noise((96, 96, 3), seed=1)
    angles = np.array([0.0, 7.5, -20.0, 33.0], np.float32)
    ds = tf.data.Dataset.from_tensor_slices((np.stack([image] * 4), angles)).map(alignment.level_eyes)
    for angle, in_pipeline in zip(angles, ds):
        eager = alignment.level_eyes(image, angle).numpy()
        np.testing.assert_array_equal(in_pipeline.numpy(), eager)
        assert eager.dtype == np.uint8 and eager.shape == image.shape
        assert np.abs(eager.astype(int) - faces.turn(image, float(angle)).astype(int)).max() <= 1, angle
    np.testing.assert_array_equal(faces.turn(image, 0.0), image)


def test_the_eyes_of_a_real_face_turned_by_a_known_angle_come_out_level(detector):
    """Real photos turned 20 degrees each way: the eye angle moves by the turn, and the crop turned by it has
    level eyes (measured again by BlazeFace on the crop, within its noise) where the upright crop keeps the tilt."""
    errors, levelled, upright = [], [], []
    for name in PHOTOS:
        canvas = on_canvas(cv2.imread(str(require(FACES_GRAY) / "images" / name), cv2.IMREAD_GRAYSCALE))
        (face,) = detector.detect(canvas)
        for turn in (20.0, -20.0):
            turned = turned_clockwise(canvas, turn)
            (found,) = detector.detect(turned)
            angle = faces.eye_angle(found.keypoints)
            errors.append(angle - faces.eye_angle(face.keypoints) - turn)
            levelled.append(faces.tight_crop_angle(detector, faces.crop_face(turned, found.box, size=SIZE, angle=angle)))
            upright.append(faces.tight_crop_angle(detector, faces.crop_face(turned, found.box, size=SIZE)))
    assert np.median(np.abs(errors)) < 3, errors
    # BlazeFace's eye keypoints on a tight crop are noisy (a few degrees either way), hence the loose bounds
    assert np.median(np.abs(levelled)) < 8 < 12 < np.median(np.abs(upright)), (levelled, upright)
    assert np.median(np.abs(levelled)) < np.median(np.abs(upright)) / 2


def test_a_split_read_with_face_alignment_eyes_is_levelled_in_the_pipeline(detector, tmp_path):
    """read_split finds each image's eye angle; make_dataset turns the image by it (equal to OpenCV's turn of the
    file decoded by OpenCV, within JPEG decoders' rounding), and the eyes come out more level. Off: no angles,
    the images as decoded."""
    from emotion.data import datasets
    data = link_organized(tmp_path / "data", per_class=3, splits=("test",))
    cfg = config.load_config(None, [f"data_path={data}", "face_detector=blazeface", "face_alignment=eyes"])
    files = datasets.read_split(data / "test", cfg)
    assert files.angles is not None and files.angles.dtype == np.float32 and len(files.angles) == len(files.paths)
    assert np.count_nonzero(files.angles) >= 0.9 * len(files.paths) and np.all(np.abs(files.angles) < 60)
    ds, info = datasets.make_dataset(files, cfg, training=False)
    images = np.concatenate([x.numpy() for x, _ in ds]).astype(np.uint8)
    decoded = [cv2.cvtColor(cv2.imread(p), cv2.COLOR_BGR2RGB) for p in info.paths]
    for image, plain, angle in zip(images, decoded, files.angles):
        diff = np.abs(image.astype(int) - faces.turn(plain, float(angle)).astype(int))
        assert diff.mean() < 0.5 and diff.max() <= 8, angle
    after = [faces.tight_crop_angle(detector, image) for image in images]
    assert np.median(np.abs(after)) < np.median(np.abs(files.angles)) / 2, after

    cfg_off = config.load_config(None, [f"data_path={data}", "face_detector=blazeface"])
    off = datasets.read_split(data / "test", cfg_off)
    assert off.angles is None
    ds, _ = datasets.make_dataset(off, cfg_off, training=False)
    plain_images = np.concatenate([x.numpy() for x, _ in ds]).astype(int)
    assert np.abs(plain_images - np.stack(decoded).astype(int)).mean() < 0.5


class RecordingClassifier:
    """Keeps the crops it is given; answers uniform probabilities."""

    input_shape, num_classes, backend = (96, 96, 3), 8, "recording"

    def __init__(self):
        self.crops = []

    def predict(self, crops):
        self.crops.append(np.array(crops))
        return np.full((len(crops), 8), 1 / 8, np.float32)


def _recognizer(detector, alignment: str):
    from emotion.runtime import recognizer
    cfg = config.load_config(None, ["face_detector=blazeface", f"face_alignment={alignment}"])
    return recognizer.EmotionRecognizer(cfg, detector=detector, classifier=RecordingClassifier())


def test_predict_and_inference_paths_crop_each_face_turned_by_its_eye_angle(detector):
    from emotion.runtime import tracking, video, video_threads
    gray = cv2.imread(str(require(FACES_GRAY) / "images" / PHOTOS[0]), cv2.IMREAD_GRAYSCALE)
    frame = turned_clockwise(on_canvas(gray), 25.0)
    (face,) = detector.detect(frame)
    angle = faces.eye_angle(face.keypoints)
    assert angle > 10  # precondition: the turn shows in the keypoints
    expected = faces.crop_face(frame, face.box, size=SIZE, angle=angle)

    rec = _recognizer(detector, "eyes")
    ((result,),) = rec.analyze_batch([frame])  # predict.py's path
    assert result.angle == pytest.approx(angle)
    np.testing.assert_array_equal(rec.classifier.crops[-1][0], expected)
    frames = iter([(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR), 0), None])
    source = SimpleNamespace(read=lambda buffer=None: next(frames), kind="video", stop_reason="end")
    producer = video_threads.Producer(source, rec, tracking.FaceTracker(), 1, None, threading.Event(),
                                      queue.Queue())  # inference.py's path: the reading thread's crops
    producer.run()
    assert producer.error is None
    np.testing.assert_array_equal(producer.frames.get_nowait().crops[0], expected)
    row = video.VideoRun._classify_one(SimpleNamespace(rec=rec), cv2.cvtColor(frame, cv2.COLOR_RGB2BGR), face)
    assert row.shape == (8,)
    np.testing.assert_array_equal(rec.classifier.crops[-1][0], expected)

    plain = _recognizer(detector, "none")
    ((result,),) = plain.analyze_batch([frame])
    assert result.angle == 0.0
    np.testing.assert_array_equal(plain.classifier.crops[-1][0], faces.crop_face(frame, face.box, size=SIZE))


def test_a_tight_crop_classified_whole_is_levelled_as_a_dataset_image_is(detector):
    crop = cv2.resize(turned_clockwise(on_canvas(cv2.imread(str(require(FACES_GRAY) / "images" / PHOTOS[1]),
                                                          cv2.IMREAD_GRAYSCALE), 400), 20.0)[100:300, 100:300],
                      SIZE, interpolation=cv2.INTER_AREA)
    angle = faces.tight_crop_angle(detector, crop)
    assert angle > 8  # precondition
    rec = _recognizer(detector, "eyes")
    if rec.detect(crop):
        pytest.skip("BlazeFace finds this crop's face directly: the whole-image path is not taken")
    ((result,),) = rec.analyze_batch([crop])
    assert result.whole_image
    np.testing.assert_array_equal(rec.classifier.crops[-1][0], faces.turn(crop, angle))


def test_a_model_trained_with_another_alignment_is_named_in_a_warning(detector, tmp_path, capsys):
    from emotion.runtime import recognizer
    model = tmp_path / "model.h5"
    config.trained_config_path(model).write_text("face_alignment: eyes\n", encoding="utf-8")
    cfg = config.load_config(None, ["face_detector=blazeface"])
    for _ in range(3):  # evaluate.py's scenes make one recognizer per detector: one warning all the same
        recognizer.EmotionRecognizer(cfg, model_path=model, detector=detector, classifier=RecordingClassifier())
    err = capsys.readouterr().err
    assert "trained with face_alignment eyes" in err and "face_alignment=eyes" in err and len(err.splitlines()) == 1
    recognizer.EmotionRecognizer(config.load_config(None, ["face_alignment=eyes"]), model_path=model,
                                 detector=detector, classifier=RecordingClassifier())
    assert capsys.readouterr().err == ""


def test_train_and_predict_with_level_eyes_end_to_end(detector, tmp_path, capsys):
    """train.py with face_alignment eyes finds the eye angles of its splits (once each) and records the setting
    beside the model (evaluate.py reads its split through the same read_split: tested above); predict.py run with
    the other setting says so in one warning line, and with the same one does not."""
    import predict
    import train
    from support import as_set_args, tiny_config
    link_organized(tmp_path / "data", per_class=2, splits=("train", "val"))
    overrides = tiny_config(tmp_path, "num_epochs=1", "fine_tune_epochs=0", "optimizer=sgd", "face_alignment=eyes",
                            "face_detector=blazeface", "classifier_backend=keras")
    assert train.main(as_set_args(overrides)) == 0
    out = capsys.readouterr().out
    assert out.count("face_alignment eyes: eye angles of 16 images") == 2, out  # train and val, once each
    model = tmp_path / "models" / "model.h5"
    assert config.trained_setting(model, "face_alignment") == "eyes"
    card = json.loads(model.with_suffix(".card.json").read_text())
    assert card["recipe"]["face_alignment"] == "eyes" and "- face_alignment: eyes" in model.with_suffix(
        ".card.md").read_text()
    photo = str(require(FACES_GRAY) / "images" / PHOTOS[0])
    assert predict.main([*as_set_args([*overrides, "face_alignment=none"]), "--image_path", photo]) == 0
    err = capsys.readouterr().err
    assert "was trained with face_alignment eyes but config key face_alignment is none" in err
    assert predict.main([*as_set_args(overrides), "--image_path", photo]) == 0
    assert "face_alignment" not in capsys.readouterr().err
