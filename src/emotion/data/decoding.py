"""Image bytes -> RGB pixels, the one decoder of training, evaluation and the int8 export's calibration images.

    image = decode_uint8(Path("face.jpg").read_bytes(), cfg.input_shape)   # uint8 [H, W, 3], RGB
    ds.map(lambda b: decode_uint8(b, cfg.input_shape))                     # the same inside tf.data
    keep, bad = check_decoding(paths, cfg.input_shape)                     # drop (and name) files that do not decode

JPEG uses the accurate integer IDCT (what PIL and OpenCV use, so training sees what inference sees); gray and
RGBA become RGB; another size is resized (bilinear, antialiased, rounded to whole values). There is no /255
scaling and no BGR here: the model applies ResNet50's preprocess_input itself.
"""
from __future__ import annotations

import os
from typing import Sequence

import tensorflow as tf

from emotion.data.scanning import JPEG_MAGIC, MAX_WARNINGS, report_problems

# {(path, size, mtime_ns, height, width): decodes} for files check_decoding has decoded in this process
_DECODES: dict[tuple, bool] = {}


def check_decoding(paths: Sequence[str], input_shape: Sequence[int], max_warnings: int = MAX_WARNINGS,
                   warn_once: bool = False) -> tuple[list[int], list[str]]:
    """Decode every file once (in parallel), like check_images: (indices of those that decode, the others),
    one warning naming each file that does not (a JPEG corrupt in the middle passes check_images' look at
    its ends, and libjpeg's own "Corrupt JPEG data" lines name no file). Results are remembered per file
    (path, size, mtime) in this process, so a training loop's make_dataset per epoch decodes nothing twice.

        keep, bad = check_decoding(paths, cfg.input_shape)
    """
    h, w = _hw(input_shape)
    keys = [(k, h, w) for k in file_stats(paths)]
    todo = [i for i, k in enumerate(keys) if k not in _DECODES]
    if todo:
        ds = tf.data.Dataset.from_tensor_slices((tf.constant(todo, tf.int64), tf.constant([paths[i] for i in todo])))
        # the output depends on the pixels, so the decode cannot be optimised away
        ds = ds.map(lambda i, p: (i, tf.reduce_max(decode_uint8(tf.io.read_file(p), input_shape))),
                    num_parallel_calls=tf.data.AUTOTUNE, deterministic=False).ignore_errors()
        decoded = {int(i) for i, _ in ds.as_numpy_iterator()}
        for i in todo:
            _DECODES[keys[i]] = i in decoded
    problems = {i: None if _DECODES[k] else "cannot be decoded (corrupt image data)" for i, k in enumerate(keys)}
    return report_problems(paths, problems, max_warnings, warn_once)



def _hw(input_shape: Sequence[int]) -> tuple[int, int]:
    return int(input_shape[0]), int(input_shape[1])



def decode_uint8(image_bytes, input_shape: Sequence[int]) -> tf.Tensor:
    """Encoded JPEG/PNG/GIF/BMP bytes -> uint8 [H, W, 3] RGB, H, W = input_shape[:2] (what the cache holds; the
    pipeline casts to float32 0..255 per batch). Eager or inside tf.data / tf.function alike."""
    h, w = _hw(input_shape)
    image_bytes = tf.convert_to_tensor(image_bytes, tf.string)
    # JPEG with the accurate integer IDCT (what PIL and OpenCV use; TF's default fast IDCT is off by up to
    # ~10 levels in dark areas, a train/inference skew); everything else by content, gray/RGBA -> RGB.
    image = tf.cond(
        tf.equal(tf.strings.substr(image_bytes, 0, 3), JPEG_MAGIC),
        lambda: tf.io.decode_jpeg(image_bytes, channels=3, dct_method="INTEGER_ACCURATE"),
        lambda: tf.io.decode_image(image_bytes, channels=3, expand_animations=False))

    def resize():
        resized = tf.image.resize(image, (h, w), method="bilinear", antialias=True)
        return tf.cast(tf.clip_by_value(tf.round(resized), 0.0, 255.0), tf.uint8)

    shape = tf.shape(image)
    same = tf.logical_and(tf.equal(shape[0], h), tf.equal(shape[1], w))
    image = tf.cond(same, lambda: image, resize)
    image.set_shape((h, w, 3))
    return image




def file_stats(paths: Sequence[str]) -> tuple:
    """((path, size, mtime_ns), ...) of each file, (path, -1, -1) when it cannot be read: what identifies a
    file's content for the in-process memories (decodable files, cached datasets)."""
    stats = []
    for p in paths:
        try:
            st = os.stat(p)
            stats.append((p, st.st_size, st.st_mtime_ns))
        except OSError:
            stats.append((p, -1, -1))
    return tuple(stats)
