"""benchmarks/gpu_check.sh: without a GPU it exits 0 saying so; --cpu-smoke runs its whole logic on the CPU."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

import timeouts

ROOT = Path(__file__).resolve().parents[1]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["CUDA_VISIBLE_DEVICES"] = ""  # no GPU, even on a machine that has one
    env["PYTHON"] = sys.executable
    return env


def test_without_a_gpu_the_script_says_so_and_exits_cleanly():
    proc = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_check.sh")], capture_output=True, text=True,
                          env=_env(), timeout=timeouts.COMMAND)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "no GPU" in proc.stdout and "Traceback" not in proc.stderr


@pytest.mark.slow
def test_cpu_smoke_runs_every_part_of_the_check(tmp_path):
    out = tmp_path / "gpu.json"
    proc = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), "--cpu-smoke", "--repeats", "1",
                           "--warmup", "1", "--samplers", "plms:20,dpmpp:4", "--sample-images", "2", "--json", str(out)],
                          capture_output=True, text=True, env=_env(), timeout=timeouts.COMMAND)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    figures = json.loads(out.read_text())
    # the trainers' own paths: exactly max_steps (3) steps each, under bf16 autocast, finite loss
    for name in ("train_mbm", "stage_b_run_loop"):
        run = figures["trainer_paths"][name]
        assert run["steps"] == 3 and run["precision"] == "bfloat16" and math.isfinite(run["final_loss"])
    names = [row["workload"] for row in figures["rows"]]
    assert names[0].startswith("SC-MBM A1 step") and names[1].startswith("stage B step")
    assert [n.split(" (")[0] for n in names[2:6]] == ["PLMS-20", "DPM-Solver++-4"] * 2
    assert "2-process DDP (gloo)" in names[6]
    for row in figures["rows"][:6]:
        assert row["samples_per_s"] > 0 and 0 < row["share_of_peak"]
    assert figures["rows"][0]["batch"] == 8 and figures["rows"][1]["batch"] == 5
    goals = figures["goals"]
    assert goals["a1_goal"] == 0.40 and goals["speedup_goal"] == 8.0 and len(goals["dpmpp_speedup"]) == 2
    assert "goal SC-MBM A1 >= 40%" in proc.stdout and "faster per image than PLMS-20" in proc.stdout
