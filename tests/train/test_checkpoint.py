"""Checkpoints: safetensors round trips, refusal of pickles, crash safety and fallback."""

from __future__ import annotations

import errno
import json
import logging
import math
import os
import pickle
import signal
import struct
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import safetensors.torch
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import seqlab.train.checkpoint as ck
from seqlab.errors import CheckpointError
from seqlab.train.checkpoint import (
    CheckpointManager,
    flatten_state,
    load_weights,
    save_weights,
    unflatten_state,
)

REPO = Path(__file__).resolve().parents[2]


def assert_same(a, b, path="root"):
    """Exact equality: same types, key order and key types, float bits, tensor bytes."""
    assert type(a) is type(b), f"{path}: {type(a).__name__} vs {type(b).__name__}"
    if isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and a.shape == b.shape, path
        assert torch.equal(a.reshape(-1).view(torch.uint8), b.reshape(-1).view(torch.uint8)), path
    elif isinstance(a, float):
        assert struct.pack(">d", a) == struct.pack(">d", b), f"{path}: {a!r} vs {b!r}"
    elif isinstance(a, dict):
        assert len(a) == len(b), path
        for (ka, va), (kb, vb) in zip(a.items(), b.items()):
            assert_same(ka, kb, f"{path}.key")
            assert_same(va, vb, f"{path}/{ka!r}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{path}/{i}")
    else:
        assert a == b, path


def round_trip_state(obj):
    """flatten -> safetensors bytes + strict JSON -> unflatten, as the manager stores it."""
    tensors, skeleton = flatten_state(obj)
    blob = safetensors.torch.save({k: v.contiguous() for k, v in tensors.items()})
    text = json.dumps(skeleton, allow_nan=False)
    return unflatten_state(safetensors.torch.load(blob), json.loads(text))


class _Payload:
    """Unpickling this calls os.mkdir(marker): proof that a file was (not) unpickled."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


# --------------------------------------------------------------------------- weights


def test_weights_round_trip_dtypes_and_non_contiguous(tmp_path):
    g = torch.Generator().manual_seed(0)
    base = torch.randn(4, 6, generator=g)
    tensors = {
        "f32": torch.randn(3, 5, generator=g),
        "bf16": torch.randn(7, generator=g).to(torch.bfloat16),
        "i64": torch.randint(-(2**40), 2**40, (2, 3), generator=g),
        "transposed": base.t(),  # non-contiguous
        "scalar": torch.tensor(3.5),
        "empty": torch.zeros(0, 4),
    }
    path = tmp_path / "w.safetensors"
    save_weights(path, tensors, {"note": "hi"})
    loaded, meta = load_weights(path)
    assert meta == {"note": "hi"}
    assert list(loaded) == sorted(tensors)
    for name, t in tensors.items():
        assert_same(t.contiguous(), loaded[name], name)
    assert not any(p.name.startswith(".tmp-") for p in tmp_path.iterdir())


def test_shared_storage_is_saved(tmp_path):
    big = torch.arange(12.0)
    save_weights(tmp_path / "w.safetensors", {"a": big[:6], "b": big[6:], "c": big})
    loaded, _ = load_weights(tmp_path / "w.safetensors")
    assert torch.equal(loaded["a"], big[:6]) and torch.equal(loaded["c"], big)


def test_plain_safetensors_without_checksum_loads(tmp_path):
    path = tmp_path / "other.safetensors"
    safetensors.torch.save_file({"x": torch.ones(2)}, str(path), metadata={"format": "pt"})
    tensors, meta = load_weights(path)
    assert torch.equal(tensors["x"], torch.ones(2)) and meta == {"format": "pt"}


def test_reserved_metadata_key_rejected(tmp_path):
    with pytest.raises(ValueError, match="reserved"):
        save_weights(tmp_path / "w.safetensors", {"x": torch.ones(1)}, {"seqlab.sha256": "0"})


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_gpu_saved_weights_load_on_cpu(tmp_path):
    save_weights(tmp_path / "w.safetensors", {"x": torch.ones(3, device="cuda").t()})
    loaded, _ = load_weights(tmp_path / "w.safetensors")
    assert loaded["x"].device.type == "cpu"
    assert load_weights(tmp_path / "w.safetensors", device="cuda")[0]["x"].is_cuda


@pytest.fixture
def weights_file(tmp_path):
    path = tmp_path / "w.safetensors"
    save_weights(path, {"a": torch.randn(256), "b": torch.arange(100)})
    return path


def test_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match="nope.safetensors does not exist"):
        load_weights(tmp_path / "nope.safetensors")


def test_truncated_file(weights_file):
    data = weights_file.read_bytes()
    weights_file.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError) as info:
        load_weights(weights_file)
    msg = str(info.value)
    assert "w.safetensors is truncated" in msg
    assert f"expected {len(data)} bytes, found {len(data) // 2}" in msg


def test_corrupt_header(weights_file):
    data = bytearray(weights_file.read_bytes())
    data[8:40] = b"\xfe" * 32
    weights_file.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="w.safetensors has a corrupt header"):
        load_weights(weights_file)


def test_flipped_data_byte_fails_checksum(weights_file):
    data = bytearray(weights_file.read_bytes())
    data[-5] ^= 0x01
    weights_file.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="w.safetensors is corrupt: its data does not "
                                              "match the checksum written with it"):
        load_weights(weights_file)


def test_header_length_with_pickle_like_low_byte_is_not_refused(tmp_path):
    """A header of 0x280 bytes starts the file with b"\\x80\\x02", like a pickle."""
    path = tmp_path / "w.safetensors"
    for pad in range(800):
        save_weights(path, {"x": torch.ones(1)}, {"pad": "p" * pad})
        if path.read_bytes()[:2] == b"\x80\x02":
            break
    else:
        pytest.skip("no padding produced the pickle-like prefix")
    assert torch.equal(load_weights(path)[0]["x"], torch.ones(1))


def test_pickle_refused_and_never_run(tmp_path):
    live = tmp_path / "live-marker"
    pickle.loads(pickle.dumps(_Payload(live)))
    assert live.exists(), "the payload must be live for this test to mean anything"

    marker = tmp_path / "marker"
    path = tmp_path / "model.safetensors"
    path.write_bytes(pickle.dumps(_Payload(marker)))
    with pytest.raises(CheckpointError, match="model.safetensors is not a safetensors file "
                                              r"\(it looks like a Python pickle"):
        load_weights(path)
    assert not marker.exists()


def test_torch_save_archive_refused_and_never_run(tmp_path):
    marker = tmp_path / "marker"
    path = tmp_path / "model.safetensors"
    torch.save({"w": torch.ones(2), "evil": _Payload(marker)}, path)
    assert path.read_bytes()[:4] == b"PK\x03\x04"
    with pytest.raises(CheckpointError, match="seqlab never unpickles files"):
        load_weights(path)
    assert not marker.exists()


def test_manager_refuses_pickle_with_valid_manifest(tmp_path):
    """Even a manifest whose checksums match cannot smuggle a pickle in."""
    marker = tmp_path / "marker"
    mgr = CheckpointManager(tmp_path / "trainer")
    step_dir = mgr.save(1, model={"w": torch.ones(2)}, state={})
    model = step_dir / "model.safetensors"
    torch.save({"evil": _Payload(marker)}, model)
    manifest = json.loads((step_dir / "manifest.json").read_text())
    manifest["files"]["model.safetensors"] = {"size": model.stat().st_size,
                                              "sha256": ck._sha256_file(model)}
    (step_dir / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(CheckpointError, match="step-00000001 is corrupt .*never unpickles"):
        mgr.load_latest()
    assert not marker.exists()


# ----------------------------------------------------------------------------- state


def _adamw_state(**kwargs):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Linear(3, 2))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, betas=(0.8, 0.95), **kwargs)
    for _ in range(2):
        opt.zero_grad()
        model(torch.randn(5, 4)).square().mean().backward()
        opt.step()
    return model, opt


@pytest.mark.parametrize("fused", [False, True])
def test_adamw_state_round_trip_bit_exact(fused):
    kwargs = {"fused": True} if fused else {}
    try:
        model, opt = _adamw_state(**kwargs)
    except (RuntimeError, ValueError) as exc:
        pytest.skip(f"fused AdamW unavailable on CPU: {exc}")
    sd = opt.state_dict()
    state = {"optimizer": sd, "rng": torch.get_rng_state(), "counters": {"step": 2, "epoch": 0}}
    back = round_trip_state(state)
    assert_same(state, back)
    assert isinstance(next(iter(back["optimizer"]["state"])), int)
    assert back["optimizer"]["param_groups"][0]["betas"] == (0.8, 0.95)

    # Resuming from the restored state takes exactly the same next step.
    clone = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Linear(3, 2))
    clone.load_state_dict(model.state_dict())
    opt2 = torch.optim.AdamW(clone.parameters(), lr=1e-2, **kwargs)
    opt2.load_state_dict(back["optimizer"])
    x = torch.randn(5, 4)
    for m, o in ((model, opt), (clone, opt2)):
        o.zero_grad()
        m(x).square().mean().backward()
        o.step()
    for p, q in zip(model.parameters(), clone.parameters()):
        assert torch.equal(p, q)


def test_special_floats_and_marker_like_keys():
    obj = {"__tensor__": "not a tensor", "x": [math.inf, -math.inf, math.nan, -0.0],
           "odd_nan": struct.unpack(">d", bytes.fromhex("7ff0000000000001"))[0],
           (1, "a"): None, 2: True, 2.5: "f", None: 1, False: 0}
    assert_same(obj, round_trip_state(obj))


def test_unsupported_type_names_path():
    with pytest.raises(TypeError, match="state at /a/0 has type set"):
        flatten_state({"a": [{1, 2}]})


_DTYPES = [torch.float32, torch.bfloat16, torch.int64, torch.uint8, torch.bool, torch.float16]
_tensors = st.builds(
    lambda values, dtype: torch.tensor(values, dtype=torch.float64).to(dtype),
    st.lists(st.floats(-1e3, 1e3, width=32), max_size=5),
    st.sampled_from(_DTYPES),
)
_leaves = (st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.text(max_size=6)
           | st.floats(allow_nan=True, allow_infinity=True) | _tensors)
_keys = st.integers(-5, 5) | st.text(max_size=4) | st.sampled_from(["__tuple__", "__dict__"])
_nested = st.recursive(
    _leaves,
    lambda inner: (st.lists(inner, max_size=4) | st.lists(inner, max_size=4).map(tuple)
                   | st.dictionaries(_keys, inner, max_size=4)),
    max_leaves=20,
)


@settings(max_examples=150, deadline=None)
@given(_nested)
def test_nested_state_round_trip(obj):
    assert_same(obj, round_trip_state(obj))


# --------------------------------------------------------------------------- manager


def _save(mgr, step, **kw):
    return mgr.save(step, model={"w": torch.full((8,), float(step))},
                    state={"counters": {"step": step}, "rng": torch.get_rng_state()}, **kw)


def test_manager_keeps_newest_and_loads_latest(tmp_path):
    mgr = CheckpointManager(tmp_path / "trainer", keep=2)
    opt_state = _adamw_state()[1].state_dict()
    for step in (100, 200, 300):
        mgr.save(step, model={"w": torch.full((8,), float(step))},
                 state={"optimizer": opt_state, "step": step}, metadata={"run": "t"})
    assert [s for s, _ in mgr.checkpoints()] == [300, 200]
    assert sorted(p.name for p in (tmp_path / "trainer").iterdir()) == [
        "step-00000200", "step-00000300"]
    assert set(p.name for p in (tmp_path / "trainer/step-00000300").iterdir()) == {
        "model.safetensors", "state.safetensors", "state.json", "manifest.json"}
    assert mgr.latest_step() == 300
    ckpt = mgr.load_latest()
    assert ckpt.step == 300 and ckpt.path.name == "step-00000300"
    assert torch.equal(ckpt.model["w"], torch.full((8,), 300.0))
    assert ckpt.metadata == {"run": "t"}
    assert_same({"optimizer": opt_state, "step": 300}, ckpt.state)


def test_resave_same_step_replaces(tmp_path):
    mgr = CheckpointManager(tmp_path, keep=2)
    _save(mgr, 1)
    mgr.save(1, model={"w": torch.zeros(2)}, state={"v": 2})
    ckpt = mgr.load_latest()
    assert ckpt.state == {"v": 2} and torch.equal(ckpt.model["w"], torch.zeros(2))
    assert [p.name for p in tmp_path.iterdir()] == ["step-00000001"]


def test_corrupt_newest_falls_back_with_warning(tmp_path, caplog):
    mgr = CheckpointManager(tmp_path, keep=2)
    _save(mgr, 200)
    newest = _save(mgr, 400)
    model = newest / "model.safetensors"
    data = bytearray(model.read_bytes())
    data[-1] ^= 0xFF
    model.write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING, logger="seqlab.train.checkpoint"):
        ckpt = mgr.load_latest()
    assert ckpt.step == 200
    assert ("checkpoint step-00000400 is corrupt (model.safetensors: sha256 mismatch); "
            "falling back to step-00000200") in caplog.text


def test_incomplete_dir_skipped(tmp_path, caplog):
    mgr = CheckpointManager(tmp_path, keep=3)
    _save(mgr, 1)
    (_save(mgr, 2) / "manifest.json").unlink()
    assert mgr.latest_step() == 1
    with caplog.at_level(logging.WARNING):
        assert mgr.load_latest().step == 1
    assert "step-00000002 is incomplete (no manifest.json" in caplog.text


def test_all_corrupt_lists_each(tmp_path):
    mgr = CheckpointManager(tmp_path, keep=2)
    first, second = _save(mgr, 1), _save(mgr, 2)
    (second / "state.json").write_text("{}")
    (first / "model.safetensors").write_bytes(b"")
    with pytest.raises(CheckpointError) as info:
        mgr.load_latest()
    msg = str(info.value)
    assert f"no usable checkpoint in {tmp_path}" in msg
    assert "step-00000002 is corrupt (state.json:" in msg
    assert "step-00000001 is corrupt (model.safetensors: 0 bytes, manifest says" in msg


def test_no_checkpoint(tmp_path):
    mgr = CheckpointManager(tmp_path / "trainer")
    assert mgr.latest_step() is None and mgr.checkpoints() == []
    with pytest.raises(CheckpointError, match=r"no checkpoint in .*trainer to resume from "
                                              r"\(train without --resume"):
        mgr.load_latest()


def test_clean_stale(tmp_path):
    mgr = CheckpointManager(tmp_path)
    _save(mgr, 1)
    (tmp_path / ".tmp-step-00000002-123").mkdir()
    (tmp_path / ".tmp-step-00000002-123" / "model.safetensors").write_bytes(b"x")
    (tmp_path / ".tmp-manifest.json.abc").write_bytes(b"x")
    removed = mgr.clean_stale()
    assert sorted(p.name for p in removed) == [".tmp-manifest.json.abc", ".tmp-step-00000002-123"]
    assert [p.name for p in tmp_path.iterdir()] == ["step-00000001"]


@pytest.mark.parametrize("failing", ["model.safetensors", "state.json", "manifest.json"])
def test_disk_full_leaves_previous_untouched(tmp_path, monkeypatch, failing):
    mgr = CheckpointManager(tmp_path, keep=1)
    _save(mgr, 1)
    before = {p.name: p.read_bytes() for p in (tmp_path / "step-00000001").iterdir()}
    real = ck._write_file

    def full(path, data):
        if path.name == failing:
            raise OSError(errno.ENOSPC, "No space left on device")
        real(path, data)

    monkeypatch.setattr(ck, "_write_file", full)
    with pytest.raises(CheckpointError) as info:
        _save(mgr, 2)
    msg = str(info.value)
    assert "could not write checkpoint for step 2" in msg
    assert "no space left on device" in msg
    assert "the previous checkpoint (step 1) is untouched" in msg
    assert [p.name for p in tmp_path.iterdir()] == ["step-00000001"]
    assert {p.name: p.read_bytes() for p in (tmp_path / "step-00000001").iterdir()} == before
    assert mgr.load_latest().step == 1


def test_other_oserror_gives_strerror(tmp_path, monkeypatch):
    mgr = CheckpointManager(tmp_path)

    def denied(path, data):
        raise PermissionError(errno.EACCES, "Permission denied", str(path))

    monkeypatch.setattr(ck, "_write_file", denied)
    with pytest.raises(CheckpointError, match="Permission denied .*there is no previous"):
        _save(mgr, 1)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs POSIX signals")
def test_kill_9_during_save_leaves_previous_loadable(tmp_path):
    directory = tmp_path / "trainer"
    script = textwrap.dedent(f"""
        import os, signal, torch
        from pathlib import Path
        import seqlab.train.checkpoint as ck

        mgr = ck.CheckpointManager(Path({str(directory)!r}), keep=2)
        mgr.save(1, model={{"w": torch.ones(4)}}, state={{"step": 1}})
        real = ck._write_file

        def dying(path, data):
            if path.name == "manifest.json":
                assert (path.parent / "model.safetensors").is_file()
                os.kill(os.getpid(), signal.SIGKILL)
            real(path, data)

        ck._write_file = dying
        mgr.save(2, model={{"w": torch.full((4,), 2.0)}}, state={{"step": 2}})
        print("save returned")  # never reached
    """)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(REPO)] + [p for p in [os.environ.get("PYTHONPATH")] if p]))
    proc = subprocess.run([sys.executable, "-c", script], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert "save returned" not in proc.stdout
    leftovers = [p for p in directory.iterdir() if p.name.startswith(".tmp-")]
    assert len(leftovers) == 1 and (leftovers[0] / "model.safetensors").is_file()
    assert not (leftovers[0] / "manifest.json").exists()

    mgr = CheckpointManager(directory)
    assert mgr.latest_step() == 1
    ckpt = mgr.load_latest()
    assert ckpt.step == 1 and ckpt.state == {"step": 1}
    assert mgr.clean_stale() == leftovers
    assert [p.name for p in directory.iterdir()] == ["step-00000001"]


def test_atomic_writes_get_the_usual_file_mode(tmp_path):
    import os
    import stat

    from seqlab.io import atomic_write

    atomic_write(tmp_path / "a.txt", "x")
    mask = os.umask(0o022)
    os.umask(mask)
    assert stat.S_IMODE((tmp_path / "a.txt").stat().st_mode) == 0o666 & ~mask
