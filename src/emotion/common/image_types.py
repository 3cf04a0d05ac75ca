"""Which files count as images, by extension (lower case): one rule per reader.

    from emotion.common.image_types import PIPELINE_EXTENSIONS, OPENCV_EXTENSIONS
    name.lower().endswith(PIPELINE_EXTENSIONS)   # train/evaluate can decode it (tf.io.decode_image)

PIPELINE_EXTENSIONS: what the training pipeline (data/decoding.py, TensorFlow's decode_image) decodes;
train.py and evaluate.py read only these from the class folders, so organize_data.py sorts only these
into class folders.
OPENCV_EXTENSIONS: what predict.py picks up from a folder or a glob (read with cv2.imread, which has no GIF
reader but reads WebP and TIFF).
KNOWN_EXTENSIONS: every image type either reader knows; organize_data.py sends an image of a type the
pipeline does not decode to unclassified/, with the reason, instead of leaving it behind unnoticed.
"""
from __future__ import annotations

PIPELINE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".gif", ".bmp")
OPENCV_EXTENSIONS = (".jpg", ".jpeg", ".jpe", ".png", ".bmp", ".webp", ".tif", ".tiff")
KNOWN_EXTENSIONS = tuple(dict.fromkeys(PIPELINE_EXTENSIONS + OPENCV_EXTENSIONS))


def pipeline_reads(name: str) -> bool:
    """Whether the training pipeline decodes a file of this name (by its extension, any case)."""
    return name.lower().endswith(PIPELINE_EXTENSIONS)
