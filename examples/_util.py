"""Small helpers the examples share: a progress bar, a result table, a saved plot.

Not part of funcgrad: plain tqdm / matplotlib / print, kept here so each example reads as the
model-building and training code only.
"""

from __future__ import annotations

import os
import time


def progress(iterable, desc, quiet=False, total=None):
    """A tqdm bar (shows the loss via `bar.set_postfix(loss=...)`)."""
    from tqdm.auto import tqdm

    return tqdm(iterable, desc=desc, total=total, disable=quiet, leave=False,
                dynamic_ncols=True, mininterval=0.5)


def print_table(rows, headers, title=None):
    """A Markdown table of `rows` (lists of values; floats get 4 significant digits)."""
    def fmt(v):
        return f"{v:.4g}" if isinstance(v, float) else str(v)

    cells = [[fmt(v) for v in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(headers)]
    if title:
        print(f"\n{title}")
    print("| " + " | ".join(h.ljust(w) for h, w in zip(headers, widths)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for r in cells:
        print("| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |")


def save_curves(path, curves, xlabel="step", ylabel="loss", title=None, logy=False):
    """Plot {label: list of y} (or {label: (xs, ys)}) to `path` with the Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for label, ys in curves.items():
        if isinstance(ys, tuple):
            ax.plot(*ys, label=label)
        else:
            ax.plot(range(len(ys)), ys, label=label)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if logy:
        ax.set_yscale("log")
    if title:
        ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    print(f"saved plot: {path}")


class Timer:
    """Collects step times; `median` in milliseconds."""

    def __init__(self):
        self.times = []

    def __enter__(self):
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.times.append(time.perf_counter() - self.t0)

    @property
    def median_ms(self):
        ts = sorted(self.times[1:] or self.times)  # the first step includes tracing
        return 1e3 * ts[len(ts) // 2] if ts else float("nan")


def add_common_args(ap, seed=0):
    """The options every example has: --seed, --out (plot directory), --quick, --quiet."""
    ap.add_argument("--seed", type=int, default=seed)
    ap.add_argument("--out", default="outputs", help="directory for the plot")
    ap.add_argument("--quick", action="store_true", help="tiny settings (seconds; for tests)")
    ap.add_argument("--quiet", action="store_true", help="no progress bars")
