"""conv_general_dilated, composed from primitives (pad, strided slices, concatenate, dot_general).

Not a primitive: the convolution is written as im2col (one strided slice of the padded input
per kernel offset, stacked, then one dot_general against the flattened kernel), so grad, jvp,
vmap and jit come from the rules of those primitives with nothing to write here. Feature groups
become a batch dimension of the dot_general.
"""

from __future__ import annotations

import itertools
import math

import numpy as np

from .products import dot_general
from .structural import concatenate, pad, reshape, rev, slice, transpose

__all__ = ["conv_general_dilated", "conv_dimension_numbers", "padtype_to_pads", "conv_transpose"]


def conv_dimension_numbers(ndim_spatial, dimension_numbers):
    """Permutations (lhs, rhs, out) that bring the operands to (N, *spatial, C), (*spatial, I, O)
    and the output from (N, *spatial, C), from layout strings such as ("NHWC", "HWIO", "NHWC").
    None means JAX's default: ("NC" + spatial, "OI" + spatial, "NC" + spatial)."""
    if dimension_numbers is None:
        sp = "HWDXYZUV"[:ndim_spatial]
        dimension_numbers = ("NC" + sp, "OI" + sp, "NC" + sp)
    lhs_spec, rhs_spec, out_spec = dimension_numbers
    n = ndim_spatial + 2
    for spec, need in ((lhs_spec, "NC"), (rhs_spec, "OI"), (out_spec, "NC")):
        if not isinstance(spec, str) or len(spec) != n or len(set(spec)) != n \
                or any(c not in spec for c in need):
            raise ValueError(f"conv_general_dilated: dimension spec {spec!r} must be a string "
                             f"of {n} distinct letters containing {need[0]!r} and {need[1]!r}")
    spatial = [c for c in rhs_spec if c not in "OI"]
    for spec in (lhs_spec, out_spec):
        if sorted(c for c in spec if c not in "NC") != sorted(spatial):
            raise ValueError(f"conv_general_dilated: spatial letters of {dimension_numbers} "
                             "do not match")
    lhs_perm = (lhs_spec.index("N"),) + tuple(lhs_spec.index(c) for c in spatial) \
        + (lhs_spec.index("C"),)
    rhs_perm = tuple(rhs_spec.index(c) for c in spatial) + (rhs_spec.index("I"),
                                                             rhs_spec.index("O"))
    canonical_out = "N" + "".join(spatial) + "C"
    out_perm = tuple(canonical_out.index(c) for c in out_spec)
    return lhs_perm, rhs_perm, out_perm


def padtype_to_pads(in_shape, window_shape, strides, padding):
    """Explicit (low, high) pads for "VALID", "SAME" (extra on the high side, as XLA) and
    "SAME_LOWER" (extra on the low side), or the given pairs, checked."""
    if isinstance(padding, str):
        mode = padding.upper()
        if mode == "VALID":
            return [(0, 0)] * len(in_shape)
        if mode not in ("SAME", "SAME_LOWER"):
            raise ValueError(f"padding must be 'SAME', 'SAME_LOWER', 'VALID' or (low, high) "
                             f"pairs, got {padding!r}")
        pads = []
        for size, k, s in zip(in_shape, window_shape, strides):
            out = -(-size // s)
            total = max((out - 1) * s + k - size, 0)
            small, big = total // 2, total - total // 2
            pads.append((small, big) if mode == "SAME" else (big, small))
        return pads
    pads = [tuple(int(v) for v in p) for p in padding]
    if len(pads) != len(in_shape) or any(len(p) != 2 for p in pads):
        raise ValueError(f"padding needs one (low, high) pair per spatial dimension "
                         f"({len(in_shape)}), got {padding!r}")
    return pads


def _tuple(value, n, name):
    if value is None:
        return (1,) * n
    if isinstance(value, int):
        value = (value,) * n
    value = tuple(int(v) for v in value)
    if len(value) != n or any(v < 1 for v in value):
        raise ValueError(f"conv_general_dilated: {name} must be {n} positive integers, "
                         f"got {value}")
    return value


def conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation=None,
                         rhs_dilation=None, dimension_numbers=None,
                         feature_group_count=1, batch_group_count=1, precision=None,
                         preferred_element_type=None):
    """General N-d convolution (cross-correlation, as XLA): strides, explicit or SAME/VALID
    padding, input (transposed-conv) and kernel (atrous) dilation, feature groups.

    Layouts are strings like ("NHWC", "HWIO", "NHWC") (what funcgrad.models uses); the default,
    None, is JAX's ("NCHW", "OIHW", "NCHW") for 2-d, so code written for JAX moves over as is.
    With G = feature_group_count the input has C = G * I channels, the kernel I input and
    O = G * O' output features, and output feature o sees input group o // O'. `precision` is
    accepted for JAX compatibility and ignored.
    """
    del precision
    if batch_group_count != 1:
        raise NotImplementedError("conv_general_dilated: batch_group_count > 1")
    if lhs.ndim != rhs.ndim or lhs.ndim < 3:
        raise ValueError(f"conv_general_dilated: lhs and rhs need the same rank >= 3, got "
                         f"shapes {tuple(lhs.shape)} and {tuple(rhs.shape)}")
    nsp = lhs.ndim - 2
    lhs_perm, rhs_perm, out_perm = conv_dimension_numbers(nsp, dimension_numbers)
    strides = _tuple(window_strides, nsp, "window_strides")
    lhs_dil = _tuple(lhs_dilation, nsp, "lhs_dilation")
    rhs_dil = _tuple(rhs_dilation, nsp, "rhs_dilation")

    x = transpose(lhs, lhs_perm) if lhs_perm != tuple(range(lhs.ndim)) else lhs
    w = transpose(rhs, rhs_perm) if rhs_perm != tuple(range(rhs.ndim)) else rhs
    n, *in_sp, c = x.shape
    *k_sp, ci, co = w.shape
    groups = int(feature_group_count)
    if groups < 1 or c % groups or c // groups != ci or co % groups:
        raise ValueError(
            f"conv_general_dilated: input features {c} must equal feature_group_count "
            f"({groups}) x kernel input features ({ci}), and output features {co} must be "
            f"divisible by feature_group_count")

    # Pad (and interior-pad for lhs_dilation) in one go; negative pads crop.
    dilated_in = [(s - 1) * d + 1 if s else 0 for s, d in zip(in_sp, lhs_dil)]
    eff_k = [(k - 1) * d + 1 for k, d in zip(k_sp, rhs_dil)]
    pads = padtype_to_pads(dilated_in, eff_k, strides, padding)
    config = [(0, 0, 0)] + [(lo, hi, d - 1) for (lo, hi), d in zip(pads, lhs_dil)] + [(0, 0, 0)]
    if any(v != 0 for cfg in config for v in cfg):
        x = pad(x, np.array(0, x.dtype), config)
    padded = x.shape[1:-1]
    out_sp = [(p - e) // s + 1 for p, e, s in zip(padded, eff_k, strides)]
    if any(o <= 0 for o in out_sp):
        raise ValueError(f"conv_general_dilated: the (dilated) kernel {tuple(eff_k)} is larger "
                         f"than the padded input {tuple(padded)}")

    # im2col: patches[n, *out, k, c] = x[n, *(out * stride + k * rhs_dilation), c]
    cols = []
    for offs in itertools.product(*(range(k) for k in k_sp)):
        start = [0] + [o * d for o, d in zip(offs, rhs_dil)] + [0]
        limit = [n] + [st + (o - 1) * s + 1 for st, o, s in zip(start[1:], out_sp, strides)] \
            + [c]
        cols.append(slice(x, start, limit, [1, *strides, 1]))
    kk = math.prod(k_sp)
    patches = cols[0] if kk == 1 else concatenate(cols, nsp + 1)  # (N, *out, K * C)
    if groups == 1:
        # one matmul against w as (K * I, O) (kernel offset major in both)
        out = dot_general(patches, reshape(w, (kk * ci, co)), (((nsp + 1,), (0,)), ((), ())),
                          preferred_element_type=preferred_element_type)
    else:
        # patches (N, *out, K, G, I) against w as (K, I, G, O'), batched over the groups G.
        k_axis = nsp + 1
        patches = reshape(patches, (n, *out_sp, kk, groups, ci))
        wf = reshape(w, (kk, ci, groups, co // groups))
        out = dot_general(patches, wf, (((k_axis, k_axis + 2), (0, 1)), ((k_axis + 1,), (2,))),
                          preferred_element_type=preferred_element_type)
        # (G, N, *out, O') -> (N, *out, G, O') -> (N, *out, O)
        out = transpose(out, tuple(range(1, nsp + 2)) + (0, nsp + 2))
        out = reshape(out, (n, *out_sp, co))
    if out_perm != tuple(range(out.ndim)):
        out = transpose(out, out_perm)
    return out


# ---------------------------------------------------------------------------------------------
# conv_transpose

def _conv_transpose_padding(k, s, padding):
    """(low, high) padding of the dilated-input convolution that transposes a forward conv with
    kernel size k, stride s and the given padding (JAX's rule)."""
    if padding == "SAME":
        pad_len = k + s - 2
        pad_a = k - 1 if s > k - 1 else int(np.ceil(pad_len / 2))
    elif padding == "VALID":
        pad_len = k + s - 2 + max(k - s, 0)
        pad_a = k - 1
    elif isinstance(padding, tuple):
        pads = tuple(k - p - 1 for p in padding)
        pad_a, pad_len = pads[0], sum(pads)
    else:
        raise ValueError(f"Invalid padding mode: {padding}")
    return pad_a, pad_len - pad_a


def conv_transpose(lhs, rhs, strides, padding, rhs_dilation=None, dimension_numbers=None,
                   transpose_kernel=False, precision=None, preferred_element_type=None,
                   use_consistent_padding=False):
    """Transposed (fractionally strided) convolution, as jax.lax.conv_transpose: a
    conv_general_dilated with lhs_dilation = strides and the padding JAX computes for
    "SAME"/"VALID" (explicit pairs are used as they are unless use_consistent_padding, which
    reads them as the forward conv's padding). Layouts default to TensorFlow's ("NHWC",
    "HWIO", "NHWC" for 2-d); transpose_kernel flips the kernel's spatial axes and swaps its
    I and O axes (Keras' Conv2DTranspose)."""
    ndims = lhs.ndim
    if ndims != rhs.ndim or ndims < 3:
        raise ValueError(f"conv_transpose: lhs and rhs need the same rank >= 3, got shapes "
                         f"{tuple(lhs.shape)} and {tuple(rhs.shape)}")
    if dimension_numbers is None:
        defaults = {3: ("NHC", "HIO", "NHC"), 4: ("NHWC", "HWIO", "NHWC"),
                    5: ("NHWDC", "HWDIO", "NHWDC")}
        if ndims not in defaults:
            raise ValueError("conv_transpose: no default dimension_numbers for rank "
                             f"{ndims}; pass them")
        dimension_numbers = defaults[ndims]
    rhs_spec = dimension_numbers[1]
    if not isinstance(rhs_spec, str):
        raise NotImplementedError("conv_transpose: dimension_numbers must be layout strings "
                                  "such as ('NHWC', 'HWIO', 'NHWC')")
    spatial = [i for i, c in enumerate(rhs_spec) if c not in "OI"]
    nsp = len(spatial)
    strides = tuple(int(s) for s in strides)
    rhs_dilation = (1,) * nsp if rhs_dilation is None else tuple(int(d) for d in rhs_dilation)
    if use_consistent_padding or (isinstance(padding, str) and padding in ("SAME", "VALID")):
        eff = [(rhs.shape[i] - 1) * d + 1 for i, d in zip(spatial, rhs_dilation)]
        per_dim = [padding] * nsp if isinstance(padding, str) else [tuple(p) for p in padding]
        pads = [_conv_transpose_padding(k, s, p) for k, s, p in zip(eff, strides, per_dim)]
    else:
        pads = padding
    if transpose_kernel:
        rhs = rev(rhs, tuple(spatial))
        o, i = rhs_spec.index("O"), rhs_spec.index("I")
        perm = list(range(ndims))
        perm[o], perm[i] = i, o
        rhs = transpose(rhs, tuple(perm))
    return conv_general_dilated(lhs, rhs, (1,) * nsp, pads, lhs_dilation=strides,
                                rhs_dilation=rhs_dilation, dimension_numbers=dimension_numbers,
                                precision=precision,
                                preferred_element_type=preferred_element_type)
