"""Small helpers the examples share: a progress bar, a result table, a saved plot.

Not part of funcgrad: plain tqdm / matplotlib / print, kept here so each example reads as the
model-building and training code only.
"""

from __future__ import annotations

import math
import os
import time


def progress(iterable, desc, quiet=False, total=None):
    """A tqdm bar. Show the loss with `bar.set_postfix(loss=..., refresh=False)`: the bar then
    redraws at its own pace (twice a second) instead of on every update."""
    from tqdm.auto import tqdm

    return tqdm(iterable, desc=desc, total=total, disable=quiet, leave=False,
                dynamic_ncols=True, mininterval=0.5)


def _column_format(values):
    """One format for a column: fixed decimals chosen from its largest magnitude (four
    significant digits there); scientific notation, with three, when the column is below 1e-3
    or spans more than four decades (convergence gaps)."""
    nums = [abs(v) for v in values if isinstance(v, float) and math.isfinite(v)]
    if not nums:
        return "{}"
    top, low = max(nums), min([v for v in nums if v > 0], default=0.0)
    if 0 < top < 1e-3 or (low > 0 and top / low >= 1e4):
        return "{:.2e}"
    decimals = 3 - int(math.floor(math.log10(top))) if top > 0 else 4
    return "{:.%df}" % min(max(decimals, 1), 6)


def print_table(rows, headers, title=None):
    """A Markdown table of `rows` (lists of values). Each float column has one fixed number of
    decimals (numbers right-aligned), so values line up and compare at a glance."""
    columns = list(zip(*rows)) if rows else [[] for _ in headers]
    formats = [_column_format(col) for col in columns]
    numeric = [all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in col)
               for col in columns]

    def fmt(v, f):
        return f.format(v) if isinstance(v, float) else str(v)

    cells = [[fmt(v, f) for v, f in zip(row, formats)] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h)
              for i, h in enumerate(headers)]
    if title:
        print(f"\n{title}")
    print("| " + " | ".join(h.ljust(w) for h, w in zip(headers, widths)) + " |")
    print("|" + "|".join("-" * (w + 1) + (":" if num else "-")
                         for w, num in zip(widths, numeric)) + "|")
    for r in cells:
        print("| " + " | ".join(c.rjust(w) if num else c.ljust(w)
                                for c, w, num in zip(r, widths, numeric)) + " |")


def load_digits(images=False):
    """The 1797 UCI 8x8 digits (examples/data/digits.npz), pixels scaled to [0, 1], shuffled
    with a fixed seed and split 75/25: (x_train, y_train, x_test, y_test). x is (n, 64), or
    (n, 8, 8, 1) with `images=True`."""
    import numpy as np

    with np.load(os.path.join(os.path.dirname(os.path.abspath(__file__)), "data",
                              "digits.npz"), allow_pickle=False) as z:
        x, y = z["images"].astype(np.float32) / 16.0, z["labels"].astype(np.int32)
    if images:
        x = x.reshape(-1, 8, 8, 1)
    order = np.random.default_rng(0).permutation(len(x))
    x, y = x[order], y[order]
    n = len(x) * 3 // 4
    return x[:n], y[:n], x[n:], y[n:]


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
