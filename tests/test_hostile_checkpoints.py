"""Issue 14 §1-2: one loading path for every file (inspect included), and checkpoint safety decided
by what is actually unpickled.

§1: `inspect` crashed with a raw traceback on a truncated .npz, a truncated .pth, a malicious
pickle and a genuine MinD-Vis fmri_encoder.pth (it called torch.load itself).
§2: a protocol-4 pickle that pushes decoy strings and pops them before STACK_GLOBAL fooled the
static scan (it reported collections.OrderedDict while the payload is posix.system); the message
shown was torch's own, advising weights_only=False; `evaluate --judge` called it "truncated".
"""

from __future__ import annotations

import io
import os
import pickle
import subprocess
import sys
import zipfile

import numpy as np
import pytest
import torch

import timeouts
from mindvis.checkpoints import UnsafeCheckpointError, pickle_globals, safe_load
from mindvis.cli.main import main
from mindvis.models import PRESETS, ScMbm
from test_safe_load import _mindvis_style_checkpoint


def _unicode(text: str) -> bytes:
    raw = text.encode()
    return b"\x8c" + bytes([len(raw)]) + raw  # SHORT_BINUNICODE


def decoy_pickle(command: str) -> bytes:
    """Protocol 4, written opcode by opcode: push 'posix', 'system'; push the decoys 'collections',
    'OrderedDict' and pop them; STACK_GLOBAL (takes the two strings now on top: posix.system);
    call it with `command`."""
    return b"".join([
        b"\x80\x04",  # PROTO 4
        _unicode("posix"), _unicode("system"),
        _unicode("collections"), _unicode("OrderedDict"), b"0", b"0",  # decoys, then POP POP
        b"\x93",  # STACK_GLOBAL
        _unicode(command), b"\x85",  # the argument, TUPLE1
        b"R",  # REDUCE: posix.system(command)
        b".",  # STOP
    ])


class _Recorder(pickle.Unpickler):
    """What a real unpickler asks for, found independently of the code under test: records the
    first global and stops there (so nothing is ever called)."""

    def find_class(self, module, name):
        raise LookupError(f"{module}.{name}")


def _asked_by_a_real_unpickler(stream: bytes) -> str:
    with pytest.raises(LookupError) as asked:
        _Recorder(io.BytesIO(stream)).load()
    return str(asked.value.args[0])


def _in_torch_zip(stream: bytes, path) -> None:
    """A torch.save archive whose data.pkl is `stream` (every other record kept)."""
    torch.save({"w": torch.zeros(3)}, path)
    with zipfile.ZipFile(path) as zf:
        records = {n: zf.read(n) for n in zf.namelist()}
    with zipfile.ZipFile(path, "w") as zf:
        for name, blob in records.items():
            zf.writestr(name, stream if name.endswith("/data.pkl") else blob)


@pytest.fixture
def decoy_files(tmp_path):
    marker = tmp_path / "PAYLOAD_RAN"
    stream = decoy_pickle(f"mkdir {marker}")
    raw = tmp_path / "decoy_raw.pth"
    raw.write_bytes(stream)
    zipped = tmp_path / "decoy_zip.pth"
    _in_torch_zip(stream, zipped)
    return marker, stream, [raw, zipped]


def test_the_decoy_pickle_asks_for_posix_system(decoy_files):
    _, stream, _ = decoy_files
    assert _asked_by_a_real_unpickler(stream) == "posix.system"
    assert pickle_globals(stream) == {"posix.system"}  # the gate sees what the unpickler sees


def test_decoy_pickle_is_refused_naming_posix_system_and_never_runs(decoy_files):
    marker, _, files = decoy_files
    for path in files:
        with pytest.raises(UnsafeCheckpointError) as refused:
            safe_load(path)
        message = str(refused.value)
        assert message.startswith(f"{path}: refused: unpickling it asks for posix.system")
        assert refused.value.refused == ["posix.system"]
        assert "weights_only" not in message and "trust" not in message  # never advises turning the check off
        assert "\n" not in message
    assert not marker.exists()


@pytest.mark.parametrize("module, name", [("os", "system"), ("builtins", "exec"), ("subprocess", "Popen"),
                                          ("torch", "load"), ("config", "NotAConfig")])
def test_other_globals_reached_by_stack_global_are_named(tmp_path, module, name):
    stream = b"".join([b"\x80\x04", _unicode(module), _unicode(name), _unicode("torch._utils"),
                       _unicode("_rebuild_tensor_v2"), b"0", b"0", b"\x93", b")", b"R", b"."])
    path = tmp_path / "x.pth"
    path.write_bytes(stream)
    with pytest.raises(UnsafeCheckpointError, match=rf"asks for {module}\.{name},"):
        safe_load(path)


def test_memo_trick_cannot_hide_a_global(tmp_path):
    """The name strings come from the memo (BINGET), after decoys were memoised in between."""
    stream = b"".join([
        b"\x80\x04", _unicode("posix"), b"\x94", _unicode("system"), b"\x94",  # memo 0, 1
        _unicode("collections"), b"\x94", _unicode("OrderedDict"), b"\x94", b"0", b"0", b"0", b"0",
        b"h\x00", b"h\x01", b"\x93", _unicode("true"), b"\x85", b"R", b".",
    ])
    assert _asked_by_a_real_unpickler(stream) == "posix.system"
    path = tmp_path / "memo.pth"
    path.write_bytes(stream)
    with pytest.raises(UnsafeCheckpointError, match="asks for posix.system"):
        safe_load(path)


def test_a_legitimate_protocol_4_checkpoint_is_not_mistaken_for_a_payload(tmp_path):
    path = tmp_path / "p4.pt"
    torch.save({"w": torch.arange(4.0)}, path, pickle_protocol=4)
    try:
        obj = safe_load(path)
    except UnsafeCheckpointError as exc:  # torch's weights-only loader may not read protocol 4
        assert "weights_only" not in str(exc) and "asks for" not in str(exc)
    else:
        assert torch.equal(obj["w"], torch.arange(4.0))


# ----------------------------------------------------------------------------- through the commands


def _inspect(paths, capsys) -> tuple[int, str, str]:
    code = main(["inspect", *map(str, paths)])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_inspect_reads_a_genuine_mindvis_encoder_as_data(tmp_path, capsys):
    path = tmp_path / "fmri_encoder.pth"
    _mindvis_style_checkpoint(path, ScMbm(PRESETS["tiny"], 64))
    code, out, err = _inspect([path], capsys)
    assert code == 0, err
    assert "config.Config_MBM_fMRI (read as data" in out and "model.pos_embed" in out
    assert "config" not in sys.modules


def test_inspect_gives_one_line_per_bad_file_and_describes_the_rest(tmp_path, capsys, decoy_files):
    marker, _, (raw, zipped) = decoy_files
    good = tmp_path / "good.npz"
    np.savez(good, a=np.arange(3))
    npz = tmp_path / "cut.npz"
    npz.write_bytes(good.read_bytes()[:40])
    pth = tmp_path / "cut.pth"
    torch.save({"w": torch.zeros(50)}, pth)
    pth.write_bytes(pth.read_bytes()[:300])
    evil = tmp_path / "evil.pth"
    evil.write_bytes(pickle.dumps(_Mkdir(str(marker)), protocol=2))
    code, out, err = _inspect([npz, pth, evil, raw, zipped, good], capsys)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 5 and all(line.startswith("mindvis inspect: error: ") for line in lines)
    assert f"{npz}: cannot read npz" in lines[0]
    assert f"{pth}: " in lines[1] and "refused" not in lines[1]
    assert f"{evil}: refused: unpickling it asks for posix.mkdir" in lines[2]
    assert f"{raw}: refused: unpickling it asks for posix.system" in lines[3]
    assert f"{zipped}: refused: unpickling it asks for posix.system" in lines[4]
    assert str(good) in out and "int64" in out
    assert "Traceback" not in err and "weights_only" not in err
    assert not marker.exists()


class _Mkdir:
    def __init__(self, where: str):
        self.where = where

    def __reduce__(self):
        return (os.mkdir, (self.where,))


def test_inspect_as_a_process_prints_no_traceback(tmp_path, decoy_files):
    marker, _, (raw, _zipped) = decoy_files
    cut = tmp_path / "cut.pth"
    torch.save({"w": torch.zeros(50)}, cut)
    cut.write_bytes(cut.read_bytes()[:300])
    proc = subprocess.run([sys.executable, "-m", "mindvis", "inspect", str(raw), str(cut)], capture_output=True,
                          text=True, timeout=timeouts.COMMAND)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 2
    assert not marker.exists()


def test_evaluate_judge_calls_a_malicious_file_refused(tmp_path, capsys, decoy_files):
    marker, _, (raw, _zipped) = decoy_files
    rng = np.random.default_rng(0)
    samples = tmp_path / "samples.npz"
    np.savez(samples, samples=rng.integers(0, 256, (4, 2, 32, 32, 3), dtype=np.uint8),
             ground_truth=rng.integers(0, 256, (4, 32, 32, 3), dtype=np.uint8), test_labels=np.arange(4))
    out = tmp_path / "metrics.json"
    code = main(["evaluate", "--samples", str(samples), "--out", str(out), "--judge", str(raw), "--no-tracking"])
    err = capsys.readouterr().err
    assert code == 2
    assert f"{raw}: refused: unpickling it asks for posix.system" in err
    assert "truncated" not in err and "Traceback" not in err and "weights_only" not in err
    assert not out.exists() and not marker.exists()
