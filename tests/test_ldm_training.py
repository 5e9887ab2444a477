"""Stage B loops at micro size: outputs in the reference layouts, trainable sets, protocols, resume after kill,
and the CLI modules of train-autoencoder / train-label2img / finetune-ldm / generate."""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from ldm_factory import ENC, N_CLASSES, N_TEST, N_TRAIN, write_tiny_god  # shared stage B test data
from PIL import Image

from mindvis.checkpoints.compvis_ldm import (
    export_compvis_state,
    read_compvis_ldm,
    read_vq_checkpoint,
    save_compvis_checkpoint,
    vq_to_compvis,
)
from mindvis.checkpoints.mindvis_encoder import export_mbm_checkpoint, reference_config
from mindvis.checkpoints.mindvis_ldm import load_finetuned
from mindvis.checkpoints.safe_load import safe_load
from mindvis.cli.main import add_common_arguments
from mindvis.data.images import read_labels
from mindvis.models.ldm.dc_ldm import build_label_ldm
from mindvis.models.ldm.presets import LdmModelConfig, resolve_ldm_spec
from mindvis.models.ldm.sampling import SamplerConfig
from mindvis.models.sc_mbm import ScMbm
from mindvis.training.checkpointing import resume_path_for
from mindvis.training.autoencoder import AutoencoderConfig, train_autoencoder
from mindvis.training.label2img import Label2ImgConfig
from mindvis.training.ldm_common import augment
from mindvis.training.stage_b import FinetuneLdmConfig, build_stage_b, finetune_ldm, heldout_loss
from mindvis.utils.errors import ConfigError, InputDataError

MICRO_MODEL = dict(image_size=16, vq_ch=8, vq_ch_mult=[1, 2, 2], vq_num_res_blocks=1, vq_n_embed=16,
                   norm_num_groups=4, unet_model_channels=8, unet_channel_mult=[1, 2], unet_num_res_blocks=1,
                   unet_attention_resolutions=[2], context_dim=8, time_embed_dim=16)


# tiny models: one thread is fastest, and keeps timings steady on shared cores
pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Subject npz, images npz, labels, A2 encoder, VQ and label prior, all tiny."""
    root = tmp_path_factory.mktemp("ldm")
    write_tiny_god(root, seed=0)
    torch.manual_seed(0)
    encoder = ScMbm(ENC, 6)
    export_mbm_checkpoint(root / "fmri_encoder.pth", encoder, reference_config(ENC, 6))
    spec = resolve_ldm_spec(LdmModelConfig(**MICRO_MODEL))
    prior = build_label_ldm(spec, N_CLASSES)
    save_compvis_checkpoint(root / "label2img.pt", export_compvis_state(prior),
                            {"format": "mindvis.label2img/1", "spec": spec.as_dict(), "n_classes": N_CLASSES})
    save_compvis_checkpoint(root / "autoencoder.pt", vq_to_compvis(prior.vq.state_dict(), spec.vq),
                            {"vq": spec.as_dict()["vq"]})
    return root


def _finetune_cfg(**kw) -> FinetuneLdmConfig:
    base = FinetuneLdmConfig(epochs=3, batch_size=4, lr=1e-3, checkpoint_every_steps=2, select_every_epochs=1,
                             val_fraction=0.2, grid_every_epochs=0, threads=1, select_metric="pixel_identification",
                             select_sampler=SamplerConfig(sampler="ddim", steps=2, n_samples=1))
    return replace(base, **kw)


def _finetune(files: Path, out: Path, **kw) -> dict:
    return finetune_ldm(files / "sbj_1.npz", files / "images_256.npz", files / "fmri_encoder.pth",
                        files / "label2img.pt", out, _finetune_cfg(**{k: v for k, v in kw.items()
                                                                     if k != "stop_after_steps"}),
                        stop_after_steps=kw.get("stop_after_steps"))


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return safe_load(path)["model_state_dict"]


@pytest.fixture(scope="module")
def finetuned(files):
    out = files / "clean" / "finetuned.pt"
    summary = _finetune(files, out)
    return out, summary


def test_augment_crops_with_the_given_probability():
    x = torch.arange(2 * 3 * 10 * 10, dtype=torch.float32).reshape(2, 3, 10, 10).remainder(256).to(torch.uint8)
    never = augment(x, torch.Generator().manual_seed(0), 0.0, 0.8)
    torch.testing.assert_close(never, x.float() / 127.5 - 1)
    always = augment(x, torch.Generator().manual_seed(0), 1.0, 0.8)
    assert always.shape == (2, 3, 10, 10) and not torch.equal(always, never)
    assert float(always.min()) >= -1 and float(always.max()) <= 1


def test_labels_from_stimuli_npz_or_label_csv(files, tmp_path):
    labels, names = read_labels(files / "stimuli.npz", N_TRAIN)
    assert labels.tolist() == [0, 1, 2] * 4 and names == ["a", "b", "c"]
    csv = tmp_path / "imagenet_training_label.csv"
    csv.write_text("9000002.000007,n09000002_7.JPEG\n9000000.000001,n09000000_1.JPEG\n"
                   "9000002.000009,n09000002_9.JPEG\n")
    labels, names = read_labels(csv, 3)
    assert labels.tolist() == [1, 0, 1] and names == ["n09000000", "n09000002"]
    with pytest.raises(InputDataError, match="3 labels for 4 images"):
        read_labels(csv, 4)


def test_finetune_writes_a_mindvis_checkpoint_with_the_reference_trainable_set(files, finetuned):
    out, summary = finetuned
    assert not resume_path_for(out).exists()
    assert summary["n_train_pairs"] == 10 and summary["n_selection_pairs"] == 2  # 20 % held out
    assert summary["test_set_exposed"] is False and summary["selected_epoch"] in (1, 2, 3)
    assert summary["prior_dropped"]["class embedder (replaced by the fMRI conditioner)"] == 1
    loaded = load_finetuned(out)
    assert loaded.mindvis["protocol"] == "clean" and loaded.mindvis["test_set_exposed"] is False
    assert loaded.config["use_time_cond"] is True and loaded.layout.n_tokens == 6
    prior = read_compvis_ldm(files / "label2img.pt")
    state = _weights(out)
    # frozen: the UNet outside cross-attention, and the VQ, are the prior's tensors
    for key in ("input_blocks.0.0.weight", "input_blocks.1.0.in_layers.2.weight", "middle_block.0.out_layers.3.weight",
                "output_blocks.0.1.transformer_blocks.0.attn1.to_q.weight"):
        assert torch.equal(state["model.diffusion_model." + key], prior.unet[key]), key
    assert torch.equal(state["first_stage_model.quantize.embedding.weight"], prior.vq["quantize.embedding.weight"])
    # trained: the cross-attention and its norm, and the encoder
    assert not torch.equal(state["model.diffusion_model.middle_block.1.transformer_blocks.0.attn2.to_k.weight"],
                           prior.unet["middle_block.1.transformer_blocks.0.attn2.to_k.weight"])
    encoder = safe_load(files / "fmri_encoder.pth")["model"]
    assert not torch.equal(state["cond_stage_model.mae.blocks.0.mlp.fc1.weight"], encoder["blocks.0.mlp.fc1.weight"])


def test_resume_after_kill_gives_the_uninterrupted_weights(files, finetuned):
    reference = _weights(finetuned[0])
    out = files / "killed" / "finetuned.pt"
    assert _finetune(files, out, stop_after_steps=3) == {"stopped_at_step": 3}  # "killed" after step 3
    assert not out.exists() and safe_load(resume_path_for(out))["step"] == 2  # last periodic save
    summary = _finetune(files, out)
    assert summary["resumed"] is True
    resumed = _weights(out)
    assert resumed.keys() == reference.keys()
    for key, value in reference.items():
        assert torch.equal(resumed[key], value), key


def test_a_model_trained_without_condition_dropout_refuses_guidance(files, finetuned, tmp_path):
    from mindvis.generation import GenerateConfig, generate_samples

    assert load_finetuned(finetuned[0]).mindvis["cond_drop_prob"] == 0.1  # the default: guidance allowed
    plain = tmp_path / "plain" / "finetuned.pt"
    _finetune(files, plain, cond_drop_prob=0.0, epochs=1, select_metric="loss")
    assert load_finetuned(plain).trained_for_guidance is False
    cfg = GenerateConfig(sampler="ddim", steps=2, n_samples=1, max_items=2, threads=1, guidance_scale=2.0)
    with pytest.raises(ConfigError, match="guidance_scale 2 needs a model trained with condition dropout.*"
                                          "cond_drop_prob 0"):
        generate_samples(plain, files / "sbj_1.npz", tmp_path / "s.npz", None, cfg, images=files / "images_256.npz")
    generate_samples(plain, files / "sbj_1.npz", tmp_path / "s.npz", None, replace(cfg, guidance_scale=1.0),
                     images=files / "images_256.npz")  # unguided: the reference's way, allowed
    assert (tmp_path / "s.npz").exists()


def test_reference_protocol_selects_on_the_test_set_and_says_so(files):
    out = files / "reference" / "finetuned.pt"
    summary = _finetune(files, out, protocol="reference", epochs=1, select_metric="loss")
    assert summary["test_set_exposed"] is True and summary["n_selection_pairs"] == N_TEST
    assert summary["n_train_pairs"] == N_TRAIN
    last = summary["history"][-1]
    assert last["test_loss"] > 0 and summary["selection_score"] == -last["test_loss"]
    assert load_finetuned(out).mindvis["test_set_exposed"] is True


def _run_cli(module, argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    module.add_arguments(parser)
    add_common_arguments(parser)
    args = parser.parse_args(argv + ["--no-tracking"])
    args.command = module.__name__.rsplit(".", 1)[-1]
    return module.run(args)


def test_generate_cli_writes_samples_npz_and_grid(files, finetuned, tmp_path):
    from mindvis.generation import cli_generate

    out, grid = tmp_path / "samples.npz", tmp_path / "grid.png"
    config = json.dumps({"sampler": "dpmpp", "steps": 3, "n_samples": 2, "batch_size": 3, "threads": 1})
    assert _run_cli(cli_generate, ["--model", str(finetuned[0]), "--npz", str(files / "sbj_1.npz"), "--images",
                                   str(files / "images_256.npz"), "--out", str(out), "--grid", str(grid),
                                   "--config", config]) == 0
    with np.load(out) as npz:
        samples, gt = npz["samples"], npz["ground_truth"]
        assert samples.shape == (N_TEST, 2, 16, 16, 3) and samples.dtype == np.uint8
        assert gt.shape == (N_TEST, 16, 16, 3) and npz["test_labels"].tolist() == [0, 1, 2, 0]
        assert str(npz["sampler"]) == "dpmpp" and int(npz["steps"]) == 3
    picture = np.asarray(Image.open(grid))
    assert picture.shape == (N_TEST * 18 + 2, 3 * 18 + 2, 3)
    assert np.array_equal(picture[2:18, 2:18], gt[0])  # first cell: the ground truth
    assert np.array_equal(picture[2:18, 20:36], samples[0, 0])
    again = tmp_path / "again.npz"
    _run_cli(cli_generate, ["--model", str(finetuned[0]), "--npz", str(files / "sbj_1.npz"), "--images",
                            str(files / "images_256.npz"), "--out", str(again), "--config", config])
    with np.load(again) as a, np.load(out) as b:
        assert np.array_equal(a["samples"], b["samples"])  # seeded


def test_prior_clis_train_autoencoder_then_label2img(files, tmp_path):
    from mindvis.training import cli_autoencoder, cli_label2img

    model = json.dumps(MICRO_MODEL)
    ae = tmp_path / "autoencoder.pt"
    cfg = f'{{"epochs": 2, "batch_size": 4, "patch_size": 8, "threads": 1, "model": {model}}}'
    assert _run_cli(cli_autoencoder, ["--images", str(files / "images_256.npz"), "--out", str(ae),
                                      "--config", cfg]) == 0
    spec, state, _, config = read_vq_checkpoint(ae)
    assert spec.resolution == 16 and spec.n_embed == 16 and config["format"] == "mindvis.vq/1"
    assert "encoder.down.0.block.0.conv1.weight" in state and not resume_path_for(ae).exists()

    prior = tmp_path / "label2img.pt"
    cfg = f'{{"epochs": 2, "batch_size": 4, "threads": 1, "grid_every_epochs": 0, "model": {model}}}'
    assert _run_cli(cli_label2img, ["--images", str(files / "images_256.npz"), "--labels",
                                    str(files / "stimuli.npz"), "--autoencoder", str(ae), "--out", str(prior),
                                    "--config", cfg]) == 0
    loaded = read_compvis_ldm(prior)
    assert loaded.class_embedding.shape == (N_CLASSES + 1, 8) and loaded.spec.vq == spec
    assert loaded.config["class_names"] == ["a", "b", "c"]
    for key, value in state.items():  # the frozen VQ is carried over unchanged
        assert torch.equal(loaded.vq[key], value), key


def test_autoencoder_resume_matches_uninterrupted(files, tmp_path):
    from mindvis.data.images import read_images

    images = read_images(files / "images_256.npz")
    cfg = AutoencoderConfig(epochs=2, batch_size=4, patch_size=8, restart_every_steps=2, checkpoint_every_steps=2,
                            threads=1, model=LdmModelConfig(**MICRO_MODEL))
    full = train_autoencoder(images, cfg, tmp_path / "a" / "ae.pt")
    assert full["codes_restarted"] > 0
    assert train_autoencoder(images, cfg, tmp_path / "b" / "ae.pt", stop_after_steps=3) == {"stopped_at_step": 3}
    train_autoencoder(images, cfg, tmp_path / "b" / "ae.pt")
    a = safe_load(tmp_path / "a" / "ae.pt")["state_dict"]
    b = safe_load(tmp_path / "b" / "ae.pt")["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)


CHILD = r"""
import sys, time, pathlib, torch
torch.set_num_threads(1)
import mindvis.training.engine as trainer
marker = pathlib.Path(sys.argv[1])
real_save = trainer.save_resume_state
def save(path, state):
    if state["step"] == 4:  # announce the second periodic save, then wait to be killed before writing it
        marker.write_text("4")
        time.sleep(60)
    real_save(path, state)
trainer.save_resume_state = save
sys.path.insert(0, sys.argv[2])
import test_ldm_training as t
t._finetune(pathlib.Path(sys.argv[3]), pathlib.Path(sys.argv[4]))
"""


def test_sigkill_mid_run_then_rerun_matches(files, finetuned, tmp_path):
    out = tmp_path / "finetuned.pt"
    marker = tmp_path / "marker"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(marker), str(Path(__file__).parent), str(files),
                              str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    deadline = time.time() + 180
    while not marker.exists():
        assert child.poll() is None, child.stderr.read().decode()[-3000:]
        assert time.time() < deadline, "the child never reached step 4"
        time.sleep(0.05)
    os.kill(child.pid, signal.SIGKILL)
    assert child.wait(timeout=60) == -signal.SIGKILL
    assert not out.exists() and safe_load(resume_path_for(out))["step"] == 2
    _finetune(files, out)
    reference = _weights(finetuned[0])
    resumed = _weights(out)
    assert all(torch.equal(resumed[k], reference[k]) for k in reference)


def test_heldout_loss_is_deterministic_and_uses_the_fmri(files):
    from mindvis.data.pairs import load_pairs

    model = build_stage_b(files / "label2img.pt", files / "fmri_encoder.pth", _finetune_cfg()).model
    pairs = load_pairs(files / "sbj_1.npz", files / "images_256.npz", "god", "train", 96, 16)
    a = heldout_loss(model, pairs.fmri[:4], pairs.images[:4], 3, 0, 5.0, "cpu")
    assert a == heldout_loss(model, pairs.fmri[:4], pairs.images[:4], 3, 0, 5.0, "cpu") and a > 0
    assert a != heldout_loss(model, pairs.fmri[4:8], pairs.images[:4], 3, 0, 5.0, "cpu")  # other fMRI, other loss
    assert model.training  # restored


def test_label2img_config_defaults_are_the_demo():
    cfg = Label2ImgConfig()
    assert cfg.model.preset == "tiny" and cfg.crop_p == 0.0 and cfg.crop_ratio == 0.8  # config.yaml: no crops
    ft = FinetuneLdmConfig()
    assert ft.trainable == ["encoder", "mappers", "time_branch", "cross_attention"] and ft.clip_grad == 0.5


def test_conditioner_init_prior_seeds_the_context_from_the_no_class_embedding(files):
    from mindvis.checkpoints.compvis_ldm import read_compvis_ldm

    null_row = read_compvis_ldm(files / "label2img.pt").class_embedding[-1]
    seeded = build_stage_b(files / "label2img.pt", files / "fmri_encoder.pth",
                           _finetune_cfg(conditioner_init="prior")).model.conditioner
    assert torch.equal(seeded.dim_mapper.bias.detach(), null_row)
    assert not seeded.time_branch[-1].weight.any() and not seeded.time_branch[-1].bias.any()
    plain = build_stage_b(files / "label2img.pt", files / "fmri_encoder.pth", _finetune_cfg()).model.conditioner
    assert not torch.equal(plain.dim_mapper.bias.detach(), null_row) and plain.time_branch[-1].weight.any()
    torch.testing.assert_close(seeded.dim_mapper.weight, plain.dim_mapper.weight * 0.1)  # same seed, scaled
    with pytest.raises(ConfigError, match="conditioner_init"):
        build_stage_b(files / "label2img.pt", files / "fmri_encoder.pth", _finetune_cfg(conditioner_init="zeros"))
