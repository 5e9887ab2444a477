"""Kill and preemption: `pretrain-mbm` killed (SIGKILL) or stopped (SIGTERM) mid-run, then rerun,
ends with exactly the weights of an uninterrupted run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from mindvis.checkpoints import safe_load
from mindvis.cli.main import main
from mindvis.training.checkpointing import resume_path_for

CONFIG = json.dumps({"epochs": 4, "batch_size": 8, "checkpoint_every_steps": 3, "holdout_fraction": 0.1,
                     "window": 2, "device": "cpu"})

# Runs the real CLI in a child process. The second periodic save (the first, with `term`) announces
# itself through a marker file and waits, so the parent can signal it at a known point.
CHILD = r"""
import sys, time, pathlib, torch
torch.set_num_threads(1)
import mindvis.training.engine as trainer
marker, mode = pathlib.Path(sys.argv[1]), sys.argv[2]
real_save, calls = trainer.save_resume_state, []
def save(path, state):
    calls.append(state["step"])
    if len(calls) == (1 if mode == "term" else 2):
        marker.write_text(str(state["step"]))
        time.sleep(60 if mode == "kill" else 1.0)  # "kill": die here, before this save; "term": carry on
    real_save(path, state)
trainer.save_resume_state = save
from mindvis.cli.main import main
sys.exit(main(sys.argv[3:]))
"""


def write_hcp(path: Path, frames: int, voxels=(20, 18, 14, 12), seed=0) -> None:
    rng = np.random.default_rng(seed)
    latent = rng.standard_normal((frames, 3))
    areas = {f"V{i + 1}": (latent @ rng.standard_normal((3, v))).astype(np.float32) for i, v in enumerate(voxels)}
    np.savez(path, run_lengths=np.array([frames // 2, frames - frames // 2]), **areas)


def _cli_args(tmp_path: Path, out: Path) -> list[str]:
    return ["pretrain-mbm", "--hcp", str(tmp_path / "hcp1.npz"), str(tmp_path / "hcp2.npz"), "--out", str(out),
            "--config", CONFIG, "--no-tracking"]


@pytest.fixture(scope="module")
def hcp_files(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("resume")
    write_hcp(tmp_path / "hcp1.npz", 200, seed=1)
    write_hcp(tmp_path / "hcp2.npz", 160, voxels=(18, 18, 14, 12), seed=2)
    return tmp_path


@pytest.fixture(scope="module")
def reference(hcp_files):
    """The uninterrupted run's final weights (computed once for both tests)."""
    return _reference_weights(hcp_files)


def _reference_weights(tmp_path: Path) -> dict[str, torch.Tensor]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main(_cli_args(tmp_path, tmp_path / "ref" / "fmri_encoder.pth")) == 0
    finally:
        torch.set_num_threads(threads)
    return torch.load(tmp_path / "ref" / "fmri_encoder.pth", weights_only=True)["model"]


def _run_child(tmp_path: Path, out: Path, mode: str, sig: int) -> tuple[int, int]:
    marker = tmp_path / f"marker_{mode}"
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(marker), mode, *_cli_args(tmp_path, out)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while not marker.exists():
        assert child.poll() is None, child.stderr.read().decode()[-2000:]
        assert time.time() < deadline, "child never reached its checkpoint"
        time.sleep(0.02)
    os.kill(child.pid, sig)
    code = child.wait(timeout=120)
    return code, int(marker.read_text())


def _rerun(tmp_path: Path, out: Path) -> dict[str, torch.Tensor]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main(_cli_args(tmp_path, out)) == 0
    finally:
        torch.set_num_threads(threads)
    assert not resume_path_for(out).exists()
    return torch.load(out, weights_only=True)["model"]


def test_sigkill_then_rerun_matches_uninterrupted_run(hcp_files, reference):
    tmp_path = hcp_files
    out = tmp_path / "killed" / "fmri_encoder.pth"
    code, step_at_kill = _run_child(tmp_path, out, "kill", signal.SIGKILL)
    assert code == -signal.SIGKILL and step_at_kill == 6
    assert not out.exists()  # nothing that looks finished
    assert safe_load(resume_path_for(out))["step"] == 3  # the save at step 6 never happened: 3 steps redone
    resumed = _rerun(tmp_path, out)
    for key, value in reference.items():
        assert torch.equal(resumed[key], value), key


def test_sigterm_saves_state_exits_143_and_resumes_exactly(hcp_files, reference):
    tmp_path = hcp_files
    out = tmp_path / "term" / "fmri_encoder.pth"
    code, first_save = _run_child(tmp_path, out, "term", signal.SIGTERM)
    assert code == 143 and first_save == 3
    assert not out.exists()
    state = safe_load(resume_path_for(out))
    assert state["step"] == 3  # SIGTERM arrived during step 3's save: saved again at step 3, then exit
    resumed = _rerun(tmp_path, out)
    for key, value in reference.items():
        assert torch.equal(resumed[key], value), key
