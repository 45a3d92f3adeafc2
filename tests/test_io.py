"""funcgrad.io: safetensors checkpoints with path-named tensors, atomic writes (also under
SIGKILL), masked partial saves, and clear errors for damaged files and mismatched templates."""

import collections
import dataclasses
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import zlib
from typing import NamedTuple

import numpy as np
import pytest
import safetensors.numpy

import funcgrad as fg
from funcgrad import io, lora, masks, optim
from funcgrad import tree_util as tu

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def make_tree():
    rng = np.random.default_rng(0)
    return {"blocks": [{"w": rng.normal(size=(3, 4)).astype(np.float32),
                        "b": np.zeros(4, np.float16)},
                       {"w": rng.normal(size=(3, 4)), "b": np.arange(4, dtype=np.int32)}],
            "head": ({"w": rng.normal(size=(4, 2)).astype(np.float32)}, None),
            "step": np.array(7, np.int32), "flag": np.array([True, False]), "lr": 0.5, "n": 3}


def assert_same(a, b):
    assert tu.tree_structure(a) == tu.tree_structure(b)
    for x, y in zip(tu.tree_leaves(a), tu.tree_leaves(b)):
        assert type(x) is type(y)
        if isinstance(x, np.ndarray):
            assert x.dtype == y.dtype and x.shape == y.shape
        np.testing.assert_array_equal(x, y)


def test_round_trip_keeps_structure_and_dtypes(tmp_path):
    tree = make_tree()
    f = tmp_path / "ckpt.safetensors"
    io.save(f, tree)
    assert_same(io.load(f), tree)
    assert_same(io.load(f, like=tree), tree)


def test_file_is_plain_safetensors_with_path_names_and_no_pickle(tmp_path):
    f = tmp_path / "ckpt.safetensors"
    io.save(f, make_tree())
    tensors = safetensors.numpy.load_file(str(f))
    assert sorted(tensors) == sorted(masks.paths(make_tree()))
    assert "blocks/1/w" in tensors and tensors["blocks/1/w"].dtype == np.float64
    raw = f.read_bytes()
    header = json.loads(raw[8:8 + int.from_bytes(raw[:8], "little")])
    json.loads(header["__metadata__"]["funcgrad"])          # the structure is JSON, not pickle
    assert b"pickle" not in raw and b"\x80\x04" not in raw[:16]


@pytest.mark.cpu_only
def test_registered_states_and_adapters_load_without_like(tmp_path):
    params = {"w": np.ones((3, 4), np.float32), "b": np.arange(4, dtype=np.float32)}
    tx = optim.chain(optim.clip_by_global_norm(1.0), optim.masked(optim.adamw(1e-3), {
        "w": True, "b": False}))
    state = tx.init(params)
    state = tx.update(params, state, params)[1]
    f = tmp_path / "opt.safetensors"
    io.save(f, state)
    assert_same(io.load(f), state)                                  # funcgrad's own node types
    assert_same(io.load(f, like=tx.init(params)), state)
    ad = lora.init(0, params, {"w": True, "b": False}, rank=2, alpha=6)
    io.save(f, ad)
    back = io.load(f)
    assert isinstance(back["w"], lora.Adapter) and back["w"].scale == 3.0 and back["b"] is None
    np.testing.assert_array_equal(back["w"].a, ad["w"].a)
    back = io.load(f, like=lora.init(5, params, {"w": True, "b": False}, rank=2, alpha=6))
    np.testing.assert_array_equal(back["w"].a, ad["w"].a)


class Unregistered(NamedTuple):
    w: object


def test_unregistered_node_types_need_like(tmp_path):
    f = tmp_path / "u.safetensors"
    tree = {"u": Unregistered(np.ones(2, np.float32)),
            "od": collections.OrderedDict(z=np.ones(1), a=np.zeros(1))}
    io.save(f, tree)
    with pytest.raises(io.CheckpointError, match="Unregistered at 'u'.*not a registered type.*"
                                                 "like="):
        io.load(f)
    back = io.load(f, like=tree)
    assert type(back["u"]) is Unregistered and list(back["od"]) == ["z", "a"]


def test_masked_save_stores_a_subtree_and_load_merges_it(tmp_path):
    tree = make_tree()
    mask = masks.mask_from_paths(tree, include=["head", "blocks/1/w"])
    f = tmp_path / "part.safetensors"
    io.save(f, tree, mask=mask)
    assert sorted(safetensors.numpy.load_file(str(f))) == ["blocks/1/w", "head/0/w"]
    partial = io.load(f)
    assert partial["blocks"][0]["w"] is None
    np.testing.assert_array_equal(partial["head"][0]["w"], tree["head"][0]["w"])
    fresh = tu.tree_map(lambda x: x * 0 if isinstance(x, np.ndarray) else x, tree)
    merged = io.load(f, like=fresh)
    np.testing.assert_array_equal(merged["blocks"][1]["w"], tree["blocks"][1]["w"])
    assert not np.any(merged["blocks"][0]["w"])                     # not saved: like's value


@pytest.mark.parametrize("cut", [5, 100, -7])
def test_truncated_file_raises_naming_the_file(tmp_path, cut):
    f = tmp_path / "ckpt.safetensors"
    io.save(f, make_tree())
    raw = f.read_bytes()
    f.write_bytes(raw[:cut])
    with pytest.raises(io.CheckpointError, match="ckpt.safetensors.*truncated or corrupted"):
        io.load(f)


def test_corrupted_tensor_bytes_raise_naming_the_tensor(tmp_path):
    f = tmp_path / "ckpt.safetensors"
    tree = {"a": np.zeros(1000, np.float32), "b": np.ones(10, np.float32)}
    io.save(f, tree)
    raw = bytearray(f.read_bytes())
    raw[-100] ^= 0xFF                                     # a byte of tensor data
    f.write_bytes(bytes(raw))
    with pytest.raises(io.CheckpointError, match=r"tensor '(a|b)' is corrupted"):
        io.load(f)


def test_mismatch_against_like_names_the_path(tmp_path):
    tree = make_tree()
    f = tmp_path / "ckpt.safetensors"
    io.save(f, tree)
    bigger = dict(tree, extra=np.zeros(2))
    with pytest.raises(io.CheckpointError, match="missing 'extra'"):
        io.load(f, like=bigger)
    reshaped = dict(tree, head=({"w": np.zeros((2, 4), np.float32)}, None))
    with pytest.raises(io.CheckpointError, match=r"'head/0/w' has shape \(4, 2\).*\(2, 4\)"):
        io.load(f, like=reshaped)
    recast = dict(tree, step=np.array(7, np.int64))
    with pytest.raises(io.CheckpointError, match="'step' has dtype int32.*int64"):
        io.load(f, like=recast)
    smaller = {k: v for k, v in tree.items() if k != "flag"}
    with pytest.raises(io.CheckpointError, match="'flag', which `like` does not"):
        io.load(f, like=smaller)


def test_failed_save_leaves_the_old_file_and_no_temp(tmp_path, monkeypatch):
    f = tmp_path / "ckpt.safetensors"
    old = {"w": np.ones(3, np.float32)}
    io.save(f, old)

    def broken(fh, data):
        fh.write(memoryview(data)[:10])
        raise OSError("disk full")

    monkeypatch.setattr(io.atomic, "_write", broken)
    with pytest.raises(OSError, match="disk full"):
        io.save(f, {"w": np.zeros(3, np.float32)})
    assert_same(io.load(f), old)
    assert os.listdir(tmp_path) == ["ckpt.safetensors"]
    with pytest.raises(TypeError, match="'bad'"):
        io.save(f, {"bad": np.array(["x"])})
    assert_same(io.load(f), old)


def test_killed_mid_save_leaves_the_old_file_intact(tmp_path):
    f = tmp_path / "ckpt.safetensors"
    old = {"w": np.arange(10, dtype=np.float32), "step": np.array(1, np.int32)}
    io.save(f, old)
    old_bytes = f.read_bytes()
    script = textwrap.dedent(f"""
        import sys, time
        import numpy as np
        from funcgrad import io
        from funcgrad.io import atomic

        def stalled(fh, data):                    # write half the file, then hang
            fh.write(memoryview(data)[:len(data) // 2])
            fh.flush()
            print("half", flush=True)
            time.sleep(120)

        atomic._write = stalled
        io.save({str(f)!r}, {{"w": np.full(4 << 20, 2.0, np.float32),
                              "step": np.array(2, np.int32)}})
        """)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, env=env,
                            text=True)
    try:
        assert proc.stdout.readline().strip() == "half"
        temps = [n for n in os.listdir(tmp_path) if n.endswith(".tmp")]
        assert len(temps) == 1 and os.path.getsize(tmp_path / temps[0]) > 1 << 20
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    assert f.read_bytes() == old_bytes
    assert_same(io.load(f), old)
    io.save(f, {"w": np.zeros(2, np.float32)})                   # the next save still works
    assert io.load(f)["w"].shape == (2,)
    if io.atomic.fcntl is not None:                              # a later save sweeps the temp
        _backdate(tmp_path / temps[0])
        io.save(f, {"w": np.zeros(2, np.float32)})
        assert os.listdir(tmp_path) == ["ckpt.safetensors"]


# ---------------------------------------------------------------------------------------------
# Metadata is checked, never trusted


def _header(raw):
    n = int.from_bytes(raw[:8], "little")
    return n, json.loads(raw[8:8 + n])


def _rewrite_meta(f, edit):
    """Re-save `f` with its funcgrad metadata (a JSON object) changed by `edit(meta)`."""
    tensors = safetensors.numpy.load_file(str(f))
    meta = json.loads(_header(f.read_bytes())[1]["__metadata__"]["funcgrad"])
    out = edit(meta)
    text = out if isinstance(out, str) else json.dumps(meta)
    crc = str(zlib.crc32(text.encode()))          # a crafted file: fields are checked one by one
    safetensors.numpy.save_file(tensors, str(f), metadata={"funcgrad": text,
                                                           "funcgrad.crc32": crc})


def _small_tree():
    return {"a": np.arange(3, dtype=np.float32), "b": [np.ones(2, np.float32), np.int32(4)],
            "s": lora.Adapter(np.ones((1, 2), np.float32), np.ones((2, 1), np.float32), 0.5)}


def _set(*path_and_value):
    *path, key, value = path_and_value

    def edit(meta):
        node = meta
        for p in path:
            node = node[p]
        if value is KeyError:
            del node[key]
        else:
            node[key] = value
    return edit


def _leaf_a(key, value):
    return _set("tree", "c", 0, key, value)


DAMAGED = [
    ("keys-vs-children", lambda m: m["tree"]["k"].append(["s", "zz"]), ["4 keys but 3 children"]),
    ("missing-kind", _leaf_a("t", KeyError), ["path 'a'", "field 't'"]),
    ("unknown-kind", _leaf_a("t", "blob"), ["path 'a'", "unknown node kind 'blob'"]),
    ("leaf-names-nothing", _leaf_a("n", "nope"), ["path 'a'", "'nope'", "not in the file"]),
    ("leaf-name-type", _leaf_a("n", 3), ["field 'n'", "expected a str"]),
    ("two-leaves-one-tensor", _set("tree", "c", 1, "c", 0, "n", "a"), ["named by two leaves"]),
    ("dict-key-entry", _set("tree", "k", 0, ["x", 1]), ["dict key entry"]),
    ("duplicate-keys", _set("tree", "k", 1, ["s", "a"]), ["duplicate dict keys"]),
    ("children-not-list", _set("tree", "c", {"x": 1}), ["field 'c'", "expected a list"]),
    ("crc-type", _set("crc32", [1, 2]), ["'crc32'"]),
    ("format", _set("format", "other.v9"), ["'format'", "other.v9"]),
    ("partial", _set("partial", "yes"), ["'partial'"]),
    ("tree-not-object", _set("tree", 3), ["'tree'"]),
    ("py-type", _set("tree", "c", 1, "c", 1, "py", "str"), ["path 'b/1'", "'py'"]),
    ("dtype-record", _leaf_a("dtype", "int32"), ["tensor 'a'", "float32", "saved as int32"]),
    ("shape-record", _leaf_a("shape", [4]), ["tensor 'a'", "(3,)", "saved with shape (4,)"]),
    ("unknown-type-name", _set("tree", "c", 2, "name", "funcgrad.optim.NoSuchState"),
     ["'funcgrad.optim.NoSuchState'", "not a registered type"]),
    ("aux-malformed", _set("tree", "c", 2, "aux", {"$": "weird"}), ["path 's'", "malformed"]),
    ("aux-wrong-arity", _set("tree", "c", 2, "aux", {"$": "tuple", "v": []}),
     ["path 's'", "funcgrad.lora.Adapter"]),
    ("node-children", _set("tree", "c", 2, "k", ["b", "a"]),
     ["path 's'", "children ['b', 'a']", "['a', 'b']"]),
    ("unnamed-tensor", _set("tree", "c", 0, {"t": "none"}), ["tensor 'a'", "no leaf"]),
    ("not-json", lambda m: "{", ["not valid JSON"]),
    ("not-object", lambda m: "[1]", ["not a JSON object"]),
]


@pytest.mark.parametrize("edit,words", [c[1:] for c in DAMAGED], ids=[c[0] for c in DAMAGED])
def test_damaged_metadata_raises_checkpoint_error_naming_file_and_field(tmp_path, edit, words):
    f = tmp_path / "ck.safetensors"
    io.save(f, _small_tree())
    assert_same(io.load(f), _small_tree())
    _rewrite_meta(f, edit)
    with pytest.raises(io.CheckpointError) as info:
        io.load(f)
    for w in ["ck.safetensors"] + words:
        assert w in str(info.value), f"{w!r} not in {info.value}"


def test_damaged_metadata_is_also_refused_with_like(tmp_path):
    f = tmp_path / "ck.safetensors"
    io.save(f, _small_tree())
    _rewrite_meta(f, _leaf_a("dtype", "int32"))
    with pytest.raises(io.CheckpointError, match="saved as int32"):
        io.load(f, like=_small_tree())


def test_altered_header_dtype_with_same_bytes_is_refused(tmp_path):
    """I32 in the header where F32 was written: same byte size, so the checksum passes."""
    f = tmp_path / "ck.safetensors"
    io.save(f, {"w": np.arange(4, dtype=np.float32), "n": np.int64(3)})
    raw = f.read_bytes()
    assert raw.count(b'"dtype":"F32"') == 1
    f.write_bytes(raw.replace(b'"dtype":"F32"', b'"dtype":"I32"'))
    with pytest.raises(io.CheckpointError, match=r"ck.safetensors: tensor 'w' is int32 in the "
                                                 r"safetensors header but was saved as float32"):
        io.load(f)


def _raw_file(tmp_path, header, data=b"", length=None):
    h = header if isinstance(header, bytes) else json.dumps(header).encode()
    f = tmp_path / "raw.safetensors"
    f.write_bytes((len(h) if length is None else length).to_bytes(8, "little") + h + data)
    return f


def _t(dtype="F32", shape=(2,), offs=(0, 8)):
    return {"dtype": dtype, "shape": list(shape), "data_offsets": list(offs)}


BAD_HEADERS = [
    ("too-short", None, b"", ["8-byte header length"]),
    ("header-length", {"x": _t()}, b"\0" * 8, ["header length field says 1000000000"]),
    ("not-json", b"{nope", b"", ["not valid JSON"]),
    ("not-object", b"[1, 2]", b"", ["not a JSON object"]),
    ("metadata-types", {"__metadata__": {"a": 1}}, b"", ["'__metadata__'", "strings"]),
    ("fields", {"x": {"dtype": "F32", "shape": [2]}}, b"", ["entry 'x'", "exactly the fields"]),
    ("unknown-dtype", {"x": _t(dtype="F99")}, b"\0" * 8, ["entry 'x'", "dtype 'F99'"]),
    ("negative-shape", {"x": _t(shape=(-2,))}, b"\0" * 8, ["entry 'x'", "non-negative"]),
    ("float-shape", {"x": _t(shape=(2.0,))}, b"\0" * 8, ["entry 'x'", "non-negative integers"]),
    ("offsets-order", {"x": _t(offs=(8, 0))}, b"\0" * 8, ["entry 'x'", "begin <= end"]),
    ("offsets-size", {"x": _t(offs=(0, 4))}, b"\0" * 4, ["entry 'x'", "4 bytes", "needs 8"]),
    ("gap", {"x": _t(), "y": _t(offs=(12, 20))}, b"\0" * 20, ["entry 'y'", "gap at byte 8"]),
    ("overlap", {"x": _t(), "y": _t(offs=(4, 12))}, b"\0" * 12, ["entry 'y'", "overlaps"]),
    ("trailing-bytes", {"x": _t()}, b"\0" * 12, ["describes", "truncated or corrupted"]),
    ("truncated-data", {"x": _t()}, b"\0" * 5, ["describes", "truncated or corrupted"]),
]


@pytest.mark.parametrize("header,data,words", [c[1:] for c in BAD_HEADERS],
                         ids=[c[0] for c in BAD_HEADERS])
def test_safetensors_header_is_validated_field_by_field(tmp_path, header, data, words):
    if header is None:
        f = tmp_path / "raw.safetensors"
        f.write_bytes(b"\x01\x02")
    else:
        f = _raw_file(tmp_path, header, data, 10 ** 9 if "length field" in words[0] else None)
    for read in (io.read_safetensors_header, io.load_safetensors, io.load):
        with pytest.raises(io.CheckpointError) as info:
            read(f)
        for w in ["raw.safetensors"] + words:
            assert w in str(info.value), f"{w!r} not in {info.value}"


def test_header_reader_returns_infos_and_metadata(tmp_path):
    f = tmp_path / "x.safetensors"
    safetensors.numpy.save_file({"b": np.ones((2, 3), np.float16), "a": np.zeros(0, np.int8)},
                                str(f), metadata={"format": "np"})
    infos, meta = io.read_safetensors_header(f)
    assert meta == {"format": "np"}
    assert infos["b"] == io.TensorInfo("F16", (2, 3), infos["b"].data_offsets)
    assert infos["b"].numpy_dtype == np.float16 and infos["a"].shape == (0,)


# ---------------------------------------------------------------------------------------------
# Plain safetensors files (safetensors, Hugging Face, PyTorch)


def test_plain_safetensors_file_loads_as_flat_dict_and_into_like(tmp_path):
    f = tmp_path / "model.safetensors"
    plain = {"h.0.attn.weight": np.arange(6, dtype=np.float32).reshape(2, 3),
             "wte": np.ones(4, np.float64), "step": np.array(3, np.int64)}
    safetensors.numpy.save_file(plain, str(f))
    back = io.load(f)
    assert sorted(back) == sorted(plain)
    for k, v in plain.items():
        assert back[k].dtype == v.dtype and back[k].flags.writeable
        np.testing.assert_array_equal(back[k], v)
    assert io.load_safetensors(f, names=["wte"]).keys() == {"wte"}
    with pytest.raises(io.CheckpointError, match="no tensor 'nope'"):
        io.load_safetensors(f, names=["nope"])

    g = tmp_path / "paths.safetensors"
    safetensors.numpy.save_file({"blocks/0/w": plain["h.0.attn.weight"], "head": plain["wte"]},
                                str(g))
    like = {"blocks": [{"w": np.zeros((2, 3), np.float32)}], "head": np.zeros(4)}
    back = io.load(g, like=like)
    np.testing.assert_array_equal(back["blocks"][0]["w"], plain["h.0.attn.weight"])
    with pytest.raises(io.CheckpointError, match="missing 'extra'"):
        io.load(g, like=dict(like, extra=np.zeros(1)))


def test_torch_written_bfloat16_file_loads(tmp_path):
    torch = pytest.importorskip("torch")
    import safetensors.torch
    f = tmp_path / "t.safetensors"
    w = torch.arange(6, dtype=torch.float32).reshape(2, 3)
    safetensors.torch.save_file({"w": w.to(torch.bfloat16), "i": torch.arange(3)}, str(f))
    back = io.load(f)
    assert back["w"].dtype.name == "bfloat16" and back["i"].dtype == np.int64
    np.testing.assert_array_equal(back["w"].astype(np.float32), w.numpy())


def test_unsupported_leaf_dtype_is_named_at_save(tmp_path):
    with pytest.raises(TypeError, match="leaf 'z' has dtype complex128"):
        io.save(tmp_path / "c.safetensors", {"z": np.ones(2, np.complex128)})


# ---------------------------------------------------------------------------------------------
# Temporaries of killed saves, missing folders


def _backdate(p, seconds=3600):
    t = time.time() - seconds
    os.utime(p, (t, t))


HOLD = textwrap.dedent("""
    import fcntl, os, sys, time
    fd = os.open(sys.argv[1], os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_EX)
    print("locked", flush=True)
    time.sleep(120)
    """)


@pytest.mark.skipif(io.atomic.fcntl is None, reason="no advisory locks: temporaries are not swept")
def test_save_and_load_sweep_stale_temporaries_of_their_path_only(tmp_path):
    f = tmp_path / "ck.safetensors"
    io.save(f, {"w": np.ones(3, np.float32)})
    stale = [tmp_path / ".ck.safetensors.abc_1234.tmp", tmp_path / ".ck.safetensors.zz99zz99.tmp"]
    fresh = tmp_path / ".ck.safetensors.fresh123.tmp"          # may be a save just starting
    other = tmp_path / ".ck.safetensors.old.safetensors.q1w2e3r4.tmp"   # another path's
    live = tmp_path / ".ck.safetensors.live1234.tmp"           # a save in another process
    for p in stale + [fresh, other, live]:
        p.write_bytes(b"x" * 100)
    for p in stale + [other, live]:
        _backdate(p)
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(live)], stdout=subprocess.PIPE,
                            text=True)
    try:
        assert proc.stdout.readline().strip() == "locked"
        io.load(f)
        left = sorted(os.listdir(tmp_path))
        assert left == sorted(["ck.safetensors", fresh.name, other.name, live.name])
        stale[0].write_bytes(b"x")
        _backdate(stale[0])
        io.save(f, {"w": np.zeros(3, np.float32)})
        assert sorted(os.listdir(tmp_path)) == left
    finally:
        proc.kill()
        proc.wait(timeout=30)
    _backdate(live)
    io.save(f, {"w": np.zeros(3, np.float32)})           # its holder is gone: now it is stale
    assert live.name not in os.listdir(tmp_path)


def test_save_into_a_missing_folder_names_the_folder(tmp_path):
    missing = tmp_path / "no" / "such"
    with pytest.raises(FileNotFoundError, match=f"folder '{missing}' does not exist.*makedirs"):
        io.save(missing / "ck.safetensors", {"w": np.ones(1)})
    with pytest.raises(FileNotFoundError, match="folder"):
        io.save_train_state(missing / "st.safetensors", io.TrainState(params={}))


# ---------------------------------------------------------------------------------------------
# Registered types and training-state checkpoints


@io.register_type(name="tests.io.Config")
@dataclasses.dataclass(frozen=True)
class Config:
    d_model: int = 8
    num_heads: int = 2
    dtype: object = np.float32
    act: str = "gelu"
    sizes: tuple = (4, 4)
    eps: float = 1e-5

    def __post_init__(self):
        if self.d_model % self.num_heads:
            raise ValueError(f"num_heads={self.num_heads} does not divide d_model={self.d_model}")


def test_train_state_round_trips_without_a_template(tmp_path):
    params = {"blocks": [{"w": np.ones((3, 4), np.float32), "b": np.zeros(4, np.float32)}],
              "head": np.ones((4, 2), np.float32)}
    tx = optim.chain(optim.clip_by_global_norm(1.0),
                     optim.multi_transform({"a": optim.adamw(1e-3), "f": optim.set_to_zero()},
                                           {"blocks": "a", "head": "f"}))
    opt_state = fg.device_get(tx.update(params, tx.init(params), params)[1])
    state = io.TrainState(step=12, params=params, opt_state=opt_state, key=fg.random.key(3),
                          config=Config(num_heads=4, dtype=np.dtype(np.float16)),
                          metadata={"loss": 2.5, "seen": (1, 2), "note": "x", "nan": float("nan"),
                                    "nested": {"lr": np.float32(0.1), 3: [None, True]}})
    f = tmp_path / "state.safetensors"
    io.save_train_state(f, state)
    back = io.load_train_state(f)
    assert back.step == 12 and type(back.step) is int
    assert back.config == state.config and type(back.config) is Config
    assert back.metadata["seen"] == (1, 2) and np.isnan(back.metadata["nan"])
    assert back.metadata["nested"] == {"lr": np.float32(0.1), 3: [None, True]}
    assert type(back.metadata["nested"]["lr"]) is np.float32
    assert_same(back.params, params)
    assert_same(back.opt_state, opt_state)
    assert_same(back.key, fg.device_get(state.key))
    updates, _ = tx.update(params, back.opt_state, back.params)   # resumes
    assert tu.tree_structure(updates) == tu.tree_structure(params)
    assert sorted(io.load(f)) == ["key", "opt_state", "params", "step"]
    again = io.load_train_state(f, like=state)
    assert_same(again.opt_state, opt_state)


def test_train_state_refuses_what_it_could_not_rebuild_at_save_time(tmp_path):
    f = tmp_path / "state.safetensors"
    with pytest.raises(TypeError, match=r"Unregistered at 'params/u'.*io.register_type"):
        io.save_train_state(f, io.TrainState(params={"u": Unregistered(np.ones(2))}))

    @dataclasses.dataclass
    class Loose:
        n: int = 1

    with pytest.raises(TypeError, match=r"TrainState.config is a .*Loose.*io.register_type"):
        io.save_train_state(f, io.TrainState(params={}, config=Loose()))
    with pytest.raises(TypeError, match=r"TrainState.metadata\['fn'\] is a .*function"):
        io.save_train_state(f, io.TrainState(params={}, metadata={"fn": len}))
    with pytest.raises(TypeError, match="expected an io.TrainState"):
        io.save_train_state(f, {"params": {}})
    assert not os.path.exists(f)
    io.save(f, {"w": np.ones(2)})
    with pytest.raises(io.CheckpointError, match="not a training-state checkpoint"):
        io.load_train_state(f)


def test_a_registered_class_that_changed_is_named(tmp_path, monkeypatch):
    f = tmp_path / "state.safetensors"
    io.save_train_state(f, io.TrainState(params={}, config=Config()))

    @dataclasses.dataclass(frozen=True)
    class Config2:
        d_model: int = 8

    monkeypatch.setitem(io.registry._TYPES, "tests.io.Config", Config2)
    with pytest.raises(io.CheckpointError, match=r"train_state.config: the stored "
                                                 r"'tests.io.Config' has fields \['act', "
                                                 r"'d_model'.*\(.*Config2\) has \['d_model'\]"):
        io.load_train_state(f)
    monkeypatch.undo()
    _rewrite_meta(f, lambda m: m["train_state"]["config"]["fields"].update(num_heads=3))
    with pytest.raises(io.CheckpointError, match="num_heads=3 does not divide d_model=8"):
        io.load_train_state(f)
    monkeypatch.delitem(io.registry._TYPES, "tests.io.Config")
    with pytest.raises(io.CheckpointError, match="'tests.io.Config', which is not a registered"):
        io.load_train_state(f)


def test_register_type_rules():
    class Plain:
        pass

    with pytest.raises(TypeError, match="not a namedtuple, a dataclass or a pytree node"):
        io.register_type(Plain)
    with pytest.raises(TypeError, match="expected a class"):
        io.register_type(Config())
    with pytest.raises(ValueError, match="'tests.io.Config' is already registered"):
        io.register_type(Unregistered, name="tests.io.Config")
    assert io.register_type(Config, name="tests.io.Config") is Config      # idempotent
    with pytest.raises(ValueError, match="already registered as 'tests.io.Config'"):
        io.register_type(Config, name="other")


def test_metadata_checksum_catches_any_edit(tmp_path):
    f = tmp_path / "ck.safetensors"
    io.save(f, {"a": np.ones(2, np.float32), "b": np.zeros(1, np.float32)})
    raw = f.read_bytes()
    f.write_bytes(raw.replace(b'\\"a\\"', b'\\"c\\"', 1))    # a dict key, inside the JSON string
    with pytest.raises(io.CheckpointError, match="checksum 'funcgrad.crc32'"):
        io.load(f)
    f.write_bytes(raw.replace(b'"funcgrad"', b'"funcgraf"', 1))
    with pytest.raises(io.CheckpointError, match="'funcgrad.crc32' without 'funcgrad'"):
        io.load(f)
