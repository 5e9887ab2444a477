"""The full-size rehearsal (config/rehearsal.yaml) and its benchmark (benchmarks/paper_rehearsal.py).

- the overlay is a valid config whose sizes are the paper's (worked out by hand below);
- the simulator extension it needs: BOLD5000 takes more test images than the stimulus set holds;
- the FLOP and cost arithmetic of the benchmark (hand-computed);
- the micro rehearsal (tests/data/rehearsal_micro.yaml on top of it: the same rules and code
  paths at tiny sizes) through the benchmark script, end to end.
"""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from snakemake.utils import validate

import timeouts
from mindvis.config import load_section

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = ROOT / "workflow" / "schemas" / "config.schema.yaml"
MICRO = ROOT / "tests" / "data" / "rehearsal_micro.yaml"
sys.path.insert(0, str(ROOT / "benchmarks"))


def merged(*files: Path) -> dict:
    """config.yaml, then each overlay, merged key by key as Snakemake merges --configfile files."""
    def deep_update(base: dict, extra: dict) -> None:
        for key, value in extra.items():
            if isinstance(value, dict) and isinstance(base.get(key), dict):
                deep_update(base[key], value)
            else:
                base[key] = copy.deepcopy(value)

    config = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    for path in files:
        deep_update(config, yaml.safe_load(path.read_text()))
    validate(config, str(SCHEMA), set_default=True)
    return config


def test_rehearsal_overlay_has_the_paper_sizes():
    from mindvis.evaluation import EvaluateConfig
    from mindvis.evaluation.judge_training import JudgeTrainConfig
    from mindvis.generation import GenerateConfig
    from mindvis.evaluation.sampler_comparison import SamplerComparisonConfig
    from mindvis.simulate.bold5000 import Bold5000SimConfig
    from mindvis.simulate.god import GodSimConfig
    from mindvis.simulate.hcp import HcpSimConfig
    from mindvis.training.stage_a2 import FinetuneConfig
    from mindvis.training.autoencoder import AutoencoderConfig
    from mindvis.training.label2img import Label2ImgConfig
    from mindvis.training.stage_b import FinetuneLdmConfig

    c = merged(ROOT / "config" / "rehearsal.yaml")
    # every section a rule hands to its command loads into the command's dataclass
    god = load_section(GodSimConfig, json.dumps(c["god"]["simulate"]))
    b5 = load_section(Bold5000SimConfig, json.dumps(c["bold5000"]["simulate"]))
    hcp = load_section(HcpSimConfig, json.dumps(c["hcp"]["simulate"]))
    a2 = load_section(FinetuneConfig, json.dumps(c["stage_a"]["finetune"]))
    sb = c["stage_b"]
    ae = load_section(AutoencoderConfig, json.dumps({**sb["autoencoder"], "model": sb["model"]}))
    l2i = load_section(Label2ImgConfig, json.dumps({**sb["label2img"], "model": sb["model"]}))
    ft = load_section(FinetuneLdmConfig, json.dumps(sb["finetune"]))
    gen = load_section(GenerateConfig, json.dumps(sb["generate"]))
    judge = load_section(JudgeTrainConfig, json.dumps(c["judge"]))
    load_section(EvaluateConfig, json.dumps(c["evaluate"]))
    samplers = load_section(SamplerComparisonConfig, json.dumps(
        {k: v for k, v in c["report"]["samplers"].items() if k not in ("enabled", "dataset", "subject")}))

    # GOD: 10 classes x 120 training images shown once; 10 x 5 test images x 35 repeats; VC = the seven ROIs
    stim = c["stimuli"]
    assert 10 * stim["train_per_class"] == 1200 and 10 * stim["test_per_class"] * god.test_repeats == 1750
    assert 1050 + 950 + 800 + 500 + 650 + 400 + 300 == sum(god.rois.values()) == 4650
    assert stim["image_size"] == c["god"]["images"]["size"] == 256
    # BOLD5000 CSI1: 7 sessions of 10 runs + 8 of 9 = 142 runs of 37 trials = 5254 trials; 113 x 4 test
    runs = sum(b5.runs_per_session[s % len(b5.runs_per_session)] for s in range(b5.n_sessions))
    assert runs == 7 * 10 + 8 * 9 == 142
    assert runs * b5.trials_per_run - b5.n_test_images * b5.test_repeats == 5254 - 452 == 4802
    assert sum(b5.roi_voxels.values()) == 500 + 480 + 300 + 250 + 155 == 1685 and b5.n_test_images == 113
    # HCP: the full cortex (59,412 vertices) + subcortical voxels (31,870) = 91,282 grayordinates, 1200 frames
    assert (hcp.cortex, hcp.subcortical, hcp.n_frames) == ("full", True, 1200) and len(c["hcp"]["subjects"]) == 2
    # the paper presets, and a few steps per training rule
    assert c["stage_a"]["model"]["preset"] == sb["model"]["preset"] == "paper"
    assert c["stage_a"]["pretrain"]["batch_size"] == 100 and a2.batch_size == 16 and ft.batch_size == 5
    caps = [c["stage_a"]["pretrain"]["max_steps"], a2.max_steps, ae.max_steps, l2i.max_steps, ft.max_steps,
            judge.max_steps]
    assert all(cap is not None and 1 <= cap <= 20 for cap in caps)
    # 2 test items with DPM-Solver++-25 (generate) and with PLMS-250 + DPM-Solver++-25 (the comparison)
    assert (gen.sampler, gen.steps, gen.max_items) == ("dpmpp", 25, 2)
    assert samplers.samplers == ["plms:250", "dpmpp:25"] and samplers.items == 2 and c["report"]["samplers"]["enabled"]


def test_micro_overlay_keeps_the_rehearsal_paths():
    c = merged(ROOT / "config" / "rehearsal.yaml", MICRO)
    assert c["stage_a"]["model"]["preset"] == c["stage_b"]["model"]["preset"] == "paper"
    assert c["hcp"]["simulate"]["cortex"] == "full" and c["hcp"]["simulate"]["subcortical"]
    assert c["bold5000"]["simulate"]["n_test_images"] > 10 * c["stimuli"]["test_per_class"]  # borrowing
    assert c["report"]["samplers"]["samplers"] == ["plms:250", "dpmpp:25"]
    assert c["stage_b"]["finetune"]["max_steps"] == 2 and c["stage_a"]["pretrain"]["max_steps"] == 2


def _tiny_stimuli(path: Path) -> Path:
    """12 training + 4 test images of 16 px in 3 classes, as make-stimuli writes them."""
    from mindvis.utils.atomic import save_npz

    rng = np.random.default_rng(0)
    train_y, test_y = np.arange(12) % 3, np.arange(4) % 3
    save_npz(path, train_images=rng.integers(0, 256, size=(12, 16, 16, 3), dtype=np.uint8),
             test_images=rng.integers(0, 256, size=(4, 16, 16, 3), dtype=np.uint8),
             train_labels=train_y, test_labels=test_y,
             train_ids=9_000_000 + train_y + (np.arange(12) + 1) / 1e6,
             test_ids=9_000_000 + test_y + (np.arange(4) + 101) / 1e6,
             class_names=np.array(["zero", "one", "two"]))
    return path


def test_bold5000_takes_missing_test_images_from_the_training_images(tmp_path):
    from mindvis.preprocess.bold5000 import Bold5000PreprocessConfig, preprocess_bold5000_subject
    from mindvis.preprocess.bold5000_lists import read_name_list
    from mindvis.simulate.bold5000 import Bold5000SimConfig, simulate_bold5000

    stimuli = _tiny_stimuli(tmp_path / "stimuli.npz")
    cfg = Bold5000SimConfig(roi_voxels=dict.fromkeys(["EarlyVis", "LOC", "OPA", "PPA", "RSC"], 8), grid=[10, 12, 10],
                            n_sessions=2, runs_per_session=[2, 1], trials_per_run=10, n_test_images=6, test_repeats=2,
                            partial_subject=0, partial_sessions=1, seed=3)
    raw = tmp_path / "raw"
    simulate_bold5000(stimuli, 1, raw, cfg)
    repeated = read_name_list(raw / "BOLD5000_Stimuli" / "Scene_Stimuli" / "repeated_stimuli_113_list.txt")
    # 4 stimulus test images (ids ...000101-...000104: file index 101-104) + 2 training images (index 1-12)
    indices = sorted(int(name.split("_")[1].split(".")[0]) for name in repeated)
    assert len(repeated) == 6 and indices[2:] == [101, 102, 103, 104] and all(1 <= i <= 12 for i in indices[:2])
    # 3 runs x 10 trials = 30 trials: 6 test images x 2 repeats = 12 test trials, 18 training trials
    preprocess_bold5000_subject(raw, 1, tmp_path / "out", Bold5000PreprocessConfig(image_size=16))
    with np.load(tmp_path / "out" / "npz" / "CSI1.npz") as z:
        assert z["arr_2"].shape[0] == 6 and z["arr_1"].shape[0] == 12 and z["arr_0"].shape[0] == 18
        assert set(z["test_image_names"]) == set(repeated)
        assert not set(z["train_image_names"]) & set(repeated)  # a borrowed image is never a training trial


def test_flops_scale_with_batch_and_sampler_evaluations():
    import torch

    import paper_workloads as w

    torch.manual_seed(0)
    mbm = w.build_mbm("smoke", "cpu")
    one, three = (w.count_flops(w.a1_step(mbm, b, "cpu")) for b in (1, 3))
    assert one > 0 and three == 3 * one  # the benchmark scales batch-1 counts to the paper's batches
    model = w.build_stage_b("smoke", "cpu")
    one, two = (w.count_flops(w.sampler_step(model, b, "cpu")) for b in (1, 2))
    assert two == 2 * one
    # PLMS (PNDM without Runge-Kutta warm-up) repeats its first step: 250 + 1 UNet evaluations
    assert w.model_evaluations("plms", 250) == 251 and w.model_evaluations("dpmpp", 25) == 25


def test_cost_table_arithmetic():
    import paper_rehearsal as bench

    f = {"sc_mbm_sample": 1e9, "stage_b_item": 2e9, "sampler_step_image": 3e9, "condition_image": 1e8,
         "decode_image": 5e8, "plms250_evaluations": 251, "dpmpp25_evaluations": 25}
    stages = {name: total for name, total, _ in bench.paper_run(f)}
    assert stages["A1 pre-training"] == pytest.approx(500 * 136_000 * 1e9)
    assert stages["A2 fine-tuning, 1 GOD subject"] == pytest.approx(15 * 1200 * 1e9)
    assert stages["stage B, 1 GOD subject"] == pytest.approx(500 * 1200 * 2e9)
    plms_image = 251 * 3e9 + 1e8 + 5e8
    assert stages["generation PLMS-250, 1 subject"] == pytest.approx(250 * plms_image)
    rows = bench.print_cost_table(f, 0.4, None)
    # A1 on an A100 at 40 % of 312 TFLOP/s: 6.8e16 / 1.248e14 / 3600 = 0.1514 h
    assert rows[0]["hours_A100"] == pytest.approx(6.8e16 / (312e12 * 0.4) / 3600)
    assert rows[0]["hours_H100 SXM"] == pytest.approx(6.8e16 / (989e12 * 0.4) / 3600)


def test_loop_seconds_from_a_training_summary():
    import paper_rehearsal as bench

    # 7 steps, 5 per epoch, batch 4: epoch 1 = 5 steps at 10 samples/s (2 s), epoch 2 = 2 steps at 4/s (2 s)
    summary = {"steps": 7, "steps_per_epoch": 5, "global_batch": 4,
               "history": [{"epoch": 0}, {"epoch": 1, "samples_per_s": 10.0}, {"epoch": 2, "samples_per_s": 4.0}]}
    assert bench.loop_seconds(summary) == (7, pytest.approx(2.0 + 2.0))
    assert bench.loop_seconds({"steps": 20, "train_seconds": 3.0}) == (20, 3.0)


@pytest.mark.integration
@pytest.mark.slow
def test_micro_rehearsal_runs_every_rule_through_the_benchmark(tmp_path):
    out = tmp_path / "figures.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "paper_rehearsal.py"), "--configfile", str(MICRO), "--skip-flops",
         "--keep", "--workdir", str(tmp_path / "work"), "--json", str(out)],
        capture_output=True, text=True, timeout=timeouts.DAG_RUN)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    figures = json.loads(out.read_text())
    jobs = {row["job"]: row for row in figures["jobs"]}
    rules = {row["rule"] for row in figures["jobs"]}
    assert rules >= {"make_stimuli", "simulate_god", "simulate_bold5000", "simulate_hcp", "preprocess_god",
                     "preprocess_god_images", "preprocess_bold5000", "preprocess_hcp", "pretrain_mbm", "finetune_mbm",
                     "train_autoencoder", "train_label2img", "finetune_ldm", "generate", "compare_samplers",
                     "train_judge", "evaluate", "report"}
    # every training rule stopped at its max_steps (rehearsal.yaml; the micro overlay's judge: 5)
    steps = {"pretrain_mbm": 2, "finetune_mbm[dataset=god,subject=1]": 3, "train_autoencoder": 2,
             "train_label2img": 2, "finetune_ldm[dataset=god,subject=1]": 2,
             "finetune_ldm[dataset=bold5000,subject=1]": 2, "train_judge": 5}
    for job, expected in steps.items():
        assert jobs[job]["steps"] == expected, (job, jobs[job])
        assert jobs[job]["s_per_step"] > 0 and jobs[job]["peak_rss_gb"] > 0.05
    assert jobs["finetune_ldm[dataset=god,subject=1]"]["output_mb"] > 0
    work = tmp_path / "work"
    table = json.loads((work / "results" / "samplers" / "sampler_comparison.json").read_text())
    assert [(r["sampler"], r["steps"]) for r in table["rows"]] == [("plms", 250), ("dpmpp", 25)] and table["items"] == 2
    with np.load(work / "results" / "samples" / "god" / "1" / "samples.npz") as z:
        assert z["samples"].shape == (2, 1, 32, 32, 3)
    with np.load(work / "data" / "HCP" / "npz" / "sim01" / "HCP_visual_voxel.npz") as z:
        assert [z[a].shape[1] for a in ("V1", "V2", "V3", "V4")] == [1618, 1220, 684, 661]  # found on the full axis
    with np.load(work / "data" / "BOLD5000" / "npz" / "CSI1.npz") as z:
        assert z["arr_2"].shape[0] == 13  # 10 stimulus test images + 3 borrowed
    from mindvis.checkpoints.mindvis_ldm import load_finetuned

    spec = load_finetuned(work / "results" / "stage_b" / "god" / "1" / "finetuned.pt").model.spec
    assert spec.unet.channel_mult == (1, 2, 3, 5) and spec.unet.attention_resolutions == (8, 4, 2)
    assert spec.vq.ch_mult == (1, 2, 4)  # VQ-f4
