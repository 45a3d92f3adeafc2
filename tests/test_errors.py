"""A catalogue of misuse: each case asserts the exception type and the key words of its message.

Messages should say what happened, where in the user's code, and what to do. Cases that fail
while tracing or running a primitive also name the primitive, its input types, and the
transforms it was inside ("inside jit(f) > vmap").
"""

import json
import os
import re
from typing import NamedTuple

import numpy as np
import pytest
from numeric import gpu_unavailable

import funcgrad as fg
import funcgrad.numpy as fnp
from funcgrad import lax, lora, optim
from funcgrad import masks as fmasks

HERE = os.path.basename(__file__)
f32 = np.float32
x3 = np.ones(3, f32)
x4 = np.ones(4, f32)


def _raise(exc):
    raise exc


def _corrupt_checkpoint(tmp_path):
    path = os.path.join(tmp_path, "ck.safetensors")
    fg.io.save(path, {"w": np.arange(64, dtype=f32)})
    data = bytearray(open(path, "rb").read())
    data[-8:] = b"\xff" * 8  # flip the last tensor bytes
    open(path, "wb").write(bytes(data))
    return path


def _truncated_checkpoint(tmp_path):
    path = os.path.join(tmp_path, "ck.safetensors")
    fg.io.save(path, {"w": np.arange(64, dtype=f32)})
    data = open(path, "rb").read()
    open(path, "wb").write(data[: len(data) // 3])
    return path


def _leak():
    box = []
    fg.jit(lambda x: box.append(x * 2) or x)(x3)
    return box[0] + 1


def _leak_grad():
    box = []
    fg.grad(lambda x: box.append(x) or x.sum())(x3)
    return fnp.sin(box[0]) + fnp.zeros(3)


# (id, thunk, exception type, words that must all appear in the message)
CASES = [
    # -- shapes and dtypes ------------------------------------------------------------------
    ("broadcast-eager", lambda: fnp.add(x3, x4), ValueError, ["broadcast", "(3,)", "(4,)", HERE]),
    ("broadcast-jit", lambda: fg.jit(lambda a, b: a + b)(x3, x4), ValueError,
     ["broadcast", HERE]),
    ("lax-add-shapes-jit", lambda: fg.jit(lax.add)(x3, x4), TypeError,
     ["add", "f32[3]", "f32[4]", "inside jit"]),
    ("lax-add-shapes-vmap", lambda: fg.vmap(lambda a: lax.add(a, x4))(np.ones((2, 3), f32)),
     ValueError, ["in add", "f32[2,3]", "f32[4]", "inside vmap"]),
    ("lax-add-shapes-jit-vmap",
     lambda: fg.jit(fg.vmap(lambda a: lax.add(a, x4)))(np.ones((2, 3), f32)), TypeError,
     ["add", "inside jit", "> vmap", HERE]),
    ("lax-add-dtypes", lambda: fg.jit(lax.add)(x3, np.ones(3, np.int32)), TypeError,
     ["same dtype", "f32[3]", "i32[3]", "convert_element_type"]),
    ("matmul-mismatch", lambda: fnp.matmul(np.ones((2, 3), f32), np.ones((4, 5), f32)),
     ValueError, ["matmul", "(2, 3)", "(4, 5)"]),
    ("reshape-size", lambda: fnp.reshape(x3, (2, 2)), ValueError, ["reshape", "(3,)", "(2, 2)"]),
    ("reshape-size-jit", lambda: fg.jit(lambda a: a.reshape(2, 2))(x3), ValueError,
     ["reshape", HERE]),
    ("index-out-of-bounds", lambda: fg.jit(lambda a: a[5])(x3), IndexError,
     ["out of bounds", "size 3"]),
    ("setitem-on-tracer", lambda: fg.jit(lambda a: a.__setitem__(0, 1.0))(x3), TypeError,
     ["immutable", ".at[idx].set"]),
    ("float-op-on-int", lambda: fg.jit(lax.sin)(np.arange(3)), TypeError,
     ["sin", "floating", "i64[3]"]),
    ("concatenate-ranks", lambda: fnp.concatenate([x3, np.ones((2, 2), f32)]), (ValueError,
                                                                                   TypeError),
     ["concatenate"]),
    # -- tracer leaks and concretization ----------------------------------------------------
    ("leak-jit", _leak, fg.LeakedTracerError, ["after that transform returned", "Return it"]),
    ("leak-grad", _leak_grad, fg.LeakedTracerError, ["grad", "escapes the function"]),
    ("bool-under-jit", lambda: fg.jit(lambda a: a if a.sum() > 0 else -a)(x3),
     fg.ConcretizationError, ["bool()", "inside jit", "fnp.where", "static_argnums", HERE]),
    ("bool-under-vmap", lambda: fg.vmap(lambda a: a if a > 0 else -a)(x3),
     fg.ConcretizationError, ["bool()", "vmap", "fg.lax.cond"]),
    ("int-under-jit", lambda: fg.jit(lambda a, n: a * int(n))(x3, 2), fg.ConcretizationError,
     ["int()", "static_argnames"]),
    ("asarray-under-jit", lambda: fg.jit(lambda a: np.asarray(a))(x3), fg.ConcretizationError,
     ["np.asarray()", "abstract"]),
    ("range-under-jit", lambda: fg.jit(lambda a, n: [a for _ in range(n)])(x3, 3),
     fg.ConcretizationError, ["index", "static"]),
    ("hash-tracer", lambda: fg.jit(lambda a: {a: 1})(x3), TypeError, ["unhashable", "static"]),
    # -- transform arguments ----------------------------------------------------------------
    ("grad-argnums-range", lambda: fg.grad(lambda a: a.sum(), argnums=3)(x3), ValueError,
     ["argnums=3", "does not exist", "1 positional", HERE]),
    ("grad-argnums-type", lambda: fg.grad(lambda a: a.sum(), argnums="a")(x3), TypeError,
     ["argnums must be an int"]),
    ("grad-argnums-empty", lambda: fg.grad(lambda a: a.sum(), argnums=())(x3), ValueError,
     ["argnums is empty"]),
    ("vmap-in-axes-length", lambda: fg.vmap(lambda a, b: a + b, in_axes=(0,))(x3, x3),
     ValueError, ["in_axes", "length 1", "2 positional"]),
    ("vmap-in-axes-range", lambda: fg.vmap(lambda a: a, in_axes=2)(x3), ValueError,
     ["in_axes 2", "out of range", "rank 1"]),
    ("vmap-in-axes-type", lambda: fg.vmap(lambda a: a, in_axes=(1.5,))(x3), TypeError,
     ["in_axes", "ints or None"]),
    ("vmap-sizes", lambda: fg.vmap(lambda a, b: a + b)(x3, x4), ValueError,
     ["inconsistent sizes", "size 3", "size 4"]),
    ("vmap-no-batched", lambda: fg.vmap(lambda a: a, in_axes=None)(x3), ValueError,
     ["axis_size"]),
    ("vmap-out-axes-range", lambda: fg.vmap(lambda a: a, out_axes=3)(np.ones((2, 3), f32)),
     ValueError, ["out_axes 3", "out of range"]),
    ("vmap-out-axes-none", lambda: fg.vmap(lambda a: a, out_axes=None)(x3), ValueError,
     ["out_axes=None", "depends on the batched"]),
    ("jit-static-range", lambda: fg.jit(lambda a: a, static_argnums=2)(x3), ValueError,
     ["static_argnums 2", "out of range"]),
    ("jit-static-array", lambda: fg.jit(lambda a, n: a * n, static_argnums=1)(x3, x3),
     TypeError, ["static", "is an array", "hashable"]),
    ("jit-static-unhashable", lambda: fg.jit(lambda a, n: a, static_argnums=1)(x3, [1, 2]),
     TypeError, ["not hashable", "tuple"]),
    ("jit-static-argnames-unknown", lambda: fg.jit(lambda a, n=1: a, static_argnames=["nope"]),
     ValueError, ["static_argnames ['nope']", "no parameter", "a, n", HERE]),
    ("fori-loop-float-bounds", lambda: lax.fori_loop(0.0, 3, lambda i, c: c + 1.0, 0.0),
     TypeError, ["fori_loop", "lower", "integer scalar", "f64[]", HERE, "int(n)"]),
    ("fori-loop-float-bounds-jit", lambda: fg.jit(lambda n: lax.fori_loop(
        0, n, lambda i, c: c + 1.0, 0.0))(3.0), TypeError, ["fori_loop", "upper", "f64[]"]),
    ("jit-bad-backend", lambda: fg.jit(lambda a: a, backend="tpu"), ValueError,
     ["Unknown backend", "'cpu' or 'gpu'"]),
    # -- differentiation ----------------------------------------------------------------------
    ("grad-nonscalar", lambda: fg.grad(lambda a: a * 2)(x3), TypeError,
     ["scalar", "f32[3]", "jacrev", HERE]),
    ("grad-tuple-output", lambda: fg.grad(lambda a: (a.sum(), a.sum()))(x3), TypeError,
     ["single scalar", "has_aux"]),
    ("grad-int-input", lambda: fg.grad(lambda a: (a * 1.0).sum())(np.arange(3)), TypeError,
     ["floating point", "int64", "astype"]),
    ("grad-int-output", lambda: fg.grad(lambda a: fnp.argmax(a))(x3), TypeError,
     ["floating-point output"]),
    ("grad-has-aux-not-pair", lambda: fg.grad(lambda a: a.sum(), has_aux=True)(x3), TypeError,
     ["has_aux=True", "pair"]),
    ("grad-wrt-mismatch", lambda: fg.grad(lambda p: p["a"].sum(),
                                          wrt={"b": True})({"a": x3}), ValueError,
     ["wrt mask", "structure"]),
    ("jvp-tangent-shape", lambda: fg.jvp(fnp.sin, (x3,), (x4,)), ValueError,
     ["tangent has shape", "match its primal"]),
    ("jvp-tangent-dtype", lambda: fg.jvp(fnp.sin, (x3,), (np.ones(3),)), TypeError,
     ["tangent has dtype", "float64", "float32"]),
    ("vjp-cotangent-shape", lambda: fg.vjp(fnp.sin, x3)[1](x4), ValueError,
     ["cotangent", "f32[3]", "f32[4]"]),
    ("grad-while-loop", lambda: fg.grad(lambda a: lax.while_loop(
        lambda c: c[0] < 3, lambda c: (c[0] + 1, c[1] * 2.0), (0, a))[1])(1.0),
     TypeError, ["Reverse-mode", "while_loop", "fori_loop", "scan", "inside grad", HERE]),
    ("jit-grad-while-loop", lambda: fg.jit(fg.grad(lambda a: lax.while_loop(
        lambda c: c < 3.0, lambda c: c * 2.0, a)))(1.0),
     TypeError, ["while_loop", "fori_loop", "inside jit"]),
    ("jvp-of-custom-vjp", lambda: fg.jvp(_custom_vjp_fn(), (1.0,), (1.0,)), TypeError,
     ["custom_vjp", "forward-mode"]),
    # -- training toolkit ---------------------------------------------------------------------
    ("optim-tree-mismatch", lambda: _optim_mismatch(), ValueError,
     ["optim.adam", "do not match the params", "'b' is in the updates"]),
    ("masked-mask-mismatch", lambda: optim.masked(optim.sgd(0.1), {"zzz": True}).init(
        {"a": x3}), ValueError, ["mask"]),
    ("mask-from-paths-nomatch", lambda: fmasks.mask_from_paths({"a": x3}, include=["b/*"]),
     ValueError, ["matches no path", "existing paths"]),
    ("random-bad-key", lambda: fg.random.normal(np.ones(2, f32), (3,)), TypeError,
     ["key", "uint32[2]"]),
    ("random-bad-key-shape", lambda: fg.random.normal(np.zeros(3, np.uint32), (3,)), ValueError,
     ["single key", "uint32[2]"]),
    ("random-bad-seed", lambda: fg.random.key(1.5), TypeError, ["seed must be an integer"]),
    ("io-corrupted", "corrupted", fg.io.CheckpointError, ["corrupted", "ck.safetensors"]),
    ("io-truncated", "truncated", fg.io.CheckpointError, ["ck.safetensors"]),
    ("io-bad-leaf", "badleaf", TypeError, ["io.save", "dtype object"]),
    # -- training toolkit: trees, states and hyperparameters (issue 19) -----------------------
    ("optim-list-for-dict", lambda: optim.adam(1e-3).update([P["w"], P["b"]],
                                                          optim.adam(1e-3).init(P), P),
     ValueError, ["optim.adam", "at '<root>'", "a list in the updates, a dict in the params"]),
    ("optim-grad-shape", lambda: optim.sgd(0.1).update(dict(P, b=np.ones(1, f32)), (
        optim.EmptyState(),), P), ValueError, ["optim.sgd", "'b'", "(1,)", "(3,)"]),
    ("optim-grad-dtype", lambda: optim.sgd(0.1).update(dict(P, b=np.ones(3)), (
        optim.EmptyState(),), P), TypeError, ["'b'", "float64", "float32", "astype"]),
    ("optim-state-shape-no-params", lambda: optim.adam(1e-3).update(
        dict(P, b=np.ones(1, f32)), optim.adam(1e-3).init(P)), ValueError,
     ["'b'", "optimizer state", "(3,)", "(1,)"]),
    ("apply-updates-broadcast", lambda: optim.apply_updates({"a": x3}, {"a": np.ones((2, 3), f32)}),
     ValueError, ["apply_updates", "'a'", "(2, 3)", "(3,)", "no broadcasting"]),
    ("apply-updates-truncates", lambda: optim.apply_updates({"n": np.arange(3)}, {"n": x3}),
     TypeError, ["'n'", "float32", "int64", "truncated"]),
    ("optim-foreign-state", lambda: optim.adam(1e-3).update(P, optim.sgd(0.1, 0.9).init(P), P),
     TypeError, ["TraceState", "made by optim.trace", "ScaleByAdamState", "init(params)"]),
    ("optim-foreign-chain-state", lambda: optim.sgd(0.1).update(P, optim.adam(1e-3).init(P), P),
     TypeError, ["optim.sgd", "ScaleByAdamState", "scale_by_adam (adam, adamw)"]),
    ("multi-transform-foreign-labels", lambda: optim.multi_transform(
        {"x": optim.sgd(0.1)}, "x").update(P, optim.MultiTransformState({"y": ()}), P),
     ValueError, ["labels ['y']", "['x']"]),
    ("optim-nan-lr", lambda: optim.adam(float("nan")), ValueError,
     ["optim.adam", "learning_rate", "finite number >= 0"]),
    ("optim-negative-lr", lambda: optim.sgd(-0.1), ValueError,
     ["learning_rate", "negate the loss"]),
    ("optim-schedule-nan", lambda: optim.sgd(lambda count: count * float("nan")), ValueError,
     ["schedule's value at step 0"]),
    ("optim-lr-string", lambda: optim.sgd("0.1"), TypeError,
     ["learning_rate must be a number >= 0 or a schedule", "str"]),
    ("adam-b1", lambda: optim.adam(1e-3, b1=1.5), ValueError, ["b1", "[0, 1)", "1.5"]),
    ("clip-negative", lambda: optim.clip_by_global_norm(-1), ValueError,
     ["max_norm", "(0, inf)", "-1"]),
    ("multisteps-k-float", lambda: optim.MultiSteps(optim.sgd(0.1), 2.5), TypeError,
     ["every_k_schedule", "an int"]),
    ("lora-rank-too-big", lambda: lora.init(0, {"w": np.ones((3, 4), f32)}, True, rank=100),
     ValueError, ["rank=100", "min(rows, cols) = 3", "'w'"]),
    ("lora-rank-float", lambda: lora.init(0, {"w": np.ones((3, 4), f32)}, True, rank=2.5),
     TypeError, ["rank must be an int", "2.5"]),
    ("lora-int-weight", lambda: lora.init(0, {"w": np.ones((3, 4), np.int32)}, True, rank=2),
     TypeError, ["'w'", "int32", "floating-point"]),
    ("lora-merge-shape", lambda: lora.merge({"w": np.ones((4, 3), f32)}, lora.init(
        0, {"w": np.ones((3, 4), f32)}, True, rank=2)), ValueError,
     ["lora.merge", "'w'", "(4, 3)"]),
    # -- checkpoints (issue 19) ------------------------------------------------------------------
    ("io-header-dtype-altered", ("tmp", lambda d: fg.io.load(_altered_dtype(d))),
     fg.io.CheckpointError, ["ck.safetensors", "tensor 'w'", "int32", "saved as float32"]),
    ("io-header-bad-offsets", ("tmp", lambda d: fg.io.load(_raw(d, {"x": {
        "dtype": "F32", "shape": [2], "data_offsets": [0, 4]}}, b"1234"))),
     fg.io.CheckpointError, ["raw.safetensors", "entry 'x'", "needs 8"]),
    ("io-missing-folder", ("tmp", lambda d: fg.io.save(os.path.join(d, "nope", "ck.st"), {})),
     FileNotFoundError, ["folder", "nope", "does not exist", "makedirs"]),
    ("io-unregistered-type", ("tmp", lambda d: _load_unregistered(d)), fg.io.CheckpointError,
     ["Unregistered", "not a registered type", "like="]),
    ("io-train-state-unregistered", ("tmp", lambda d: fg.io.save_train_state(
        os.path.join(d, "s.st"), fg.io.TrainState(params={"u": Unregistered(x3)}))),
     TypeError, ["'params/u'", "io.register_type"]),
    ("io-train-state-from-plain-save", ("tmp", lambda d: (fg.io.save(os.path.join(d, "p.st"), {}),
                                                          fg.io.load_train_state(
                                                              os.path.join(d, "p.st")))),
     fg.io.CheckpointError, ["not a training-state checkpoint", "io.load"]),
    # -- devices and settings -------------------------------------------------------------------
    ("gpu-without-cupy", lambda: fg.device_put(x3, "gpu"), RuntimeError,
     ["GPU", "CuPy", "pip install funcgrad[gpu]"]),
    ("unknown-device", lambda: fg.device_put(x3, "tpu"), ValueError, ["Unknown device", "cpu"]),
    ("unknown-setting", lambda: fg.config.update("debug_nan", True), KeyError,
     ["Unknown funcgrad setting", "debug_nans"]),
    ("bool-setting-type", lambda: fg.config.update("debug_nans", 1), TypeError,
     ["True or False"]),
    # -- runtime errors inside compiled code -------------------------------------------------
    ("callback-raises-in-jit", lambda: fg.jit(
        lambda a: (fg.debug.callback(lambda v: _raise(ValueError("bad value")), a), a)[1])(x3),
     ValueError, ["bad value", "debug_callback", "f32[3]", "inside jit", HERE]),
]


P = {"w": np.ones((3, 4), f32), "b": x3}


class Unregistered(NamedTuple):
    w: object


def _altered_dtype(d):
    path = os.path.join(d, "ck.safetensors")
    fg.io.save(path, {"w": np.arange(4, dtype=f32)})
    raw = open(path, "rb").read()
    open(path, "wb").write(raw.replace(b'"dtype":"F32"', b'"dtype":"I32"'))
    return path


def _raw(d, header, data):
    path = os.path.join(d, "raw.safetensors")
    h = json.dumps(header).encode()
    open(path, "wb").write(len(h).to_bytes(8, "little") + h + data)
    return path


def _load_unregistered(d):
    path = os.path.join(d, "u.st")
    fg.io.save(path, {"n": Unregistered(x3)})
    return fg.io.load(path)


def _custom_vjp_fn():
    @fg.custom_vjp
    def f(x):
        return x * 2.0

    f.defvjp(lambda x: (x * 2.0, None), lambda res, g: (g * 2.0,))
    return f


def _optim_mismatch():
    tx = optim.adam(1e-3)
    state = tx.init({"a": x3})
    return tx.update({"a": x3, "b": x3}, state, {"a": x3})


@pytest.mark.parametrize("name,thunk,exc,words", CASES, ids=[c[0] for c in CASES])
def test_misuse_message(name, thunk, exc, words, tmp_path):
    if name == "gpu-without-cupy" and gpu_unavailable() is None:
        pytest.skip("a GPU is present")
    if thunk == "corrupted":
        def thunk():
            return fg.io.load(_corrupt_checkpoint(tmp_path))
    elif thunk == "truncated":
        def thunk():
            return fg.io.load(_truncated_checkpoint(tmp_path))
    elif thunk == "badleaf":
        def thunk():
            return fg.io.save(os.path.join(tmp_path, "x.safetensors"), {"a": object()})
    elif isinstance(thunk, tuple):
        fn = thunk[1]

        def thunk():
            return fn(str(tmp_path))
    with pytest.raises(exc) as info:
        thunk()
    msg = str(info.value)
    for w in words:
        assert w in msg, f"{w!r} not in message:\n{msg}"


def test_catalogue_is_large():
    assert len(CASES) >= 40


def test_error_keeps_its_type_and_original_as_cause_chain():
    with pytest.raises(ValueError) as info:
        fg.vmap(lambda a: lax.add(a, x4))(np.ones((2, 3), f32))
    assert "[funcgrad] in add" in str(info.value)
    assert str(info.value).count("[funcgrad]") == 1  # context added once, innermost primitive


def test_eqns_record_user_source_lines():
    def f(a):
        b = fnp.sin(a)  # line A
        return b * 2.0

    jaxpr = fg.make_jaxpr(fg.vmap(fg.grad(lambda a: f(a).sum())))(np.ones((2, 3), f32))
    infos = [e.source_info for e in jaxpr.eqns]
    assert infos and all(i is not None and i.file.endswith(HERE) for i in infos)


# ---------------------------------------------------------------------------------------------
# debug_nans

@pytest.fixture
def debug_nans():
    fg.config.update("debug_nans", True)
    yield
    fg.config.reset("debug_nans")


def _nan_fn(a):
    b = fnp.sin(a)
    return fnp.sqrt(b - 2.0).sum()  # the NaN comes from here


NAN_LINE = "return fnp.sqrt(b - 2.0).sum()"


def _line_of(text):
    src = open(__file__).read().splitlines()
    return next(i + 1 for i, s in enumerate(src) if text in s and "NAN_LINE" not in s)


@pytest.mark.parametrize("wrap", ["eager", "jit", "grad", "jit-vmap", "vmap-jit", "jit-grad"])
def test_debug_nans_names_primitive_and_line(debug_nans, wrap):
    fns = {"eager": _nan_fn, "jit": fg.jit(_nan_fn), "grad": fg.grad(_nan_fn),
           "jit-vmap": fg.jit(fg.vmap(_nan_fn)), "vmap-jit": fg.vmap(fg.jit(_nan_fn)),
           "jit-grad": fg.jit(fg.grad(_nan_fn))}
    arg = np.ones((2, 3), f32) if "vmap" in wrap else x3
    with pytest.raises(FloatingPointError) as info, np.errstate(invalid="ignore"):
        fns[wrap](arg)
    msg = str(info.value)
    assert "sqrt produced a NaN" in msg
    assert f"{HERE}:{_line_of(NAN_LINE)}" in msg


def test_debug_nans_inf_and_off_by_default():
    with np.errstate(divide="ignore"):
        assert np.isinf(fg.jit(lambda a: 1.0 / a)(np.zeros(2, f32))).all()  # off: no check
        with fg.config.setting("debug_nans", True):
            with pytest.raises(FloatingPointError, match="div produced a Inf"):
                fg.jit(lambda a: 1.0 / a)(np.zeros(2, f32))
    assert fg.jit(lambda a: 1.0 / a)(np.ones(2, f32)).tolist() == [1.0, 1.0]


def test_debug_nans_passes_finite_programs(debug_nans):
    f = fg.jit(fg.grad(lambda a: fnp.tanh(a).sum()))
    np.testing.assert_allclose(f(x3), 1 - np.tanh(1.0) ** 2, rtol=1e-6)


# ---------------------------------------------------------------------------------------------
# fg.debug.print / fg.debug.callback

def _printing(a):
    fg.debug.print("a={} s={:.1f}", a, a.sum())
    return (fnp.sin(a) * 2.0).sum()


def test_debug_print_eager_and_jit(capsys):
    x = np.arange(3, dtype=f32)
    _printing(x)
    f = fg.jit(_printing)
    f(x)
    f(x + 1)  # cached: prints again at run time
    assert capsys.readouterr().out.splitlines() == [
        "a=[0. 1. 2.] s=3.0", "a=[0. 1. 2.] s=3.0", "a=[1. 2. 3.] s=6.0"]
    assert "debug_callback" in str(f.lower(x))


def test_debug_print_vmap_one_line_per_lane(capsys):
    fg.vmap(_printing)(np.arange(6, dtype=f32).reshape(2, 3))
    assert capsys.readouterr().out.splitlines() == ["a=[0. 1. 2.] s=3.0", "a=[3. 4. 5.] s=12.0"]
    fg.jit(fg.vmap(fg.vmap(lambda a: fg.debug.print("{}", a))))(np.arange(4.0).reshape(2, 2))
    assert capsys.readouterr().out.split() == ["0.0", "1.0", "2.0", "3.0"]


def test_debug_print_grad_shows_forward_values(capsys):
    x = np.arange(3, dtype=f32)
    for g in (fg.grad(_printing), fg.jit(fg.grad(_printing))):
        np.testing.assert_allclose(g(x), 2 * np.cos(x), rtol=1e-6)
    fg.jvp(_printing, (x,), (x,))
    assert capsys.readouterr().out.splitlines() == ["a=[0. 1. 2.] s=3.0"] * 3


def test_debug_callback_gets_numpy_values_and_pytrees():
    seen = []
    fg.jit(lambda p: (fg.debug.callback(lambda d, k=None: seen.append((d, k)), {"w": p}, k=3),
                      p)[1])(x3)
    (d, k), = seen
    assert type(d["w"]) is np.ndarray and k == 3


def test_debug_print_without_arguments_under_jit(capsys):
    f = fg.jit(lambda a: (fg.debug.print("step"), a * 2)[1])
    f(x3)
    f(x3)
    assert capsys.readouterr().out.split() == ["step", "step"]


# ---------------------------------------------------------------------------------------------
# devices

@pytest.mark.cpu_only
def test_devices_cpu():
    assert fg.default_backend() == "cpu"
    assert [d.platform for d in fg.devices()] == ["cpu"]
    tree = fg.device_put({"a": 1.0}, "cpu")
    assert type(tree["a"]) is np.ndarray


def test_error_messages_point_at_user_code_not_internals():
    with pytest.raises(fg.ConcretizationError) as info:
        fg.jit(lambda a: float(a))(x3)
    m = re.search(r"at (\S+):(\d+)", str(info.value))
    assert m and m.group(1).endswith(HERE)
