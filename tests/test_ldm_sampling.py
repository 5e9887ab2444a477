"""Samplers: step grids, seeded reproducibility, batch independence, uint8 output, grids, the quick metric."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ldm_factory import ENC, MICRO  # micro stage B sizes shared by the stage B tests

from mindvis.metrics.identification import pairwise_identification
from mindvis.models.ldm.dc_ldm import build_fmri_ldm
from mindvis.models.ldm.presets import ScheduleSpec
from mindvis.models.ldm.sampling import SAMPLERS, SamplerConfig, denoise, make_sampler, sample_images, to_uint8
from mindvis.utils.errors import ConfigError, InputDataError
from mindvis.utils.images import sample_grid, tile


# tiny models: one thread is fastest, and keeps timings steady on shared cores
pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    m = build_fmri_ldm(MICRO, ENC, 6).eval()
    return m


def test_step_grids_follow_compvis():
    # CompVis "uniform" DDIM/PLMS grid for S steps: 0, T/S, 2T/S, ... plus 1, run backwards
    ddim = make_sampler("ddim", ScheduleSpec(), 50)
    assert ddim.timesteps.tolist() == list(range(981, 0, -20))
    plms = make_sampler("plms", ScheduleSpec(), 250)
    assert sorted(set(plms.timesteps.tolist()), reverse=True) == list(range(997, 0, -4))
    assert plms.timesteps.tolist()[:3] == [997, 993, 993]  # PNDM's warm start repeats the second step
    dpm = make_sampler("dpmpp", ScheduleSpec(), 25)
    assert len(dpm.timesteps) == 25 and dpm.config.algorithm_type == "dpmsolver++"
    assert int(dpm.timesteps[0]) == 999 and int(dpm.timesteps[-1]) < 50
    for sched in (ddim, plms, dpm):
        torch.testing.assert_close(sched.betas[[0, -1]], torch.tensor([0.0015, 0.0195]))
    with pytest.raises(ConfigError):
        make_sampler("euler", ScheduleSpec(), 10)
    with pytest.raises(ConfigError):
        make_sampler("ddim", ScheduleSpec(), 0)
    # the +1-shifted grid of T steps would end at t = T, past the schedule (an IndexError before)
    for name in ("ddim", "plms"):
        with pytest.raises(ConfigError, match="at most 999"):
            make_sampler(name, ScheduleSpec(), 1000)
    assert make_sampler("ddim", ScheduleSpec(), 999).timesteps.tolist() == list(range(999, 0, -1))
    assert len(make_sampler("dpmpp", ScheduleSpec(), 1000).timesteps) == 1000


def test_to_uint8_matches_the_reference_conversion():
    x = torch.tensor([-3.0, -1.0, -0.5, 0.0, 0.5, 0.999, 1.0, 2.0]).reshape(1, 1, 1, 8).expand(1, 3, 1, 8)
    out = to_uint8(x)
    assert out.shape == (1, 1, 8, 3) and out.dtype == np.uint8
    # (x + 1) / 2 clamped, x255, truncated: 0, 0, 63.75 -> 63, 127.5 -> 127, 191.25 -> 191, 254.87 -> 254, 255, 255
    assert out[0, 0, :, 0].tolist() == [0, 0, 63, 127, 191, 254, 255, 255]


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_samples_are_seeded_and_batch_independent(model, sampler):
    fmri = torch.randn(3, 1, 96)
    cfg = SamplerConfig(sampler=sampler, steps=4, n_samples=2, seed=11, batch_size=6,
                        eta=0.5 if sampler == "ddim" else 0.0)
    a, info = sample_images(model, fmri, cfg)
    b, _ = sample_images(model, fmri, cfg)
    assert a.shape == (3, 2, 16, 16, 3) and a.dtype == np.uint8 and info["n_images"] == 6
    assert np.array_equal(a, b)
    other, _ = sample_images(model, fmri, SamplerConfig(**{**cfg.__dict__, "seed": 12}))
    assert not np.array_equal(a, other)
    assert not np.array_equal(a[:, 0], a[:, 1])  # the K samples of one fMRI differ
    # one item at a time (another batch size, item ids kept) gives the same starting noise and latents
    cond = model.condition(fmri)
    from mindvis.models.ldm.sampling import sample_seed

    seeds = [sample_seed(11, i, 0) for i in range(3)]
    together = denoise(model, cond, seeds, cfg)
    alone = torch.cat([denoise(model, cond.select(torch.tensor([i])), [seeds[i]], cfg) for i in range(3)])
    torch.testing.assert_close(together, alone, rtol=1e-4, atol=1e-4)
    subset, _ = sample_images(model, fmri[1:2], cfg, item_ids=[1])
    assert np.abs(subset[0].astype(int) - a[1].astype(int)).max() <= 1


def test_guidance_scale_one_equals_no_guidance(model):
    fmri = torch.randn(2, 1, 96)
    plain = SamplerConfig(sampler="dpmpp", steps=3, n_samples=1, seed=3)
    unguided, _ = sample_images(model, fmri, plain)
    scale_one, _ = sample_images(model, fmri, SamplerConfig(**{**plain.__dict__, "guidance_scale": 1.0}))
    assert np.array_equal(unguided, scale_one)
    cond, seeds = model.condition(fmri), [5, 6]
    latents = denoise(model, cond, seeds, plain)
    assert torch.equal(latents, denoise(model, cond, seeds, SamplerConfig(**{**plain.__dict__, "guidance_scale": 1.0})))
    guided = denoise(model, cond, seeds, SamplerConfig(**{**plain.__dict__, "guidance_scale": 3.0}))
    assert (guided - latents).abs().max() > 1e-3


def test_tile_and_grid_layout():
    gt = np.zeros((3, 4, 4, 3), np.uint8)
    samples = np.full((3, 2, 4, 4, 3), 200, np.uint8)
    grid = sample_grid(gt, samples)
    assert grid.shape == (3 * 6 + 2, 3 * 6 + 2, 3)  # 3 rows, ground truth + 2 samples, 2-px borders
    assert (grid[2:6, 2:6] == 0).all() and (grid[2:6, 8:12] == 200).all()
    assert sample_grid(gt, samples, max_rows=1).shape[0] == 8
    ragged = tile([[gt[0]], [gt[0], gt[1]]])
    assert ragged.shape == (14, 14, 3) and (ragged[2:6, 8:12] == 255).all()


def test_pairwise_identification_by_hand():
    rng = np.random.default_rng(0)
    gt = rng.integers(0, 256, (4, 6, 6, 3)).astype(np.uint8)
    perfect = np.repeat(gt[:, None], 2, axis=1)
    assert pairwise_identification(perfect, gt) == 1.0
    shuffled = perfect[[1, 0, 3, 2]]  # every sample is another item's image
    # sample of item 0 is gt[1]: corr with gt[0] is below corr with gt[1] (=1), above or below the rest
    by_hand = []
    flat = gt.reshape(4, -1).astype(float)
    for i, j in enumerate([1, 0, 3, 2]):
        c = [np.corrcoef(flat[j], flat[m])[0, 1] for m in range(4)]
        by_hand.append(sum(c[i] > c[m] for m in range(4) if m != i) / 3)
    assert pairwise_identification(shuffled, gt) == pytest.approx(np.mean(by_hand))
    with pytest.raises(InputDataError, match="at least 2"):
        pairwise_identification(perfect[:1], gt[:1])


def test_pairwise_identification_constant_images_never_win():
    # a constant image has no correlation with anything: its entries count 0, and 0 < 0 is no win
    rng = np.random.default_rng(1)
    gt = rng.integers(0, 256, (3, 4, 4, 3)).astype(np.uint8)
    samples = np.repeat(gt[:, None], 1, axis=1).copy()
    samples[0, 0] = 7  # item 0's sample is flat grey
    # item 0: all correlations 0, no wins; items 1, 2: own r = 1 beats the other real image and the 0 entry
    assert pairwise_identification(samples, gt) == pytest.approx((0 + 1 + 1) / 3)
    flat_gt = gt.copy()
    flat_gt[2] = 9  # a flat ground truth: column 2 is 0 for every sample, item 2's own score too
    expected = [1.0, 1.0, 0.0]  # items 0 and 1 beat r = 0 (their own r is 1); item 2 wins nothing
    assert pairwise_identification(np.repeat(flat_gt[:, None], 2, axis=1), flat_gt) == pytest.approx(np.mean(expected))
