"""Preemption and kills through the DAG: every training rule, killed mid-run and rerun, ends
with exactly the model of an uninterrupted run.

One module-scoped run of the micro DAG, with an override (KILLABLE) that gives each training
rule a few dozen small steps and a resumable checkpoint every 2, builds every rule's inputs and,
in the same run, each rule's uninterrupted output: the reference. Then, per rule (god/1 only),
the output is deleted and its target rerun in the background; once the trainer has written a
`<out>.resume.pt` (stage B fine-tuning: one written after the reference's selected epoch, so
the export must use the best state restored from that file), the job's `python -m mindvis
<command>` process gets SIGTERM (what a scheduler's time limit sends: the trainer saves and
exits 143) or SIGKILL (no warning: the last periodic checkpoint is all there is). Snakemake must fail, leaving no output; a rerun with
`--rerun-incomplete` must resume from the saved step and end with every tensor (and every
non-wall-clock value) of the reference checkpoint.

Cases run downstream-first: a rule's rerun only rewrites its own output, so every later case
still has the inputs its reference was trained from.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import pytest
import torch

import timeouts
from mindvis.training.checkpointing import resume_path_for
from mindvis.training.input_identity import hash_cache_path_for
from workflow_runner import copy_workflow, start_snakemake

pytestmark = [pytest.mark.integration, pytest.mark.slow]

# Long enough to be killed between the first checkpoint and the end (each rule trains 2-6 s
# on 2 busy cores after a ~5 s start-up), short enough to keep the module near 3 minutes.
KILLABLE = """\
god:
  subjects: [1]
bold5000:
  subjects: []
stage_a:
  pretrain: {epochs: 4, batch_size: 4, checkpoint_every_steps: 2}    # 10 steps per epoch
  finetune: {epochs: 5, batch_size: 4, checkpoint_every_steps: 2}    # 6 steps per epoch
stage_b:
  autoencoder: {epochs: 4, batch_size: 4, checkpoint_every_steps: 2} # 7 steps per epoch
  label2img: {epochs: 4, batch_size: 4, checkpoint_every_steps: 2}   # 7 steps per epoch
  finetune: {epochs: 6, batch_size: 4, checkpoint_every_steps: 2, lr: 5.0e-2}  # 6 steps per epoch, selection
  # every epoch; this lr makes an early epoch the best (5.0e-3 and 2.0e-2 no longer did; 1.0e-1 diverged), so a kill after it
  # leaves the export to the best state restored from the resume file
judge: {epochs: 40, checkpoint_every_steps: 2}                       # 1 step per epoch (30 images)
"""
OVERRIDE = "killable.yaml"

# Values that measure the wall clock, not the model: left out of the comparison.
WALL_CLOCK_KEYS = {"samples_per_s", "train_seconds", "seconds"}

RESUMED = re.compile(r"resumed from \S+ at step (\d+)/(\d+)")  # training.engine.run_loop
STOPPED = re.compile(r"training stopped at step (\d+); state saved to")  # TrainingInterrupted, logged by the CLI

SNAKEMAKE_TIMEOUT = timeouts.SNAKEMAKE_JOB  # any one Snakemake run of a single training job
DAG_TIMEOUT = timeouts.DAG_RUN  # the module fixture's micro DAG


@dataclass(frozen=True)
class Case:
    rule: str
    command: str  # the `python -m mindvis <command>` the rule runs
    output: str
    log: str
    sig: signal.Signals
    after_best_epoch: bool = False  # signal the job once the reference's selected epoch has ended (stage B)


CASES = [
    Case("finetune_ldm", "finetune-ldm", "results/stage_b/god/1/finetuned.pt",
         "results/logs/finetune_ldm/god_1.log", signal.SIGTERM, after_best_epoch=True),
    Case("train_label2img", "train-label2img", "results/stage_b/prior/label2img.pt",
         "results/logs/train_label2img.log", signal.SIGKILL),
    Case("train_autoencoder", "train-autoencoder", "results/stage_b/prior/autoencoder.pt",
         "results/logs/train_autoencoder.log", signal.SIGTERM),
    Case("finetune_mbm", "finetune-mbm", "results/stage_a/god/1/fmri_encoder.pth",
         "results/logs/finetune_mbm/god_1.log", signal.SIGKILL),
    Case("pretrain_mbm", "pretrain-mbm", "results/stage_a/pretrain/fmri_encoder.pth",
         "results/logs/pretrain_mbm.log", signal.SIGTERM),
    Case("train_judge", "train-judge", "results/judge/judge.pt", "results/logs/train_judge.log", signal.SIGTERM),
]


@pytest.fixture(scope="module")
def dag(tmp_path_factory) -> Path:
    """The micro DAG up to every training rule's output, with KILLABLE; the outputs copied to reference/."""
    workdir = copy_workflow(tmp_path_factory.mktemp("kill"))
    (workdir / OVERRIDE).write_text(KILLABLE)
    start = time.perf_counter()
    code, console = run_snakemake(workdir, "--cores", "2", *(c.output for c in CASES), name="dag",
                                  timeout=DAG_TIMEOUT)
    assert code == 0, console[-6000:]
    (workdir / "dag_seconds.txt").write_text(f"{time.perf_counter() - start:.1f}")
    for case in CASES:
        out = workdir / case.output
        assert not resume_path_for(out).exists(), f"{case.rule} left its resume file after success"
        shutil.copy2(out, _reference(workdir, case))
    return workdir


def _reference(workdir: Path, case: Case) -> Path:
    (workdir / "reference").mkdir(exist_ok=True)
    return workdir / "reference" / f"{case.rule}{Path(case.output).suffix}"


def _leaves(obj: Any, path: str = "") -> dict[str, Any]:
    """Every leaf of a nested checkpoint by its path: tensors, and plain values."""
    from mindvis.checkpoints.safe_load import ForeignConfig

    if isinstance(obj, ForeignConfig):  # finetuned.pt's config: MinD-Vis's pickled Config_Generative_Model
        return _leaves({"__class__": obj.class_name, **obj.fields}, path)
    if isinstance(obj, dict):
        return {k: v for key, value in obj.items() for k, v in _leaves(value, f"{path}/{key}").items()}
    if isinstance(obj, (list, tuple)) and any(isinstance(v, (dict, list, tuple, torch.Tensor)) for v in obj):
        return {k: v for i, value in enumerate(obj) for k, v in _leaves(value, f"{path}[{i}]").items()}
    return {path: obj}


def assert_same_checkpoint(got_path: Path, want_path: Path) -> int:
    """Bit-equal tensors and equal plain values (wall-clock figures aside); returns the tensor count."""
    from mindvis.checkpoints.safe_load import safe_load

    got = _leaves(safe_load(got_path))
    want = _leaves(safe_load(want_path))
    assert got.keys() == want.keys()
    n_tensors = 0
    for key, value in want.items():
        if isinstance(value, torch.Tensor):
            n_tensors += 1
            assert isinstance(got[key], torch.Tensor) and got[key].dtype == value.dtype, key
            assert torch.equal(got[key], value), f"{key} differs from the uninterrupted run's"
        elif key.rsplit("/", 1)[-1] not in WALL_CLOCK_KEYS:
            assert got[key] == value, f"{key}: {got[key]!r} != {value!r}"
    return n_tensors


# -- the background run and its job --------------------------------------------------------------
def _job_process(root: psutil.Process, command: str) -> psutil.Process | None:
    """The `python -m mindvis <command>` process under Snakemake (not the shell whose -c text names it)."""
    for child in root.children(recursive=True):
        try:
            argv = child.cmdline()
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
        if len(argv) >= 4 and Path(argv[0]).name.startswith("python") and argv[1:4] == ["-m", "mindvis", command]:
            return child
    return None


def _wait_until(ready, proc, what: str, timeout: float = SNAKEMAKE_TIMEOUT):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = ready()
        if value:
            return value
        assert proc.poll() is None, f"Snakemake ended (exit {proc.returncode}) before {what}"
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


class _ResumeState:
    """Polled: true once the resume file holds a state `ready(state)` accepts (read only when replaced)."""

    def __init__(self, path: Path, ready):
        self.path, self.ready, self.seen = path, ready, None

    def __call__(self) -> bool:
        try:
            stamp = self.path.stat().st_mtime_ns
        except FileNotFoundError:
            return False
        if stamp == self.seen:
            return False
        self.seen = stamp
        try:  # written by os.replace: a complete file or an older complete file, never a partial one
            return bool(self.ready(torch.load(self.path, weights_only=True)))
        except FileNotFoundError:
            return False


def _end_group(proc) -> None:
    """Kill what this test started if it is still running: Snakemake's jobs (by pid), then its own group."""
    if proc.poll() is not None:
        return
    try:
        jobs = psutil.Process(proc.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        jobs = []
    for job in jobs:
        try:
            job.kill()
        except psutil.NoSuchProcess:
            pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # Snakemake was started in a session of its own
    except ProcessLookupError:
        pass
    proc.wait(timeout=timeouts.PROCESS_EXIT)


def run_snakemake(workdir: Path, *args: str, name: str, timeout: float = SNAKEMAKE_TIMEOUT) -> tuple[int, str]:
    """Snakemake with KILLABLE, to the end or `timeout` (then everything it started is killed)."""
    console = workdir / f"snakemake_{name}.out"
    proc = start_snakemake(workdir, *args, configfiles=(OVERRIDE,), output=console)
    try:
        code = proc.wait(timeout=timeout)
    finally:
        _end_group(proc)
    return code, console.read_text()


def kill_mid_run(workdir: Path, case: Case, epochs_done: int = 0) -> tuple[int, str]:
    """Run the case's target in the background and signal its job once it has made progress.

    Progress: a `<out>.resume.pt` past step 0 and holding `epochs_done` finished epochs.
    Returns Snakemake's exit code and its console output.
    """
    out = workdir / case.output
    console = workdir / f"snakemake_{case.rule}_killed.out"
    proc = start_snakemake(workdir, "--cores", "2", case.output, configfiles=(OVERRIDE,), output=console)
    try:
        job = _wait_until(lambda: _job_process(psutil.Process(proc.pid), case.command), proc,
                          f"{case.rule}'s job started")
        ready = _ResumeState(resume_path_for(out), lambda s: s["step"] > 0 and len(s["history"]) >= epochs_done)
        _wait_until(ready, proc, f"{case.rule}'s checkpoint after {epochs_done} epoch(s)")
        assert not out.exists(), f"{case.rule} finished before it could be killed: lengthen KILLABLE"
        try:
            job.send_signal(case.sig)
        except psutil.NoSuchProcess:
            pytest.fail(f"{case.rule}'s job ended before it could be signalled: lengthen KILLABLE")
        code = proc.wait(timeout=SNAKEMAKE_TIMEOUT)
    finally:
        _end_group(proc)
    return code, console.read_text()


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c.rule}-{c.sig.name}")
def test_killed_training_rule_reruns_to_the_uninterrupted_model(dag, case):
    out = dag / case.output
    resume = resume_path_for(out)
    out.unlink()
    (dag / case.log).unlink()  # every line read below comes from this test's runs
    assert not resume.exists()
    started = time.perf_counter()
    best_epoch, restore_tested = 0, case.after_best_epoch
    if case.after_best_epoch:
        from mindvis.checkpoints.safe_load import safe_load  # finetuned.pt's config is a pickled Config_Generative_Model

        config = safe_load(_reference(dag, case))["config"]
        config = config if isinstance(config, dict) else getattr(config, "fields", None) or vars(config)
        best_epoch = config["mindvis"]["selected_epoch"]
        if best_epoch == config["num_epoch"]:  # nothing after the best: the best-state restore goes untested
            warnings.warn(f"{case.rule}: the last epoch is the best; tune KILLABLE's lr so an earlier one is")
            best_epoch, restore_tested = 1, False

    code, console = kill_mid_run(dag, case, epochs_done=best_epoch)
    log = (dag / case.log).read_text()
    assert code != 0, console[-3000:]
    # nothing looks complete: no output, nor any file named like it but the resume state
    assert not out.exists()
    # (Snakemake removes a failed job's outputs, and their folder when that leaves it empty)
    named_like = {p.name for p in out.parent.glob(f"{out.name}*")} if out.parent.is_dir() else set()
    assert named_like <= {resume.name, hash_cache_path_for(out).name}  # resume state: the file and its input hashes
    if case.sig == signal.SIGTERM:
        # 143: the trainers' own exit code after saving
        assert "exit status 143" in console, console[-3000:]
    state = torch.load(resume, weights_only=True)
    saved = int(state["step"])
    if restore_tested:  # killed after the reference's best epoch: its state must survive the kill
        assert state["best"]["epoch"] == best_epoch and len(state["history"]) >= best_epoch
    if case.sig == signal.SIGTERM:
        # the handler finished the current step, saved it and said so
        stopped = STOPPED.search(log)
        assert stopped, log[-3000:]
        assert int(stopped.group(1)) == saved
        assert not list(out.parent.glob(f".{resume.name}.*"))  # no half-written state left behind
    else:
        assert saved % 2 == 0  # SIGKILL: the last periodic checkpoint (every 2 steps)
    assert saved > 0

    code, console = run_snakemake(dag, "--cores", "2", "--rerun-incomplete", case.output, name=f"{case.rule}_rerun")
    assert code == 0, console[-3000:]
    log = (dag / case.log).read_text()
    resumed = RESUMED.search(log)
    assert resumed, log[-3000:]
    step, total = int(resumed.group(1)), int(resumed.group(2))
    assert step == saved and 0 < step < total
    assert not resume.exists()  # removed once the output is written
    n_tensors = assert_same_checkpoint(out, _reference(dag, case))
    assert n_tensors > 0
    print(f"{case.rule}: {case.sig.name}, {n_tensors} tensors equal, {time.perf_counter() - started:.1f} s")
