"""PNG plots of runs and comparisons (matplotlib, headless)."""

from __future__ import annotations

import functools
import io
from pathlib import Path
from typing import Any, Callable, Sequence, TypeVar

from ..util import atomic_write_bytes


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


F = TypeVar("F", bound=Callable[..., Any])


def literal_text(fn: F) -> F:
    """Run the plotting function ``fn`` with every label drawn as it is written: no mathtext (a ``$`` in a
    class, file or backbone name is a dollar sign, not the start of a formula), no TeX."""
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        import matplotlib

        with matplotlib.rc_context({"text.parse_math": False, "text.usetex": False}):
            return fn(*args, **kwargs)
    return wrapper  # type: ignore[return-value]


def _save(fig: Any, path: Path, metadata: dict[str, str] | None = None) -> None:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight", metadata=metadata)
    _pyplot().close(fig)
    atomic_write_bytes(path, buf.getvalue())


@literal_text
def learning_curves(history: Sequence[dict[str, Any]], path: Path, title: str = "") -> None:
    """Loss (train/val) and top-1 accuracy (train/val) per epoch, side by side."""
    plt = _pyplot()
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.8))
    epochs = [r["epoch"] for r in history]
    for key, label in (("train_loss", "train"), ("val_loss", "val")):
        ax1.plot(epochs, [r.get(key) for r in history], marker="o", label=label)
    for key, label in (("train_acc", "train"), ("val_acc", "val")):
        ax2.plot(epochs, [r.get(key) for r in history], marker="o", label=label)
    ax1.set(xlabel="epoch", ylabel="loss", title="loss")
    ax2.set(xlabel="epoch", ylabel="top-1 accuracy", title="accuracy", ylim=(0, 1.02))
    for ax in (ax1, ax2):
        ax.xaxis.get_major_locator().set_params(integer=True)  # whole epochs
        ax.grid(alpha=0.3)
        ax.legend()
    if title:
        fig.suptitle(title)
    _save(fig, path)


@literal_text
def confusion_matrix(matrix: Sequence[Sequence[int]], classes: Sequence[str], path: Path, title: str = "") -> None:
    """Row-normalised confusion matrix (rows: true class, columns: predicted) with counts."""
    _save(confusion_figure(matrix, classes, title), path)


@literal_text
def confusion_figure(matrix: Sequence[Sequence[int]], classes: Sequence[str], title: str = "") -> Any:
    """The matplotlib figure of :func:`confusion_matrix` (also logged to TensorBoard)."""
    plt = _pyplot()
    import numpy as np

    m = np.asarray(matrix, dtype=float)
    norm = m / np.maximum(m.sum(axis=1, keepdims=True), 1)
    n = len(classes)
    size = min(2 + 0.45 * n, 16)
    fig, ax = plt.subplots(figsize=(size + 1, size))
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(im, ax=ax, fraction=0.046, label="fraction of true class")
    if n <= 30:
        ax.set_xticks(range(n), classes, rotation=45, ha="right")
        ax.set_yticks(range(n), classes)
        for i in range(n):
            for j in range(n):
                if m[i, j]:
                    ax.text(j, i, int(m[i, j]), ha="center", va="center",
                            color="white" if norm[i, j] > 0.5 else "black", fontsize=8)
    ax.set(xlabel="predicted", ylabel="true", title=title or "confusion matrix (validation)")
    return fig


@literal_text
def top_losses(tiles: Sequence[dict[str, Any]], path: Path, title: str = "") -> None:
    """A gallery of the worst validation images (fastai's ``plot_top_losses``), worst first.

    Each tile is a ``val_predictions.csv`` row (``item``, ``target``, ``pred``, ``p_pred``, ``p_target``,
    ``loss``) with ``load()``, which reads its image (PIL, or None when it cannot be read again); the PNG's
    ``Description`` metadata lists the same images in the same order.
    """
    plt = _pyplot()
    cols = max(1, min(3, len(tiles)))
    rows = max(1, -(-len(tiles) // cols))
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 3.5 * rows), squeeze=False, layout="constrained")
    for ax in axes.flat:
        ax.axis("off")
    for ax, t in zip(axes.flat, tiles):
        img = t["load"]()
        if img is not None:
            img = img.copy()
            img.thumbnail((256, 256))  # a 12-megapixel photo is not drawn at full size
            ax.imshow(img)
        else:
            ax.text(0.5, 0.5, "image could not be read", ha="center", va="center", transform=ax.transAxes)
        item = str(t["item"])
        ax.set_title(f"{item if len(item) <= 34 else '…' + item[-33:]}\ntrue {t['target']} · pred {t['pred']} "
                     f"({float(t['p_pred']):.2f})\nloss {float(t['loss']):.2f} · p(true) {float(t['p_target']):.2f}",
                     fontsize=8, color="black" if t["target"] == t["pred"] else "firebrick")
    if not tiles:
        axes[0, 0].text(0.5, 0.5, "no validation images", ha="center", va="center")
    fig.suptitle(title or "top losses (validation)")
    listing = "\n".join(f"{i + 1}. {t['item']}: true {t['target']}, pred {t['pred']}, loss {float(t['loss']):.4f}"
                         for i, t in enumerate(tiles))
    _save(fig, path, {"Title": title or "top losses", "Description": listing})


@literal_text
def scatter(points: Sequence[dict[str, Any]], x: str, y: str, path: Path, *, xlabel: str, ylabel: str,
            title: str, logx: bool = False, yerr: tuple[str, str] | None = None) -> None:
    """One point per entry, e.g. accuracy vs speed.

    Each point is tagged on the chart with its ``tag`` (e.g. the leaderboard rank) and named in a legend
    beside it (``label``), so that long names never overlap; ``hollow`` points (e.g. random init) are drawn
    as open circles. ``yerr`` names the keys of a point's lower and upper ``y`` bound (e.g. a 95 %
    interval), drawn as an error bar where both are present.
    """
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    drawn = [p for p in points if p.get(x) is not None and p.get(y) is not None]
    for i, p in enumerate(drawn):
        tag = str(p.get("tag", i + 1))
        colour = f"C{i % 10}"
        ax.scatter(p[x], p[y], s=50, facecolors="none" if p.get("hollow") else colour, edgecolors=colour,
                   linewidths=1.5, label=f"{tag}. {p['label']}")
        low, high = (p.get(yerr[0]), p.get(yerr[1])) if yerr else (None, None)
        if low is not None and high is not None:
            ax.errorbar(p[x], p[y], yerr=[[max(p[y] - low, 0)], [max(high - p[y], 0)]], fmt="none",
                        ecolor=colour, elinewidth=1, capsize=3, alpha=0.7)
        ax.annotate(tag, (p[x], p[y]), textcoords="offset points", xytext=(6, 4), fontsize=9, weight="bold")
    if logx:
        ax.set_xscale("log")
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    ax.grid(alpha=0.3)
    if drawn:
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False,
                  title="open circle: random init" if any(p.get("hollow") for p in drawn) else None,
                  title_fontsize=8)
    _save(fig, path)


@literal_text
def curves_overlay(series: dict[str, Sequence[dict[str, Any]]], path: Path, key: str = "val_acc",
                   ylabel: str = "validation top-1") -> None:
    """One line per entry of ``series`` (label → history) for metric ``key``."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for label, hist in series.items():
        if hist:
            ax.plot([r["epoch"] for r in hist], [r.get(key) for r in hist], marker="o", label=label)
    ax.set(xlabel="epoch", ylabel=ylabel, title=f"{ylabel} per epoch")
    ax.xaxis.get_major_locator().set_params(integer=True)  # whole epochs
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:  # no finished entries: an empty plot, without a warning
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False)
    _save(fig, path)


@literal_text
def trial_bars(trials: Sequence[dict[str, Any]], path: Path, title: str = "") -> None:
    """Validation top-1 per trial (``name``, ``val_acc``, ``ci`` = [low, high]) as bars with their intervals."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(1.1 * len(trials) + 2, 3.2))
    acc = [100 * t["val_acc"] for t in trials]
    err = [[a - 100 * t["ci"][0] for a, t in zip(acc, trials)], [100 * t["ci"][1] - a for a, t in zip(acc, trials)]]
    ax.bar([t["name"] for t in trials], acc, yerr=err, capsize=4, color="tab:blue")
    ax.set_ylabel("val top-1 (%)")
    ax.set_ylim(max(0.0, min(100 * t["ci"][0] for t in trials) - 5), 100)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    _save(fig, path)
