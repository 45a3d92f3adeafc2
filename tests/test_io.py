"""funcgrad.io: safetensors checkpoints with path-named tensors, atomic writes (also under
SIGKILL), masked partial saves, and clear errors for damaged files and mismatched templates."""

import json
import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import safetensors.numpy

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
def test_namedtuple_states_and_adapters_load_with_like(tmp_path):
    params = {"w": np.ones((3, 4), np.float32), "b": np.arange(4, dtype=np.float32)}
    tx = optim.adam(1e-3)
    state = tx.init(params)
    state = tx.update(params, state)[1]
    f = tmp_path / "opt.safetensors"
    io.save(f, state)
    assert_same(io.load(f, like=tx.init(params)), state)
    with pytest.raises(io.CheckpointError, match="like="):
        io.load(f)
    ad = lora.init(0, params, {"w": True, "b": False}, rank=2)
    io.save(f, ad)
    back = io.load(f, like=lora.init(5, params, {"w": True, "b": False}, rank=2))
    np.testing.assert_array_equal(back["w"].a, ad["w"].a)


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

    monkeypatch.setattr(io, "_write", broken)
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

        def stalled(fh, data):                    # write half the file, then hang
            fh.write(memoryview(data)[:len(data) // 2])
            fh.flush()
            print("half", flush=True)
            time.sleep(120)

        io._write = stalled
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
