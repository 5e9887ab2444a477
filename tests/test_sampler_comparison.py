"""compare-samplers at micro size: row order and counts, same seeded noise as `generate`, speed-up,
identification and exact n-way by hand, the ROI of the training run, the report reading the JSON,
config errors naming the bad entry, and the benchmark wrapper."""

from __future__ import annotations

import importlib.util
import json
import math
import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from cli_factory import run_cli  # the shared in-process CLI runner (tests/cli_factory.py)
from ldm_factory import ENC, MICRO, N_CLASSES, N_TEST, N_TOKENS, write_tiny_god

from mindvis.checkpoints.mindvis_ldm import finetuned_config, save_finetuned
from mindvis.evaluation.identification import pairwise_pixel_identification
from mindvis.evaluation.judge_training import JudgeTrainConfig, save_judge, train_judge
from mindvis.evaluation.judges import load_small_cnn_judge
from mindvis.evaluation.report import read_sampler_table, sampler_section
from mindvis.generation import GenerateConfig, generate_samples
from mindvis.evaluation.sampler_comparison import (
    SamplerComparisonConfig,
    compare_samplers,
    format_table,
    metric_names,
    parse_sampler_specs,
)
from mindvis.models.ldm.dc_ldm import build_fmri_ldm
from mindvis.utils.errors import ConfigError, InputDataError

REPO_ROOT = Path(__file__).resolve().parents[1]
K, SEED, BATCH = 2, 7, 8  # BATCH = N_TEST * K: every sampler denoises the same single batch
# unguided, all test items: the guided comparison is a test of its own
CFG = SamplerComparisonConfig(samplers=["ddim:3", "dpmpp:2", "ddim:3"], n_samples=K, seed=SEED, batch_size=BATCH,
                              n_way=5, device="cpu", threads=1, guidance_scale=1.0, items=0)


# tiny models: one thread is fastest, and keeps timings steady on shared cores
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _jittered(module: torch.nn.Module, scale: float = 0.5, seed: int = 3) -> torch.nn.Module:
    """Seeded noise on every weight. A freshly built model's samples hardly depend on the fMRI, so every
    sample ranks the ground truths alike and identification sits at exactly 0.5 for any sampler; jittered
    weights make the rows differ, so the equalities below cannot hold by accident."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(scale * torch.randn(p.shape, generator=gen))
    return module


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Tiny GOD subject, a micro stage B model saved as finetuned.pt twice (training ROI unset / 'V1'),
    and a small-CNN judge trained on the subject's training images (bar position = class)."""
    root = tmp_path_factory.mktemp("samplers")
    write_tiny_god(root, seed=0)
    torch.manual_seed(0)
    model = _jittered(build_fmri_ldm(MICRO, ENC, N_TOKENS)).eval()
    save_finetuned(root / "finetuned.pt", model, finetuned_config(model, {"roi": None}))
    save_finetuned(root / "finetuned_v1.pt", model, finetuned_config(model, {"roi": "V1"}))
    with np.load(root / "images_256.npz") as npz:
        train_images = npz["train_images"]
    judge, summary = train_judge(train_images, np.arange(len(train_images)) % N_CLASSES, ["a", "b", "c"],
                                 JudgeTrainConfig(epochs=30, width=4, image_size=16, batch_size=12))
    assert summary["train_accuracy"] == 1.0  # it tells the classes apart: n-way scores are informative
    save_judge(judge, 4, root / "judge.pt")
    return root


@pytest.fixture(scope="module")
def result(files):
    return compare_samplers(files / "finetuned.pt", files / "sbj_1.npz", files / "images_256.npz", "god", CFG,
                            judge_path=files / "judge.pt")


def _exact_nway_by_hand(gen_probs: np.ndarray, gt_probs: np.ndarray, n: int) -> float:
    """Mean over images and sets of C(C-1-r, n-1) / C(C-1, n-1), r = classes at least as likely as the GT class."""
    c = gt_probs.shape[1]
    hits = []
    for i, g in enumerate(gt_probs.argmax(axis=1)):
        for k in range(gen_probs.shape[1]):
            r = int((np.delete(gen_probs[i, k], g) >= gen_probs[i, k, g]).sum())
            hits.append(math.comb(c - 1 - r, n - 1) / math.comb(c - 1, n - 1) if c - 1 - r >= n - 1 else 0.0)
    return float(np.mean(hits))


def test_rows_follow_the_config_and_match_generate_by_hand(files, result, tmp_path):
    rows = result["rows"]
    assert [(r["sampler"], r["steps"]) for r in rows] == [("ddim", 3), ("dpmpp", 2), ("ddim", 3)]
    assert result["items"] == N_TEST and result["n_samples"] == K and result["device"] == "cpu"
    assert all(r["images"] == N_TEST * K for r in rows)
    assert result["roi"] is None  # the training run had none: the dataset's default (GOD: VC)
    assert result["n_way"] == N_CLASSES and result["judge_classes"] == N_CLASSES  # 5-way clipped to 3 classes
    # speed-up: the first row is the baseline
    assert rows[0]["speedup"] == 1.0
    for r in rows:
        assert r["seconds_per_image"] > 0
        assert r["speedup"] == pytest.approx(rows[0]["seconds_per_image"] / r["seconds_per_image"])
    # the same sampler twice: the same seeded noise, so the same images and metrics (while another differs)
    assert (rows[0]["identification_pcc"], rows[0]["nway_top1_exact"]) != (rows[1]["identification_pcc"],
                                                                            rows[1]["nway_top1_exact"])
    assert rows[2]["identification_pcc"] == rows[0]["identification_pcc"]
    assert rows[2]["nway_top1_exact"] == rows[0]["nway_top1_exact"]
    # DPM-Solver++ row = what `generate` writes with the same seed, scored by hand
    out = tmp_path / "samples.npz"
    generate_samples(files / "finetuned.pt", files / "sbj_1.npz", out, None,
                     GenerateConfig(sampler="dpmpp", steps=2, n_samples=K, seed=SEED, batch_size=BATCH, device="cpu",
                                    guidance_scale=1.0),
                     images=files / "images_256.npz")
    with np.load(out) as npz:
        samples, gt = npz["samples"], npz["ground_truth"]
    pcc = np.mean([pairwise_pixel_identification(samples[:, k], gt, with_ssim=False)["identification_pcc"]
                   for k in range(K)])
    assert rows[1]["identification_pcc"] == pytest.approx(pcc, abs=1e-12)
    judge = load_small_cnn_judge(files / "judge.pt")
    gt_probs, _ = judge.run(gt)
    gen_probs = judge.run(samples.reshape(-1, *samples.shape[2:]))[0].reshape(N_TEST, K, -1)
    assert rows[1]["nway_top1_exact"] == pytest.approx(_exact_nway_by_hand(gen_probs, gt_probs, N_CLASSES), abs=1e-12)
    assert 0.0 <= rows[1]["nway_top1_exact"] <= 1.0
    # the printed table: one line per row, speed-up column, n-way header with the n used
    table = format_table(result).splitlines()
    assert "speed-up" in table[1] and "3-way top-1" in table[1] and len(table) == 2 + len(rows)
    assert table[2].split()[:2] == ["ddim", "3"] and table[2].split()[3] == "1.0x"


def test_roi_defaults_to_the_training_runs(files):
    small = replace(CFG, samplers=["ddim:1"], items=2, n_samples=1)
    # this checkpoint was trained on 'V1', which the tiny npz has no mask for: the ROI comes from the checkpoint
    with pytest.raises(InputDataError, match="no ROI mask 'V1'"):
        compare_samplers(files / "finetuned_v1.pt", files / "sbj_1.npz", files / "images_256.npz", "god", small)
    named = compare_samplers(files / "finetuned_v1.pt", files / "sbj_1.npz", files / "images_256.npz", "god",
                             replace(small, roi="VC"))
    assert named["roi"] == "VC" and named["items"] == 2 and named["rows"][0]["images"] == 2
    assert "nway_top1_exact" not in named["rows"][0] and "n_way" not in named  # no judge, no n-way column


def test_cli_writes_the_sampler_table_the_report_reads(files, result, tmp_path):
    out = tmp_path / "tables" / "samplers.json"
    config = json.dumps({"samplers": CFG.samplers, "n_samples": K, "seed": SEED, "batch_size": BATCH,
                         "device": "cpu", "guidance_scale": CFG.guidance_scale, "items": CFG.items})
    code = run_cli("compare-samplers", "mindvis.evaluation.cli_compare_samplers", [
        "--model", str(files / "finetuned.pt"), "--npz", str(files / "sbj_1.npz"), "--images",
        str(files / "images_256.npz"), "--judge", str(files / "judge.pt"), "--out", str(out), "--config", config,
        "--no-tracking"])
    assert code == 0 and list(out.parent.iterdir()) == [out]  # written atomically: no temp file left
    doc = json.loads(out.read_text())
    assert doc["dataset"] == "god" and doc["subject"] == "1" and doc["n_way"] == N_CLASSES
    rows = read_sampler_table(out)
    assert [(r["sampler"], r["steps"]) for r in rows] == [("ddim", 3), ("dpmpp", 2), ("ddim", 3)]
    for mine, lib in zip(rows, result["rows"]):  # the same config through the CLI: the same numbers
        assert mine["identification_pcc"] == lib["identification_pcc"]
        assert mine["nway_top1_exact"] == lib["nway_top1_exact"]
    html = sampler_section(rows)
    assert html.count("<tr>") == 1 + len(rows) and "identification_pcc" in html and "nway_top1_exact" in html
    assert metric_names(rows) == ["ddim-3", "dpmpp-2", "ddim-3_2"]  # MLflow keys stay distinct


@pytest.mark.parametrize("spec", ["ddim", "ddim:fifty", "euler:10", "ddim:0", "ddim:-2", ":25"])
def test_malformed_sampler_spec_is_a_config_error_naming_it(spec):
    with pytest.raises(ConfigError, match=re.escape(repr(spec))):
        parse_sampler_specs(["plms:250", spec])


def test_config_is_checked_before_the_model_is_read(files, tmp_path, capsys):
    missing = tmp_path / "nowhere.pt"  # never opened: the config fails first
    with pytest.raises(ConfigError, match="'dpmpp-25'"):
        compare_samplers(missing, files / "sbj_1.npz", None, "god", replace(CFG, samplers=["dpmpp-25"]))
    with pytest.raises(ConfigError, match="empty"):
        compare_samplers(missing, files / "sbj_1.npz", None, "god", replace(CFG, samplers=[]))
    with pytest.raises(ConfigError, match="at least 2"):
        compare_samplers(missing, files / "sbj_1.npz", None, "god", replace(CFG, items=1))
    with pytest.raises(ConfigError, match="ddim:2000: more steps than the model's 1000"):  # known once loaded
        compare_samplers(files / "finetuned.pt", files / "sbj_1.npz", files / "images_256.npz", "god",
                         replace(CFG, samplers=["ddim:2", "ddim:2000"]))
    assert parse_sampler_specs(SamplerComparisonConfig().samplers) == [("plms", 250), ("ddim", 50), ("dpmpp", 25)]
    code = run_cli("compare-samplers", "mindvis.evaluation.cli_compare_samplers", [
        "--model", str(missing), "--npz", str(files / "sbj_1.npz"), "--out", str(tmp_path / "s.json"),
        "--set", "samplers=[ddim:2,ddim:two]", "--no-tracking"])
    assert code == 2 and "'ddim:two'" in capsys.readouterr().err and not (tmp_path / "s.json").exists()


def test_benchmark_wrapper_prints_the_table_and_writes_json(files, tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("bench_samplers", REPO_ROOT / "benchmarks" / "bench_samplers.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = tmp_path / "bench.json"
    code = bench.main(["--model", str(files / "finetuned.pt"), "--npz", str(files / "sbj_1.npz"), "--images",
                       str(files / "images_256.npz"), "--samplers", "ddim:2,dpmpp:2", "--items", "3", "--k", "1",
                       "--device", "cpu", "--json", str(out), "--repeats", "3", "--guidance", "2"])
    printed = capsys.readouterr().out.splitlines()
    assert code == 0
    header = next(i for i, line in enumerate(printed) if "speed-up" in line)
    assert [line.split()[:2] for line in printed[header + 1:header + 3]] == [["ddim", "2"], ["dpmpp", "2"]]
    assert printed[header + 1].split()[3] == "1.0x" and "median of 3 run(s)" in "\n".join(printed)
    rows = read_sampler_table(out)
    written = json.loads(out.read_text())
    assert [r["images"] for r in rows] == [3, 3] and written["items"] == 3 and written["guidance_scale"] == 2.0
    for row in written["rows"]:  # the reported time is the median of the three runs
        assert len(row["seconds_per_image_runs"]) == 3
        assert row["seconds_per_image"] == sorted(row["seconds_per_image_runs"])[1]
    assert written["rows"][1]["speedup"] == pytest.approx(
        written["rows"][0]["seconds_per_image"] / written["rows"][1]["seconds_per_image"])


def test_guidance_reaches_every_sampler_as_in_generate(files, result, tmp_path):
    guided = compare_samplers(files / "finetuned.pt", files / "sbj_1.npz", files / "images_256.npz", "god",
                              replace(CFG, samplers=["dpmpp:2"], guidance_scale=3.0))
    assert guided["guidance_scale"] == 3.0 and "guidance 3" in format_table(guided).splitlines()[0]
    out = tmp_path / "samples.npz"
    generate_samples(files / "finetuned.pt", files / "sbj_1.npz", out, None,
                     GenerateConfig(sampler="dpmpp", steps=2, n_samples=K, seed=SEED, batch_size=BATCH, device="cpu",
                                    guidance_scale=3.0), images=files / "images_256.npz")
    with np.load(out) as npz:
        samples, gt = npz["samples"], npz["ground_truth"]
    pcc = np.mean([pairwise_pixel_identification(samples[:, k], gt, with_ssim=False)["identification_pcc"]
                   for k in range(K)])
    assert guided["rows"][0]["identification_pcc"] == pytest.approx(pcc, abs=1e-12)
    assert guided["rows"][0]["identification_pcc"] != result["rows"][1]["identification_pcc"]  # unguided dpmpp:2
