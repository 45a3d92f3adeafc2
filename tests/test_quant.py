"""funcgrad.quant: int8 and NF4 weights (against bitsandbytes where it is installed), the tiled
quantized matmul under every transform, its memory, and QLoRA on a pretrained model."""

from __future__ import annotations

import tracemalloc

import ml_dtypes
import numpy as np
import pytest

import funcgrad as fg
import funcgrad.numpy as fnp
from funcgrad import io, lora, masks, optim, quant
from funcgrad.lax import products
from funcgrad.tree_util import tree_leaves

# host reference values and bfloat16 (no CuPy dtype); the primitives are written against xp
pytestmark = pytest.mark.cpu_only


BF16 = np.dtype(ml_dtypes.bfloat16)


def _w(shape, seed=0, scale=0.05):
    return (np.random.default_rng(seed).standard_normal(shape) * scale).astype(np.float32)


# ---------------------------------------------------------------------------------------------
# The data types

def test_nf4_code_and_dynamic_map():
    assert quant.NF4_CODE.shape == (16,) and quant.NF4_CODE[7] == 0
    assert quant.NF4_CODE[0] == -1 and quant.NF4_CODE[-1] == 1
    assert np.all(np.diff(quant.NF4_CODE) > 0)
    code = quant.DYNAMIC_CODE
    assert code.shape == (256,) and np.all(np.diff(code) > 0)
    assert code[0] == -code[-2] and code[-1] == 1 and 0 in code
    assert np.isclose(np.min(np.abs(code[code != 0])), 0.55e-6, rtol=1e-6)  # 10^-6 x 0.55


def test_nf4_layout_and_size():
    w = _w((96, 130))
    q = quant.quantize_nf4(w)
    n = w.size + (-w.size) % 64
    assert q.packed.dtype == np.uint8 and q.packed.shape == (n // 2,)
    assert q.absmax.dtype == np.uint8 and q.absmax.shape == (n // 64,)
    assert q.absmax_scale.shape == (1,) and q.shape == (96, 130) and q.double_quant
    flat = w.ravel()
    first = int(np.argmin(np.abs(flat[0] / np.abs(flat[:64]).max() - quant.NF4_CODE)))
    assert q.packed[0] >> 4 == first                 # the first element in the high nibble
    assert quant.nbytes(q) * 8 / w.size < 4.2       # ~4.13 bits per weight
    plain = quant.quantize_nf4(w, double_quant=False)
    assert plain.absmax.dtype == np.float32 and not plain.double_quant


def test_nf4_error_is_within_half_a_code_gap():
    w = _w((64, 256), seed=1)
    d = quant.dequantize(quant.quantize_nf4(w, double_quant=False))
    blocks = np.abs(w.reshape(-1, 64)).max(1, keepdims=True)
    gap = np.max(np.diff(quant.NF4_CODE)) / 2
    assert np.all(np.abs(d - w).reshape(-1, 64) <= gap * blocks + 1e-7)
    dq = quant.dequantize(quant.quantize_nf4(w))    # double quantization adds a little
    assert np.abs(dq - w).max() < 1.05 * np.abs(d - w).max() + 1e-4


@pytest.mark.parametrize("axis", [0, 1])
def test_int8_per_channel(axis):
    w = _w((40, 24), seed=2) * np.linspace(0.1, 3, 24 if axis else 40).reshape(
        (1, -1) if axis else (-1, 1))
    q = quant.quantize_int8(w, axis=axis)
    assert q.q.dtype == np.int8 and q.scale.shape == (w.shape[axis],)
    scale = np.abs(w).max(axis=1 - axis) / 127
    np.testing.assert_allclose(q.scale, scale, rtol=1e-6)
    d = quant.dequantize(q)
    err = np.abs(d - w) / (scale[None, :] if axis else scale[:, None])
    assert err.max() <= 0.5 + 1e-4


def test_matches_bitsandbytes():
    torch = pytest.importorskip("torch")
    F = pytest.importorskip("bitsandbytes.functional")
    w = _w((96, 128), seed=3)
    packed, state = F.quantize_4bit(torch.tensor(w), blocksize=64, compress_statistics=True,
                                    quant_type="nf4")
    q = quant.quantize_nf4(w)
    np.testing.assert_array_equal(packed.numpy().ravel(), q.packed)        # the 4-bit codes
    np.testing.assert_allclose(state.state2.code.numpy(), quant.DYNAMIC_CODE, rtol=1e-6,
                               atol=1e-7)
    same = np.mean(state.absmax.numpy() == q.absmax)   # 8-bit absmax codes: equal but for
    assert same >= 0.98                                # near-ties (we take the nearest code)
    np.testing.assert_allclose(float(state.offset), float(q.absmax_offset), rtol=1e-6)
    ref = F.dequantize_4bit(packed, state).numpy()
    assert np.abs(ref - quant.dequantize(q)).max() <= 0.02 * np.abs(w).max()


# ---------------------------------------------------------------------------------------------
# linear: every layout and transform

@pytest.mark.parametrize("scheme", ["nf4", "int8"])
@pytest.mark.parametrize("layout", ["in_out", "out_in"])
def test_linear_matches_the_dequantized_matmul(scheme, layout, monkeypatch):
    monkeypatch.setattr(fg.lax.quantized, "TILE_ELEMENTS", 640)   # many tiles, ragged last one
    w = _w((48, 70), seed=4)
    q = quant.quantize_nf4(w) if scheme == "nf4" else quant.quantize_int8(w, axis=1)
    d = quant.dequantize(q)
    x = _w((3, 5, 48 if layout == "in_out" else 70), seed=5, scale=1.0)
    ref = x @ (d if layout == "in_out" else d.T)
    b = _w((ref.shape[-1],), seed=6)
    y = quant.linear(x, q, b, layout=layout)
    np.testing.assert_allclose(y, ref + b, rtol=1e-5, atol=1e-5)

    def f(x):
        return fnp.sum(fnp.tanh(quant.linear(x, q, layout=layout)))

    g = fg.grad(f)(x)
    gref = (1 - np.tanh(ref) ** 2) @ (d.T if layout == "in_out" else d)
    np.testing.assert_allclose(g, gref, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(fg.jit(fg.grad(f))(x), g, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(fg.grad(fg.jit(f))(x), g, rtol=1e-6, atol=1e-7)
    per = fg.vmap(fg.grad(f))(x)
    np.testing.assert_allclose(per, g, rtol=1e-5, atol=1e-6)
    u = _w(x.shape, seed=7, scale=1.0)
    _, t = fg.jvp(f, (x,), (u,))
    np.testing.assert_allclose(t, np.sum(g * u), rtol=1e-4)
    h = fg.hessian(lambda v: f(x[:1, :1] + v))(np.zeros_like(x[:1, :1]))
    assert np.all(np.isfinite(h))


def test_linear_keeps_the_input_dtype_and_the_weight_frozen():
    q = quant.quantize_nf4(_w((32, 64)))
    x = _w((4, 64), scale=1.0).astype(BF16)
    assert quant.linear(x, q).dtype == BF16
    params = {"w": q, "b": np.zeros(32, np.float32)}
    g = fg.grad(lambda p: fnp.sum(quant.linear(x.astype(np.float32), p["w"], p["b"])),
                wrt={"w": False, "b": True})(params)   # (grad refuses W's integer arrays)
    assert np.all(g["b"] == 4)
    _, vjp = fg.vjp(lambda s: fnp.sum(quant.linear(
        x.astype(np.float32), quant.NF4Array(q.packed, q.absmax, s, q.absmax_offset, q.shape,
                                             q.dtype, q.block_size))), q.absmax_scale)
    assert not np.any(vjp(np.float32(1))[0])   # no gradient reaches the weight's scales
    with pytest.raises(TypeError, match="does not fit"):
        quant.linear(np.ones((2, 5), np.float32), q)


def test_take_gathers_rows():
    table = _w((50, 128), seed=8)
    for q in (quant.quantize_nf4(table), quant.quantize_int8(table, axis=0),
              quant.quantize_nf4(_w((50, 96), seed=9))):   # 96: rows straddle the blocks
        ids = np.array([[0, 7, 49], [3, 3, 12]])
        np.testing.assert_allclose(quant.take(q, ids), quant.dequantize(q)[ids], rtol=1e-6)
        np.testing.assert_allclose(fg.jit(lambda i, q=q: quant.take(q, i))(ids),
                                   quant.dequantize(q)[ids], rtol=1e-6)


def test_vmap_over_ids_and_inputs_with_a_shared_weight():
    table = _w((40, 128), seed=10)
    ids = np.array([[1, 2, 3], [4, 5, 39]])
    x = _w((3, 128), seed=11, scale=1.0)
    for q in (quant.quantize_nf4(table), quant.quantize_int8(table, axis=0)):
        d = quant.dequantize(q)
        np.testing.assert_allclose(fg.vmap(lambda i, q=q: quant.take(q, i))(ids), d[ids])
        np.testing.assert_allclose(fg.vmap(lambda i, q=q: quant.take(q, i), in_axes=1)(ids),
                                   np.moveaxis(d[ids], 1, 0))
        y = fg.jit(fg.vmap(lambda v, q=q: v @ quant.dequantize(q).T))(x)
        np.testing.assert_allclose(y, x @ d.T, rtol=1e-5, atol=1e-5)
    q = quant.quantize_int8(table, axis=0)
    with pytest.raises(NotImplementedError, match="map over the inputs only"):
        fg.vmap(lambda s: quant.take(quant.Int8Array(q.q, s, q.axis, q.dtype),
                                     ids))(np.stack([q.scale, q.scale]))


class _OtherNamespace:
    """NumPy's functions under a namespace that is not `numpy` itself: the primitives take their
    array-standard path (the one CuPy runs) instead of NumPy's one-gather NF4 decoding."""

    def __getattr__(self, name):
        return getattr(np, name)


@pytest.mark.parametrize("cols", [128, 96])   # 96: rows straddle NF4's blocks
def test_the_array_standard_path_matches_numpys(cols, monkeypatch):
    monkeypatch.setattr(fg.lax.quantized, "TILE_ELEMENTS", 640)
    lq = fg.lax.quantized
    w = _w((40, cols), seed=12)
    x = _w((3, cols), seed=13, scale=1.0)
    ids = np.array([[0, 9], [39, 9]])
    for q in (quant.quantize_nf4(w), quant.quantize_int8(w, axis=0),
              quant.quantize_int8(w, axis=1)):
        kind, arrays, meta = quant._arrays(q)
        for xp in (np, _OtherNamespace()):
            d = lq._dequantize_impl(kind)(xp, *arrays, dtype=np.dtype(np.float32), **meta)
            y = lq._matmul_impl(kind)(xp, x, *arrays, layout="out_in", **meta)
            t = lq._take_impl(kind)(xp, ids, *arrays, dtype=np.dtype(np.float32), **meta)
            if xp is np:
                want = d, y, t
            else:
                np.testing.assert_array_equal(d, want[0])
                np.testing.assert_allclose(y, want[1], rtol=1e-6, atol=1e-6)
                np.testing.assert_array_equal(t, want[2])
        np.testing.assert_allclose(want[0], quant.dequantize(q))


# ---------------------------------------------------------------------------------------------
# Memory: a tile at a time, never a float copy of the whole layer

def _peak_bytes(fn):
    fn()  # warm up (jit tracing and compiling)
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("scheme", ["nf4", "int8", "bf16"])
def test_no_float_copy_of_the_layer(scheme):
    """A 1536 x 1536 layer is 9.4 MB in float32: the forward and backward of a jitted step on
    a [8, 1536] input peak well below that (tiles of 1 MiB)."""
    w = _w((1536, 1536), seed=10)
    weight = {"nf4": lambda: quant.quantize_nf4(w), "int8": lambda: quant.quantize_int8(w),
              "bf16": lambda: w.astype(BF16)}[scheme]()
    x = _w((8, 1536), seed=11, scale=1.0)
    step = fg.jit(fg.value_and_grad(
        lambda x: fnp.sum(quant.linear(quant.linear(x, weight), weight) ** 2)))
    peak = _peak_bytes(lambda: step(x))
    assert peak < 0.5 * w.nbytes, (scheme, peak)
    assert products.DOT_TILE_ELEMENTS * 4 < 0.5 * w.nbytes


# ---------------------------------------------------------------------------------------------
# Trees, checkpoints, LoRA on a quantized base

def test_quantize_a_tree_and_back(tmp_path):
    params = {"emb": _w((64, 32)), "blk": {"w": _w((32, 64)), "b": np.zeros(64, np.float32)}}
    q = quant.quantize(params, "nf4")
    assert quant.is_quantized(q["emb"]) and quant.is_quantized(q["blk"]["w"])
    assert not quant.is_quantized(q["blk"]["b"])
    only = quant.quantize(params, "int8", mask={"emb": False, "blk": True},
                          axis=lambda path, x: 1)
    assert not quant.is_quantized(only["emb"]) and only["blk"]["w"].axis == 1
    io.save(tmp_path / "q.safetensors", q)
    back = io.load(tmp_path / "q.safetensors")
    np.testing.assert_array_equal(quant.dequantize(back["blk"]["w"]),
                                  quant.dequantize(q["blk"]["w"]))
    assert repr(back["emb"]).startswith("NF4Array(shape=(64, 32)")
    floats = quant.dequantize_tree(q)
    assert all(type(x) is np.ndarray for x in tree_leaves(floats))
    with pytest.raises(ValueError, match="scheme"):
        quant.quantize(params, "int4")


def test_qlora_on_a_pretrained_model(tmp_path):
    """pretrained.load(quantize="nf4"), float32 LoRA adapters trained with masks and
    MultiSteps, then lora.merge and save: a float checkpoint that transformers reads."""
    from funcgrad.models import gpt2, pretrained
    cfg = gpt2.default_config(n_layer=2, n_embd=64, n_head=4, vocab_size=128, n_positions=32)
    ref = pretrained.from_config(cfg, fg.random.key(0))
    pretrained.save(tmp_path / "base", ref, ref.params)
    trims = []
    with pytest.MonkeyPatch.context() as mp:   # the float32 tensors read go back to the OS
        mp.setattr(pretrained, "trim_host_memory", lambda: trims.append(1))
        model = pretrained.load(tmp_path / "base", quantize="nf4")
    assert trims == [1]
    fg.config.trim_host_memory()   # (glibc's malloc_trim; harmless anywhere)
    blocks = model.params["transformer"]["h"]
    assert quant.is_quantized(blocks[0]["attn"]["c_attn"]["weight"])
    assert not quant.is_quantized(model.params["transformer"]["wte"]["weight"])
    ids = np.random.default_rng(0).integers(0, 128, (4, 16))
    full = ref.apply(ref.params, ids)
    np.testing.assert_allclose(model.apply(model.params, ids), full, atol=0.1 * np.abs(
        full).max())

    mask = masks.mask_from_paths(ref.params, include=["transformer/h/*/attn/c_attn/weight",
                                                      "transformer/h/*/mlp/c_fc/weight"])
    adapters = lora.init(0, model.params, mask, rank=4)
    assert all(x.dtype == np.float32 for x in tree_leaves(adapters))
    only_first = masks.mask_from_paths(adapters, include=["transformer/h/0/**"])
    tx = optim.MultiSteps(optim.masked(optim.adam(1e-2), only_first), 2)
    state = tx.init(adapters)

    def loss(ad):
        logits = lora.apply(model.apply)(model.params, ad, ids[:, :-1])
        logp = fg.nn.log_softmax(logits)
        return -fnp.mean(fnp.take_along_axis(logp, ids[:, 1:, None], axis=-1))

    step = fg.jit(fg.value_and_grad(loss))
    first = None
    for _ in range(8):
        value, g = step(adapters)
        first = first if first is not None else float(value)
        u, state = tx.update(g, state, adapters)
        adapters = optim.apply_updates(adapters, u)
    assert float(value) < first
    assert not np.any(adapters["transformer"]["h"][1]["attn"]["c_attn"]["weight"].b)
    merged = lora.merge(model.params, adapters)
    assert not any(quant.is_quantized(x) for x in tree_leaves(merged, is_leaf=quant.is_quantized))
    pretrained.save(tmp_path / "merged", model, merged)
    transformers = pytest.importorskip("transformers")
    torch = pytest.importorskip("torch")
    back = transformers.GPT2LMHeadModel.from_pretrained(tmp_path / "merged").eval()
    with torch.no_grad():
        theirs = back(torch.tensor(ids[:, :-1])).logits.numpy()
    np.testing.assert_allclose(theirs, lora.apply(model.apply)(model.params, adapters,
                                                               ids[:, :-1]),
                               atol=2e-3 * np.abs(theirs).max())
