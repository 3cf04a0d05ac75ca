"""Figures: matplotlib without a display, saved whole (temp file, then rename).

    from emotion.common import plots
    plt = plots.pyplot()
    fig, ax = plt.subplots()
    ...
    plots.save(fig, Path("performance/figure.png"))
"""
from __future__ import annotations

from pathlib import Path

from emotion.common.atomic import atomic_path


def pyplot():
    """matplotlib.pyplot on the Agg backend (files only: works without a display, and in threads)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def save(fig, path: Path, dpi: int = 100) -> None:
    """Write fig to path as PNG atomically, then free it."""
    plt = pyplot()
    with atomic_path(Path(path)) as tmp:
        fig.savefig(tmp, dpi=dpi, format="png")
    plt.close(fig)
