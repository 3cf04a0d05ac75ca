"""Explanation figures from Grad-CAM (emotion/model/gradcam.py): per face for predict.py --explain, and the most
confident mistakes of evaluate.py.

    explainer = Explainer(rec, out_dir)                    # loads the Keras model at rec.model_path
    written = explainer.explain("photos/a.jpg", image_rgb, results)   # out_dir/a_face1.png, a_face2.png, ...
    names = FigureNames().names("photos/a.jpg", 2)         # the same names alone: ["a_face1.png", "a_face2.png"]
    explainer.render("photos/a.jpg", image_rgb, results, paths)       # the figures drawn to paths of one's own
    plot_mistake_maps(model, paths, y, probs, class_names, Path("performance/confident_mistakes_gradcam.png"))
    shown = confident_mistakes(y, probs)                   # the MAX_MISTAKES most confident wrong predictions
    mistakes_grid(y, probs, class_names, path, pictures, title)   # the grid both mistakes figures are drawn in

A face's figure: the crop the model saw, the Grad-CAM map of its predicted class over it, and its top-3
probabilities in the overlay's class colours. The confident mistakes have one rule and one layout
(confident_mistakes, mistakes_grid) for both of evaluate.py's figures: confident_mistakes.png (the images,
evaluator.plot_mistakes) and confident_mistakes_gradcam.png (the same images with their maps, plot_mistake_maps).
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from emotion.common import plots
from emotion.common.colours import class_colors
from emotion.model import gradcam

TOP = 3
MAX_MISTAKES = 16   # the most confident mistakes a mistakes figure shows
GRID_COLUMNS = 4


def _top_bars(ax, probs: np.ndarray, class_names: Sequence[str], top: int = TOP) -> None:
    order = np.argsort(-probs)[:top][::-1]
    colors = class_colors(class_names)
    ax.barh(range(len(order)), probs[order], color=[colors[k] for k in order])
    ax.set_yticks(range(len(order)), [f"{class_names[k]} {probs[k]:.2f}" for k in order])
    ax.set_xlim(0, 1)
    ax.set_title(f"top {top}", fontsize=10)


def face_figure(crop: np.ndarray, heat: np.ndarray, probs: np.ndarray, class_names: Sequence[str], path: Path,
                title: str) -> None:
    """One face's PNG: the crop, the map over it, the top-3 probabilities."""
    plt = plots.pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(8, 2.8), gridspec_kw={"width_ratios": [1, 1, 1.3]})
    axes[0].imshow(np.asarray(crop, np.uint8))
    axes[0].set_title("what the model saw", fontsize=10)
    axes[1].imshow(gradcam.overlay(crop, heat))
    axes[1].set_title(f"Grad-CAM: {class_names[int(np.argmax(probs))]}", fontsize=10)
    for ax in axes[:2]:
        ax.axis("off")
    _top_bars(axes[2], probs, class_names)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    plots.save(fig, path)


class FigureNames:
    """The file names of each image's face figures, <image stem>_face<k>.png, k from 1 in the order of the results;
    a second image with the same stem gets <stem>_2_face<k>.png, a third <stem>_3_..., in the order asked."""

    def __init__(self):
        self.stems: set[str] = set()

    def names(self, name: str, faces: int) -> list[str]:
        """The names of `faces` figures of the image `name` (its stem reserved; none for no face)."""
        if not faces:
            return []
        stem, n = Path(name).stem, 1
        while stem in self.stems:
            n += 1
            stem = f"{Path(name).stem}_{n}"
        self.stems.add(stem)
        return [f"{stem}_face{k}.png" for k in range(1, faces + 1)]


class Explainer:
    """Grad-CAM figures of every face predict.py finds: <out_dir>/<image stem>_face<k>.png (FigureNames). The naming
    and the drawing are apart: render() draws one image's figures to the paths given (what predict.py's worker
    processes do, the parent naming them in input order)."""

    def __init__(self, rec, out_dir: Path | None = None):
        from emotion.model import network as model_lib
        self.rec, self.out_dir = rec, Path(out_dir) if out_dir is not None else None
        self.model = model_lib.load_model(rec.model_path)
        self.names = FigureNames()

    def explain(self, name: str, image_rgb: np.ndarray, results) -> list[Path]:
        """The figures of one image's results (FaceResult list) in out_dir; returns the paths written."""
        paths = [self.out_dir / n for n in self.names.names(name, len(results))]
        return self.render(name, image_rgb, results, paths)

    def render(self, name: str, image_rgb: np.ndarray, results, paths: Sequence[Path]) -> list[Path]:
        """Draw the figure of each of one image's results to `paths` (one per result); returns them."""
        if not results:
            return []
        if results[0].whole_image:
            crops = self.rec.whole(image_rgb)[None]
        else:
            crops = self.rec.crops(image_rgb, [r.box for r in results], angles=[r.angle for r in results])
        maps, probs = gradcam.heatmaps(self.model, crops)
        for k, (crop, heat, p, path) in enumerate(zip(crops, maps, probs, paths), 1):
            face_figure(crop, heat, p, self.rec.class_names, Path(path), f"{Path(name).name}, face {k}")
        return [Path(p) for p in paths]


def confident_mistakes(y: np.ndarray, probs: np.ndarray, k: int = MAX_MISTAKES) -> np.ndarray:
    """Indices of the k wrong predictions with the highest confidence, most confident first."""
    pred, conf = probs.argmax(axis=1), probs.max(axis=1)
    wrong = np.flatnonzero(pred != y)
    return wrong[np.argsort(-conf[wrong], kind="stable")][:k]


def mistakes_grid(y, probs, class_names: Sequence[str], path: Path,
                  pictures: Callable[[np.ndarray], Sequence[np.ndarray | None]],
                  title: Callable[[np.ndarray], str], k: int = MAX_MISTAKES) -> int:
    """The figure of the k most confident mistakes (confident_mistakes), GRID_COLUMNS a row, each titled
    true / predicted (confidence); "no mistakes" when there are none. pictures(shown) gives the RGB image of
    each index shown (None: left blank), title(shown) the figure's title. Returns how many are shown."""
    plt = plots.pyplot()
    y, probs = np.asarray(y), np.asarray(probs)
    shown = confident_mistakes(y, probs, k)
    images = pictures(shown) if len(shown) else []
    cols = GRID_COLUMNS
    rows = max(1, math.ceil(len(shown) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 2.3, rows * 2.6 + 0.6), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, i, image in zip(axes.flat, shown, images):
        if image is not None:
            ax.imshow(image)
        ax.set_title(f"true: {class_names[y[i]]}\npred: {class_names[probs[i].argmax()]} ({probs[i].max():.2f})",
                     fontsize=9)
    if not len(shown):
        axes[0, 0].text(0, 0.5, "no mistakes", fontsize=14)
    fig.suptitle(title(shown))
    fig.tight_layout()
    plots.save(fig, path)
    return len(shown)


def plot_mistake_maps(model, paths: Sequence[str], y, probs, class_names: Sequence[str], path: Path,
                      k: int = MAX_MISTAKES) -> int:
    """The figure beside confident_mistakes.png: the same images in the same grid (mistakes_grid), each with the
    Grad-CAM map of the class the model wrongly chose over it. Returns how many are shown."""
    import cv2
    probs = np.asarray(probs)
    h, w = (int(d) for d in model.input_shape[1:3])

    def pictures(shown: np.ndarray) -> list[np.ndarray]:
        crops = [cv2.imread(str(paths[i]), cv2.IMREAD_COLOR) for i in shown]
        crops = np.stack([cv2.resize(c[..., ::-1], (w, h)) if c is not None else np.zeros((h, w, 3), np.uint8)
                          for c in crops])
        maps, _ = gradcam.heatmaps(model, crops, classes=probs[shown].argmax(axis=1).tolist())
        return [gradcam.overlay(crop, heat) for crop, heat in zip(crops, maps)]

    return mistakes_grid(y, probs, class_names, path, pictures,
                         lambda shown: "Most confident mistakes, Grad-CAM of the predicted class (red: what it "
                                       "looked at)", k)
