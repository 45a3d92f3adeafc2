"""Convert the UCI 8x8 digits (the test set of "Optical Recognition of Handwritten Digits",
E. Alpaydin and C. Kaynak, 1998, UCI Machine Learning Repository, CC BY 4.0,
https://doi.org/10.24432/C50P49) into examples/data/digits.npz.

    python examples/data/make_digits.py PATH/TO/digits.csv.gz     # 1797 rows of 64 pixels, label

Any copy of that CSV serves (scikit-learn ships one as sklearn/datasets/data/digits.csv.gz);
the examples and notebooks read the .npz with `examples/_util.load_digits`, so they need no
scikit-learn (and no SciPy).
"""

from __future__ import annotations

import gzip
import os
import sys

import numpy as np


def main(csv_gz):
    with gzip.open(csv_gz, "rt") as f:
        rows = np.loadtxt(f, delimiter=",", dtype=np.int64)
    assert rows.shape == (1797, 65), rows.shape
    images, labels = rows[:, :64], rows[:, 64]
    assert images.min() >= 0 and images.max() <= 16 and set(labels.tolist()) == set(range(10))
    out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "digits.npz")
    np.savez_compressed(out, images=images.astype(np.uint8), labels=labels.astype(np.uint8))
    print(f"wrote {out}: {len(labels)} images")


if __name__ == "__main__":
    main(sys.argv[1])
