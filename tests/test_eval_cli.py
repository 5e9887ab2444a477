"""train-judge -> evaluate -> report through the command-line modules, on a tiny stimulus set."""

from __future__ import annotations

import json

import numpy as np
import pytest
from cli_factory import run_cli  # the shared in-process CLI runner (tests/cli_factory.py)
from PIL import Image

from mindvis.simulate.stimuli import StimuliConfig, build_stimuli, write_stimuli

N_WAY, TRIALS = 5, 200


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """A tiny stimulus set, a judge trained on it, and samples: set 0 = the ground truth, set 1 = shuffled."""
    d = tmp_path_factory.mktemp("eval")
    stim = build_stimuli(StimuliConfig(image_size=32, train_per_class=6, test_per_class=2, seed=0))
    write_stimuli(stim, d / "stim")
    code = run_cli("train-judge", "mindvis.evaluation.cli_train_judge", [
        "--stimuli", str(d / "stim" / "stimuli.npz"), "--out", str(d / "judge.pt"), "--no-tracking",
        "--config", "{epochs: 10, width: 8, image_size: 16, batch_size: 30}",
    ])
    assert code == 0 and (d / "judge.pt").is_file()
    gt = stim.test_images
    samples = np.stack([gt, np.roll(gt, 3, axis=0)], axis=1)
    np.savez(d / "samples.npz", samples=samples, ground_truth=gt, test_labels=stim.test_labels)
    return d


def _evaluate(d, out, *extra, tracking=False):
    argv = ["--samples", str(d / "samples.npz"), "--judge", str(d / "judge.pt"), "--out", str(out),
            "--set", f"n_way={N_WAY}", "--set", f"trials={TRIALS}", "--wildcard", "dataset=god",
            "--wildcard", "subject=1", *extra]
    return run_cli("evaluate", "mindvis.evaluation.cli_evaluate", argv + ([] if tracking else ["--no-tracking"]))


def test_evaluate_writes_every_metric_with_its_definition(workdir):
    out = workdir / "m1" / "metrics.json"
    assert _evaluate(workdir, out, "--grid-out", str(workdir / "m1" / "grid.png"), tracking=True) == 0
    doc = json.loads(out.read_text())
    assert (doc["dataset"], doc["subject"], doc["n_test"], doc["k_samples"]) == ("god", "1", 20, 2)
    m = doc["metrics"]
    for rec in m.values():
        assert rec["definition"] and "value" in rec and "chance" in rec
    exact, sampled = m["nway_top1_exact"], m["nway_top1_sampled"]
    assert (exact["n"], exact["trials"], exact["chance"]) == (N_WAY, TRIALS, 1 / N_WAY)
    # Set 0 is the ground truth itself: its judge class always wins.
    assert exact["per_set"][0] == 1.0 and sampled["per_set"][0] == 1.0 and exact["best"] == 1.0
    assert exact["value"] == pytest.approx(np.mean(exact["per_set"]))
    for name in ("identification_mse", "identification_pcc", "identification_ssim", "nsd_two_way_judge"):
        assert m[name]["per_set"][0] == 1.0 and m[name]["chance"] == 0.5
    assert m["identification_mse"]["per_set"][1] < 0.7  # shuffled set
    assert m["pcc_raw_mean"]["per_set"][0] == pytest.approx(1.0)
    assert m["fid_judge_features"]["per_set"][0] == pytest.approx(0.0, abs=1e-6)
    assert "not comparable to Inception FID" in m["fid_judge_features"]["definition"]
    assert m["judge_gt_accuracy"]["chance"] == 0.1
    for name in ("identification_lpips", "fid_inception_2048", "fid_inception_64_reference", "nsd_two_way_clip",
                 "nsd_two_way_alexnet_2", "nsd_two_way_inception"):
        assert "not configured" in doc["skipped"][name]
    # Grid: 10 rows (evenly spaced test items) of ground truth | 2 samples, 32 px each, 2 px gaps.
    grid = np.asarray(Image.open(workdir / "m1" / "grid.png"))
    assert grid.shape == (10 * 32 + 11 * 2, 3 * 32 + 6 * 2, 3)
    np.testing.assert_array_equal(grid[2:34, 2:34], np.load(workdir / "samples.npz")["ground_truth"][0])

    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    run = client.search_runs([e.experiment_id for e in client.search_experiments()])[0]
    assert run.data.tags["protocol"] == "embedded-demo"
    assert run.data.metrics["nway_top1_exact"] == pytest.approx(exact["value"])
    assert run.data.metrics["identification_pcc.best"] == 1.0


def test_same_seed_same_numbers(workdir):
    a, b, c = (workdir / f"seed{i}.json" for i in range(3))
    assert _evaluate(workdir, a, "--set", "seed=3") == 0
    assert _evaluate(workdir, b, "--set", "seed=3") == 0
    assert _evaluate(workdir, c, "--set", "seed=4") == 0
    ma, mb, mc = (json.loads(p.read_text())["metrics"] for p in (a, b, c))
    assert ma == mb
    assert ma["nway_top1_exact"] == mc["nway_top1_exact"]  # the exact value has no sampling noise


def test_bad_inputs_exit_2_with_the_file_named(workdir, tmp_path, capsys):
    bad = tmp_path / "samples.npz"
    np.savez(bad, samples=np.zeros((4, 1, 8, 8, 3), np.uint8))
    code = run_cli("evaluate", "mindvis.evaluation.cli_evaluate",
                   ["--samples", str(bad), "--judge", str(workdir / "judge.pt"), "--out", str(tmp_path / "m.json"),
                    "--no-tracking"])
    assert code == 2 and f"{bad}: not a samples file: missing ground_truth" in capsys.readouterr().err
    trunc = tmp_path / "trunc.npz"
    trunc.write_bytes((workdir / "samples.npz").read_bytes()[:500])
    code = run_cli("evaluate", "mindvis.evaluation.cli_evaluate",
                   ["--samples", str(trunc), "--judge", str(workdir / "judge.pt"), "--out", str(tmp_path / "m.json"),
                    "--no-tracking"])
    assert code == 2 and f"{trunc}: cannot read npz" in capsys.readouterr().err
    floats = tmp_path / "floats.npz"
    np.savez(floats, samples=np.zeros((4, 1, 8, 8, 3)), ground_truth=np.zeros((4, 8, 8, 3), np.uint8))
    code = run_cli("evaluate", "mindvis.evaluation.cli_evaluate",
                   ["--samples", str(floats), "--judge", str(workdir / "judge.pt"), "--out", str(tmp_path / "m.json"),
                    "--no-tracking"])
    assert code == 2 and "samples must be uint8 (n_test, K, H, W, 3), got float64" in capsys.readouterr().err
    code = _evaluate(workdir, tmp_path / "m.json", "--set", "n_way=11")
    assert code == 2 and "n_way = 11 exceeds the judge's 10 classes" in capsys.readouterr().err
    code = run_cli("evaluate", "mindvis.evaluation.cli_evaluate",
                   ["--samples", str(workdir / "samples.npz"), "--judge", str(tmp_path / "none.pt"),
                    "--out", str(tmp_path / "m.json"), "--no-tracking"])
    assert code == 2 and "evaluate.judge_weights" in capsys.readouterr().err
    assert not (tmp_path / "m.json").exists()


def test_report_cli_over_evaluate_outputs(workdir):
    metrics = workdir / "m1" / "metrics.json"
    if not metrics.exists():
        assert _evaluate(workdir, metrics, "--grid-out", str(workdir / "m1" / "grid.png")) == 0
    out = workdir / "report.html"
    code = run_cli("report", "mindvis.evaluation.cli_report",
                   ["--metrics", str(metrics), "--grids", str(workdir / "m1" / "grid.png"), "--out", str(out),
                    "--no-tracking"])
    assert code == 0
    text = out.read_text()
    assert "GOD · subject 1" in text and "quoted, not measured here" in text
    assert text.count("data:image/png;base64,") == 1 and "https://" not in text


def test_grid_layout_and_downscale():
    from mindvis.utils.images import grid_image

    rng = np.random.default_rng(0)
    samples = rng.integers(0, 256, (7, 2, 32, 32, 3), dtype=np.uint8)
    gt = rng.integers(0, 256, (7, 32, 32, 3), dtype=np.uint8)
    g = grid_image(samples, gt, rows=3)  # items 0, 3, 6
    assert g.shape == (3 * 32 + 4 * 2, 3 * 32 + 6 * 2, 3)
    np.testing.assert_array_equal(g[36:68, 2:34], gt[3])  # row 1 = item 3: ground truth first
    np.testing.assert_array_equal(g[36:68, 40:72], samples[3, 0])  # after a 6 px gap, the samples
    np.testing.assert_array_equal(g[36:68, 74:106], samples[3, 1])
    small = grid_image(samples, gt, rows=3, cell_max=16)
    assert small.shape == (3 * 16 + 4 * 2, 3 * 16 + 6 * 2, 3)
