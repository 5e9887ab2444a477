"""Issue 15 sections 1-2: bootstrap intervals, permutation p-values, the derangement, train retrieval,
the nearest-training-copy share, the closed-form Fréchet distance, and (end to end, on a micro stage B
model) the controls and the spread over generation seeds in metrics.json. Expected values are worked
out here with numpy, never taken from the code under test."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import yaml

from conftest import REPO_ROOT
from mindvis.evaluation import EvaluateConfig
from mindvis.evaluation.controls import nearest_train_copy
from mindvis.evaluation.uncertainty import (
    Frechet,
    ItemMeans,
    NWayHits,
    PairScores,
    UncertaintyConfig,
    attach_uncertainty,
    bootstrap_indices,
    hit_table,
    multiplicities,
)
from mindvis.generation.controls import retrieve_training_items
from mindvis.utils.seeding import derangement
from mindvis.utils.errors import InputDataError

# ----------------------------------------------------------------------------- bootstrap


def _binomial_quantile(n: int, p: float, q: float) -> int:
    """Smallest k with P(Binomial(n, p) <= k) >= q."""
    cdf = 0.0
    for k in range(n + 1):
        cdf += math.comb(n, k) * p**k * (1 - p) ** (n - k)
        if cdf >= q:
            return k
    return n


def test_bootstrap_interval_of_a_mean_is_the_binomial_one():
    # 40 items, 10 of them 1 and 30 of them 0: a resampled mean is Binomial(40, 1/4) / 40.
    values = np.array([1.0] * 10 + [0.0] * 30)
    rec = {"m": {"value": values.mean()}}
    attach_uncertainty(rec, {"m": ItemMeans(values[:, None])}, 40, UncertaintyConfig(bootstrap=20000, seed=3))
    lo, hi = rec["m"]["ci95"]
    assert abs(lo - _binomial_quantile(40, 0.25, 0.025) / 40) <= 1 / 40 + 1e-12
    assert abs(hi - _binomial_quantile(40, 0.25, 0.975) / 40) <= 1 / 40 + 1e-12
    assert "p_value" not in rec["m"]  # a mean has no pairing to shuffle


def test_identification_interval_recomputes_on_each_resampled_set():
    rng = np.random.default_rng(0)
    n, resamples, seed = 7, 300, 11
    scores = rng.standard_normal((2, n, n)) + 1.5 * np.eye(n)  # two sample sets, generated i vs ground truth j
    rec = {"id": {"value": 0.0}}
    attach_uncertainty(rec, {"id": PairScores(scores, True)}, n, UncertaintyConfig(bootstrap=resamples, seed=seed,
                                                                                     permutations=0))
    # By hand: in each resample, position a (item i) beats position b (item j != i) when s[i, i] > s[i, j];
    # its score is the fraction of positions holding another item; the value is the mean over positions and sets.
    reps = []
    for draw in bootstrap_indices(n, resamples, seed):  # the draws only; the statistic is recomputed here
        per_set = []
        for s in scores:
            per_pos = []
            for i in draw:
                others = [j for j in draw if j != i]
                per_pos.append(np.mean([s[i, i] > s[i, j] for j in others]))
            per_set.append(np.mean(per_pos))
        reps.append(np.mean(per_set))
    np.testing.assert_allclose(rec["id"]["ci95"], np.percentile(reps, [2.5, 97.5]), atol=1e-12)


def test_a_perfect_identifier_has_a_degenerate_interval_at_one():
    n = 10
    scores = -np.abs(np.subtract.outer(np.arange(n), np.arange(n))).astype(float)  # own ground truth best
    rec = {"id": {"value": 1.0}}
    attach_uncertainty(rec, {"id": PairScores(scores, True)}, n, UncertaintyConfig(bootstrap=200, permutations=99))
    assert rec["id"]["ci95"] == [1.0, 1.0]
    assert rec["id"]["p_value"] == pytest.approx(1 / 100)  # no pairing beats the true one


def test_multiplicities_count_the_draws():
    idx = np.array([[0, 0, 2], [1, 2, 1]])
    np.testing.assert_array_equal(multiplicities(idx, 3), [[2, 0, 1], [0, 2, 1]])


# ----------------------------------------------------------------------------- permutation p-values


def _identification_value(scores: np.ndarray) -> float:
    n = scores.shape[0]
    return float(np.mean([(scores[i, i] > np.delete(scores[i], i)).mean() for i in range(n)]))


def test_p_value_is_small_for_a_perfect_decoder_and_uniform_for_a_random_one():
    rng = np.random.default_rng(1)
    n, perms = 16, 199
    good = rng.standard_normal((n, n)) + 4.0 * np.eye(n)
    rec = {"id": {"value": _identification_value(good)}}
    attach_uncertainty(rec, {"id": PairScores(good, True)}, n, UncertaintyConfig(bootstrap=0, permutations=perms))
    assert rec["id"]["p_value"] == pytest.approx(1 / (perms + 1))
    assert rec["id"]["ci95"] is None  # bootstrap 0: no interval

    p_values = []
    for rep in range(300):
        noise = rng.standard_normal((n, n))  # generated images unrelated to their ground truth
        rec = {"id": {"value": _identification_value(noise)}}
        attach_uncertainty(rec, {"id": PairScores(noise, True)}, n,
                           UncertaintyConfig(bootstrap=0, permutations=perms, seed=rep))
        p_values.append(rec["id"]["p_value"])
    p_values = np.sort(p_values)
    uniform = np.arange(1, len(p_values) + 1) / len(p_values)
    assert np.max(np.abs(p_values - uniform)) < 0.1  # Kolmogorov-Smirnov distance; 5 % critical value 0.079
    assert 0.02 <= np.mean(p_values < 0.05) <= 0.09


def test_permuted_identification_pairs_generated_i_with_ground_truth_pi_i():
    rng = np.random.default_rng(2)
    n = 6
    scores = rng.standard_normal((n, n))
    perms = np.array([rng.permutation(n) for _ in range(5)])
    got = PairScores(scores, higher_is_better=False).null(perms)
    for p, value in zip(perms, got):
        # lower is better: generated i's "own" is ground truth p[i]; wins over j != p[i] with a larger score
        expect = np.mean([np.mean([scores[i, p[i]] < scores[i, j] for j in range(n) if j != p[i]]) for i in range(n)])
        assert value == pytest.approx(expect)


def test_nway_hit_table_and_its_permutation():
    probs = np.array([[0.5, 0.3, 0.15, 0.05], [0.1, 0.2, 0.3, 0.4], [0.25, 0.45, 0.2, 0.1]])
    table = hit_table(probs, 2)  # 2-way over C = 4: hit unless the one distractor outranks the class
    # class with r competitors (classes at least as probable): P(hit) = (C - 1 - r) / (C - 1)
    expect = np.array([[(3 - r) / 3 for r in np.argsort(np.argsort(-row))] for row in probs])
    np.testing.assert_allclose(table, expect)
    gt = np.array([0, 3, 2])
    view = NWayHits(table[None], gt)
    np.testing.assert_allclose(view.own()[:, 0], [1.0, 1.0, 1 / 3])
    perm = np.array([[1, 2, 0]])  # item 0 judged against item 1's class (3), item 1 against 2, item 2 against 0
    assert view.null(perm)[0] == pytest.approx(np.mean([expect[0, 3], expect[1, 2], expect[2, 0]]))


# ----------------------------------------------------------------------------- Fréchet distance


def _fid_by_scipy(real: np.ndarray, fake: np.ndarray) -> float:
    from scipy import linalg

    mu1, mu2 = real.mean(0), fake.mean(0)
    s1, s2 = np.cov(real, rowvar=False), np.cov(fake, rowvar=False)
    root = linalg.sqrtm(s1 @ s2).real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(root))


@pytest.mark.parametrize("dims", [4, 30])  # fewer features than images, and more
def test_frechet_from_grams_matches_the_textbook_formula(dims):
    rng = np.random.default_rng(dims)
    real = rng.standard_normal((12, dims))
    fake = 0.7 * real + rng.standard_normal((12, dims)) + 0.3
    assert Frechet(real, fake[None]).observed() == pytest.approx(_fid_by_scipy(real, fake), rel=1e-6, abs=1e-8)
    # a resample: the formula on the duplicated rows
    counts = np.array([[2, 0, 1, 1, 0, 3, 1, 1, 0, 1, 1, 1]])
    idx = np.repeat(np.arange(12), counts[0])
    assert Frechet(real, fake[None]).replicates(counts)[0] == pytest.approx(
        _fid_by_scipy(real[idx], fake[idx]), rel=1e-6, abs=1e-8)


def test_fid_interval_is_the_bootstrap_shifted_by_its_bias():
    rng = np.random.default_rng(5)
    real = rng.standard_normal((10, 3))
    fake = real + 0.5 * rng.standard_normal((10, 3)) + 0.2
    value = _fid_by_scipy(real, fake)
    rec = {"fid": {"value": value}}
    attach_uncertainty(rec, {"fid": Frechet(real, fake[None])}, 10, UncertaintyConfig(bootstrap=60, seed=2))
    reps = np.array([_fid_by_scipy(real[i], fake[i]) for i in bootstrap_indices(10, 60, 2)])
    shifted = reps - (reps.mean() - value)  # resamples repeat images, which inflates FID: remove that bias
    np.testing.assert_allclose(rec["fid"]["ci95"], np.percentile(shifted, [2.5, 97.5]), rtol=1e-6)
    assert rec["fid"]["ci95"][0] < value < rec["fid"]["ci95"][1]
    assert "p_value" not in rec["fid"]


# ----------------------------------------------------------------------------- controls


@pytest.mark.parametrize("n", [2, 3, 5, 17, 50])
def test_derangement_has_no_fixed_point(n):
    for seed in range(20):
        order = derangement(n, seed)
        assert sorted(order.tolist()) == list(range(n))
        assert not np.any(order == np.arange(n))
        np.testing.assert_array_equal(order, derangement(n, seed))  # fixed by its seed
    with pytest.raises(InputDataError):
        derangement(1, 0)


def test_train_retrieval_finds_the_training_row_behind_each_test_row():
    rng = np.random.default_rng(4)
    train = rng.standard_normal((30, 200))
    truth = np.array([7, 0, 29, 7, 13])
    # each test row: an affine copy of one training row (Pearson ignores scale and offset) plus a little noise
    test = 3.0 * train[truth] + 5.0 + 0.1 * rng.standard_normal((5, 200))
    best, r = retrieve_training_items(test, train)
    np.testing.assert_array_equal(best, truth)
    expect_r = [np.corrcoef(test[i], train[truth[i]])[0, 1] for i in range(5)]
    np.testing.assert_allclose(r, expect_r, rtol=1e-10)


def test_nearest_train_copy_share_on_hand_made_features():
    own = np.array([[1.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0]])
    train = np.array([[0.0, 0.0, 0.0, 1.0], [1.0, 1.0, 0.0, 0.0]])
    gen = np.array([
        [[1.0, 0.1, 0.0, 0.0], [0.0, 0.0, 0.1, 1.0]],  # a copy of its ground truth; a copy of training image 0
        [[0.9, 1.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.1]],  # closer to training image 1; closer to its own
        [[0.0, 0.0, 1.0, 0.2], [0.0, 0.0, 1.0, 0.0]],  # both closer to their own
    ])
    got = nearest_train_copy(gen, own, train, UncertaintyConfig(bootstrap=500, seed=0))
    closer = np.array([[max(np.corrcoef(g, t)[0, 1] for t in train) > np.corrcoef(g, own[i])[0, 1] for g in gen[i]]
                       for i in range(3)])
    np.testing.assert_array_equal(closer, [[False, True], [True, False], [False, False]])
    assert got["share_closer_to_train"] == pytest.approx(closer.mean())
    assert got["n_train"] == 2 and got["definition"]
    lo, hi = got["ci95"]
    assert 0.0 <= lo <= closer.mean() <= hi <= 0.5 + 1e-12  # per-item shares are 0.5, 0.5, 0


def test_new_evaluate_keys_agree_in_config_schema_and_dataclass():
    config = yaml.safe_load((REPO_ROOT / "config/config.yaml").read_text())["evaluate"]
    schema = yaml.safe_load((REPO_ROOT / "workflow/schemas/config.schema.yaml").read_text())
    props = schema["properties"]["evaluate"]["properties"]
    defaults = EvaluateConfig()
    for key in ("bootstrap", "permutations", "controls", "controls_n_samples", "seeds"):
        assert config[key] == props[key]["default"] == getattr(defaults, key), key
    assert config["seeds"] == []  # the embedded default: one generation seed (stage_b.generate.seed)


# ----------------------------------------------------------------------------- end to end


@pytest.fixture(scope="module")
def stage_b(tmp_path_factory):
    """A tiny GOD subject, a micro stage B model (jittered so the samples depend on the fMRI) and a judge."""
    import torch
    from ldm_factory import ENC, MICRO, N_CLASSES, N_TOKENS, write_tiny_god

    from mindvis.checkpoints.mindvis_ldm import finetuned_config, save_finetuned
    from mindvis.evaluation.judge_training import JudgeTrainConfig, save_judge, train_judge
    from mindvis.models.ldm.dc_ldm import build_fmri_ldm

    root = tmp_path_factory.mktemp("controls")
    write_tiny_god(root, seed=0)
    torch.manual_seed(0)
    model = build_fmri_ldm(MICRO, ENC, N_TOKENS).eval()
    gen = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.5 * torch.randn(p.shape, generator=gen))
    save_finetuned(root / "finetuned.pt", model, finetuned_config(model, {"roi": None}))
    with np.load(root / "images_256.npz") as npz:
        train_images = npz["train_images"]
    judge, _ = train_judge(train_images, np.arange(len(train_images)) % N_CLASSES, ["a", "b", "c"],
                           JudgeTrainConfig(epochs=20, width=4, image_size=16, batch_size=12))
    save_judge(judge, 4, root / "judge.pt")
    return root, model


GEN = '{sampler: ddim, steps: 2, n_samples: 2, batch_size: 8, device: cpu, seed: 7}'


def test_controls_share_the_models_noise_and_prior_only_ignores_the_fmri(stage_b):
    import torch

    from mindvis.generation.controls import Unconditioned, control_samples
    from mindvis.models.ldm.sampling import SamplerConfig, sample_images

    _, model = stage_b
    cfg = SamplerConfig(sampler="ddim", steps=2, n_samples=2, seed=7, batch_size=8)
    fmri = torch.randn(4, 1, model.conditioner.num_voxels, generator=torch.Generator().manual_seed(0))
    own, _ = sample_images(model, fmri, cfg)
    same = control_samples(model, fmri, cfg, np.arange(4), "cpu")
    np.testing.assert_array_equal(same["shuffled_fmri"], own)  # identity order = the model's own samples
    other = control_samples(model, torch.randn(4, 1, fmri.shape[-1]), cfg, np.array([1, 0, 3, 2]), "cpu")
    np.testing.assert_array_equal(other["prior_only"], same["prior_only"])  # no fMRI reaches it
    assert not np.array_equal(other["prior_only"], own)
    # with guidance the dropped condition gives the unconditional prediction: the guided run is the same images
    guided = SamplerConfig(sampler="ddim", steps=2, n_samples=2, seed=7, batch_size=8, guidance_scale=3.0)
    dropped, _ = sample_images(Unconditioned(model), fmri, guided)
    got = control_samples(model, fmri, guided, np.array([1, 0, 3, 2]), "cpu")["prior_only"]
    assert np.abs(got.astype(int) - dropped.astype(int)).max() <= 1  # float rounding of a doubled batch at most


def test_metrics_json_carries_controls_intervals_and_seed_spread(stage_b, tmp_path):
    from cli_factory import run_cli

    root, _ = stage_b
    subject = ["--model", str(root / "finetuned.pt"), "--npz", str(root / "sbj_1.npz"), "--images",
               str(root / "images_256.npz"), "--dataset", "god", "--no-tracking"]
    assert run_cli("generate", "mindvis.generation.cli_generate",
                   [*subject, "--out", str(tmp_path / "samples.npz"), "--config", GEN]) == 0
    assert run_cli("generate", "mindvis.generation.cli_generate",
                   [*subject, "--out", str(tmp_path / "samples_seed8.npz"), "--config", GEN, "--set", "seed=8"]) == 0
    ctrl = {name: tmp_path / f"samples_{name}.npz" for name in ("shuffled_fmri", "prior_only", "train_retrieval")}
    assert run_cli("generate-controls", "mindvis.generation.cli_generate_controls", [
        *subject, "--shuffled-out", str(ctrl["shuffled_fmri"]), "--prior-out", str(ctrl["prior_only"]),
        "--retrieval-out", str(ctrl["train_retrieval"]), "--config", GEN, "--set", "n_samples=1"]) == 0
    with np.load(ctrl["shuffled_fmri"]) as z:
        assert not np.any(z["fmri_order"] == np.arange(len(z["fmri_order"])))
        assert z["samples"].shape[1] == 1
    with np.load(ctrl["train_retrieval"]) as z, np.load(root / "images_256.npz") as imgs:
        # the retrieved "reconstruction" is the training image at the retrieved row, resized like the ground truth
        assert z["samples"].shape[1] == 1 and z["train_index"].shape == (4,)
        assert z["samples"].shape[2:] == (16, 16, 3) and imgs["train_images"].shape[0] == 12

    out = tmp_path / "metrics.json"
    argv = ["--samples", str(tmp_path / "samples.npz"), "--judge", str(root / "judge.pt"), "--out", str(out),
            "--shuffled-fmri", str(ctrl["shuffled_fmri"]), "--prior-only", str(ctrl["prior_only"]),
            "--train-retrieval", str(ctrl["train_retrieval"]), "--train-npz", str(root / "sbj_1.npz"),
            "--train-images", str(root / "images_256.npz"), "--seed-samples", str(tmp_path / "samples_seed8.npz"),
            "--set", "n_way=2", "--set", "trials=50", "--set", "bootstrap=200", "--set", "permutations=99",
            "--wildcard", "dataset=god", "--wildcard", "subject=1", "--no-tracking"]
    assert run_cli("evaluate", "mindvis.evaluation.cli_evaluate", argv) == 0
    doc = json.loads(out.read_text())
    assert doc["format"] == "mindvis-metrics/2" and doc["seeds"] == [7, 8]
    assert doc["uncertainty"]["bootstrap"] == 200 and doc["uncertainty"]["permutations"] == 99
    for name, rec in doc["metrics"].items():
        lo, hi = rec["ci95"]
        assert lo <= hi, name
        spread = rec["across_seeds"]
        assert spread["n"] == 2 and spread["seeds"] == [7, 8] and spread["values"][0] == rec["value"]
        assert spread["sd"] == pytest.approx(np.std(spread["values"], ddof=1))
        if name.startswith("identification_") or name.startswith("nsd_two_way") or name == "nway_top1_exact":
            assert 1 / 100 <= rec["p_value"] <= 1 and "99 random pairings" in rec["definition"]
        assert "bootstrap over test items (200 resamples" in rec["definition"]
    base = doc["baselines"]
    assert set(base) == {"shuffled_fmri", "prior_only", "train_retrieval", "nearest_train_copy", "chance"}
    for control in ("shuffled_fmri", "prior_only", "train_retrieval"):
        assert set(base[control]) == set(doc["metrics"])  # the same metrics, by the same code
        for name, rec in base[control].items():
            assert rec["ci95"][0] <= rec["ci95"][1], (control, name)
        assert "p_value" in base[control]["identification_pcc"]
        assert doc["baseline_definitions"][control]
    assert doc["baseline_samples"]["train_retrieval"]["k_samples"] == 1
    assert base["chance"]["identification_pcc"] == 0.5 and base["chance"]["nway_top1_exact"] == 0.5
    copy = base["nearest_train_copy"]
    assert 0.0 <= copy["share_closer_to_train"] <= 1.0 and copy["n_train"] == 12
    assert copy["ci95"][0] <= copy["share_closer_to_train"] <= copy["ci95"][1]

    # a control made for other test items is refused, naming the file
    bad = tmp_path / "bad.npz"
    with np.load(ctrl["prior_only"]) as z:
        np.savez(bad, samples=z["samples"], ground_truth=z["ground_truth"][::-1])
    argv_bad = [a if a != str(ctrl["prior_only"]) else str(bad) for a in argv]
    assert run_cli("evaluate", "mindvis.evaluation.cli_evaluate", argv_bad) == 2
