"""CompVis / MinD-Vis checkpoint layouts <-> our diffusers modules.

The CompVis- and MinD-Vis-layout dicts are produced two ways: by our reverse
converter (then checked against hand-listed canonical names and shapes that
follow from CompVis's documented layout) and by building dicts from those
canonical names; converting them must use every key, match every shape and
convert back to the same tensors.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from mindvis.checkpoints.compvis_ldm import (
    export_compvis_state,
    read_compvis_ldm,
    read_vq_checkpoint,
    save_compvis_checkpoint,
    unet_from_compvis,
    unet_to_compvis,
    vq_from_compvis,
    vq_to_compvis,
)
from mindvis.checkpoints.compvis_names import UNET_PREFIX
from mindvis.checkpoints.compvis_specs import infer_unet_spec, infer_vq_spec, schedule_buffers
from mindvis.checkpoints.mindvis_ldm import MASK_TOKEN_DROP, export_mindvis_state, load_finetuned, save_finetuned
from mindvis.models.ldm.autoencoder import build_vq
from mindvis.models.ldm.dc_ldm import build_fmri_ldm, build_label_ldm, ddpm_scheduler
from mindvis.models.ldm.presets import TINY, LdmSpec, ScheduleSpec, UnetSpec, VqSpec
from mindvis.models.ldm.unet import build_unet
from mindvis.models.presets import ArchSpec
from mindvis.utils.errors import InputDataError

ENC = ArchSpec(patch_size=16, embed_dim=16, depth=1, num_heads=2, mlp_ratio=1.0, decoder_embed_dim=8,
               decoder_depth=1, decoder_num_heads=2)
# CompVis always uses 32 norm groups, which shapes cannot reveal: a small "CompVis-like" size with 32 groups
COMPVIS_SMALL = LdmSpec(
    unet=UnetSpec(sample_size=8, in_channels=3, out_channels=3, model_channels=32, channel_mult=(1, 2),
                  num_res_blocks=1, attention_resolutions=(2,), num_heads=1, transformer_depth=1, context_dim=16,
                  time_embed_dim=64, norm_num_groups=32),
    vq=VqSpec(resolution=16, in_channels=3, out_ch=3, ch=32, ch_mult=(1, 1), num_res_blocks=1, z_channels=3,
              embed_dim=3, n_embed=16, norm_num_groups=32),
    schedule=ScheduleSpec(),
)


# tiny models: one thread is fastest, and keeps timings steady on shared cores
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _randomised(module: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Distinct random values in every tensor, so a swapped key cannot go unnoticed."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=gen))
    return module


# -- hand-listed canonical names and shapes for the TINY preset ------------------------------------------
# UNet: model_channels 32, channel_mult (1, 2, 3), 1 res-block per level, attention at ds 2 and 4
# (levels 1, 2), context 64, time embedding 128. Input blocks: 0 conv_in; level 0: 1; down: 2;
# level 1: 3 (+transformer); down: 4; level 2: 5 (+transformer). Output blocks (2 per level, lowest
# resolution first): level 2: 0, 1 (+upsample at slot 2); level 1: 2, 3 (+upsample at 2); level 0: 4, 5.
# Skip widths: [32, 32, 32, 64, 64, 96] popped from the end.
CANONICAL_UNET = {
    "input_blocks.0.0.weight": (32, 3, 3, 3),
    "time_embed.0.weight": (128, 32), "time_embed.2.weight": (128, 128),
    "input_blocks.1.0.in_layers.0.weight": (32,), "input_blocks.1.0.in_layers.2.weight": (32, 32, 3, 3),
    "input_blocks.1.0.emb_layers.1.weight": (32, 128), "input_blocks.1.0.out_layers.0.bias": (32,),
    "input_blocks.1.0.out_layers.3.weight": (32, 32, 3, 3),
    "input_blocks.2.0.op.weight": (32, 32, 3, 3),
    "input_blocks.3.0.skip_connection.weight": (64, 32, 1, 1),
    "input_blocks.3.1.norm.weight": (64,), "input_blocks.3.1.proj_in.weight": (64, 64, 1, 1),
    "input_blocks.3.1.transformer_blocks.0.attn1.to_q.weight": (64, 64),
    "input_blocks.3.1.transformer_blocks.0.attn2.to_k.weight": (64, 64),
    "input_blocks.3.1.transformer_blocks.0.attn2.to_out.0.bias": (64,),
    "input_blocks.3.1.transformer_blocks.0.ff.net.0.proj.weight": (512, 64),
    "input_blocks.3.1.transformer_blocks.0.ff.net.2.weight": (64, 256),
    "input_blocks.3.1.transformer_blocks.0.norm2.weight": (64,),
    "input_blocks.3.1.proj_out.weight": (64, 64, 1, 1),
    "input_blocks.4.0.op.weight": (64, 64, 3, 3),
    "input_blocks.5.0.skip_connection.weight": (96, 64, 1, 1), "input_blocks.5.1.proj_in.weight": (96, 96, 1, 1),
    "middle_block.0.in_layers.2.weight": (96, 96, 3, 3), "middle_block.1.transformer_blocks.0.attn2.to_v.weight":
        (96, 64), "middle_block.2.out_layers.3.weight": (96, 96, 3, 3),
    "output_blocks.0.0.in_layers.0.weight": (192,), "output_blocks.0.0.skip_connection.weight": (96, 192, 1, 1),
    "output_blocks.0.1.proj_in.weight": (96, 96, 1, 1),
    "output_blocks.1.0.in_layers.0.weight": (160,), "output_blocks.1.2.conv.weight": (96, 96, 3, 3),
    "output_blocks.2.0.in_layers.0.weight": (160,), "output_blocks.2.0.out_layers.3.weight": (64, 64, 3, 3),
    "output_blocks.3.0.in_layers.0.weight": (96,), "output_blocks.3.1.transformer_blocks.0.attn2.to_k.weight":
        (64, 64), "output_blocks.3.2.conv.weight": (64, 64, 3, 3),
    "output_blocks.4.0.in_layers.0.weight": (96,), "output_blocks.4.0.skip_connection.weight": (32, 96, 1, 1),
    "output_blocks.5.0.in_layers.0.weight": (64,), "output_blocks.5.0.emb_layers.1.weight": (32, 128),
    "out.0.weight": (32,), "out.2.weight": (3, 32, 3, 3),
}
ABSENT_UNET = ("input_blocks.1.1.norm.weight", "output_blocks.5.1.conv.weight", "output_blocks.4.1.norm.weight",
               "input_blocks.6.0.op.weight", "label_emb.weight")

# VQ: ch 16, ch_mult (1, 2, 4), 1 res-block per level (decoder: 2), z 3, embed 3, 1024 codes, mid attention only
CANONICAL_VQ = {
    "encoder.conv_in.weight": (16, 3, 3, 3), "encoder.down.0.block.0.conv1.weight": (16, 16, 3, 3),
    "encoder.down.0.downsample.conv.weight": (16, 16, 3, 3),
    "encoder.down.1.block.0.nin_shortcut.weight": (32, 16, 1, 1), "encoder.down.1.block.0.norm2.weight": (32,),
    "encoder.down.2.block.0.conv2.weight": (64, 64, 3, 3),
    "encoder.mid.block_1.conv1.weight": (64, 64, 3, 3), "encoder.mid.attn_1.q.weight": (64, 64, 1, 1),
    "encoder.mid.attn_1.proj_out.weight": (64, 64, 1, 1), "encoder.mid.attn_1.norm.weight": (64,),
    "encoder.norm_out.weight": (64,), "encoder.conv_out.weight": (3, 64, 3, 3),
    "quant_conv.weight": (3, 3, 1, 1), "quantize.embedding.weight": (1024, 3), "post_quant_conv.weight": (3, 3, 1, 1),
    "decoder.conv_in.weight": (64, 3, 3, 3), "decoder.mid.attn_1.v.weight": (64, 64, 1, 1),
    "decoder.mid.block_2.norm1.weight": (64,), "decoder.up.2.block.1.conv1.weight": (64, 64, 3, 3),
    "decoder.up.2.upsample.conv.weight": (64, 64, 3, 3), "decoder.up.1.block.0.nin_shortcut.weight": (32, 64, 1, 1),
    "decoder.up.1.upsample.conv.weight": (32, 32, 3, 3), "decoder.up.0.block.0.nin_shortcut.weight": (16, 32, 1, 1),
    "decoder.up.0.block.1.conv2.weight": (16, 16, 3, 3), "decoder.norm_out.weight": (16,),
    "decoder.conv_out.weight": (3, 16, 3, 3),
}
ABSENT_VQ = ("encoder.down.2.downsample.conv.weight", "decoder.up.0.upsample.conv.weight",
             "encoder.down.0.block.0.nin_shortcut.weight", "decoder.up.2.block.0.nin_shortcut.weight")


def test_unet_keys_follow_the_compvis_layout_and_round_trip():
    unet = _randomised(build_unet(TINY.unet))
    ours = unet.state_dict()
    theirs = unet_to_compvis(ours, TINY.unet)
    assert len(theirs) == len(ours)
    for key, shape in CANONICAL_UNET.items():
        assert tuple(theirs[key].shape) == shape, key
    for key in ABSENT_UNET:
        assert key not in theirs
    assert not any(word in k for k in theirs for word in ("down_blocks", "resnets", "mid_block", "time_embedding"))
    back = unet_from_compvis(theirs, ours, TINY.unet)
    assert back.keys() == ours.keys() and all(torch.equal(back[k], ours[k]) for k in ours)
    # the sizes can be read back from the CompVis tensors alone
    assert infer_unet_spec(theirs, sample_size=8, norm_num_groups=8) == TINY.unet


def test_vq_keys_follow_the_compvis_layout_and_round_trip():
    vq = _randomised(build_vq(TINY.vq))
    ours = vq.state_dict()
    theirs = vq_to_compvis(ours, TINY.vq)
    assert len(theirs) == len(ours)
    for key, shape in CANONICAL_VQ.items():
        assert tuple(theirs[key].shape) == shape, key
    for key in ABSENT_VQ:
        assert key not in theirs
    back = vq_from_compvis(theirs, ours, TINY.vq)
    assert all(torch.equal(back[k], ours[k]) for k in ours) and back.keys() == ours.keys()
    # attention projections: CompVis 1x1 conv weights are our Linear weights
    assert torch.equal(theirs["encoder.mid.attn_1.q.weight"][:, :, 0, 0],
                       ours["encoder.mid_block.attentions.0.to_q.weight"])
    assert infer_vq_spec(theirs, resolution=32, norm_num_groups=8) == TINY.vq


def test_dicts_built_from_canonical_names_load():
    """A dict made only from CompVis names (values by hand) lands on the right diffusers tensors."""
    vq = build_vq(TINY.vq)
    expected = vq.state_dict()
    theirs = {k: torch.full(v.shape, float(i)) for i, (k, v) in enumerate(vq_to_compvis(expected, TINY.vq).items())}
    theirs["encoder.mid.attn_1.q.weight"] = torch.arange(64 * 64, dtype=torch.float32).reshape(64, 64, 1, 1)
    theirs["decoder.up.0.block.0.nin_shortcut.weight"] = torch.full((16, 32, 1, 1), -7.0)
    ours = vq_from_compvis(theirs, expected, TINY.vq)
    assert torch.equal(ours["encoder.mid_block.attentions.0.to_q.weight"],
                       torch.arange(64 * 64, dtype=torch.float32).reshape(64, 64))
    # CompVis decoder.up.0 is the full-resolution level = the LAST diffusers up block
    assert torch.equal(ours["decoder.up_blocks.2.resnets.0.conv_shortcut.weight"], torch.full((16, 32, 1, 1), -7.0))


def test_conversion_fails_on_unknown_missing_or_misshaped_keys():
    unet = build_unet(TINY.unet)
    ours = unet.state_dict()
    theirs = unet_to_compvis(ours, TINY.unet)
    with pytest.raises(InputDataError, match="unexpected"):
        unet_from_compvis({**theirs, "input_blocks.99.0.foo": torch.zeros(1)}, ours, TINY.unet)
    missing = dict(theirs)
    del missing["output_blocks.3.2.conv.weight"]
    with pytest.raises(InputDataError, match="missing.*output_blocks.3.2.conv.weight"):
        unet_from_compvis(missing, ours, TINY.unet)
    wrong = dict(theirs, **{"out.2.weight": torch.zeros(4, 32, 3, 3)})
    with pytest.raises(InputDataError, match="out.2.weight: shape"):
        unet_from_compvis(wrong, ours, TINY.unet)


def _compvis_file(tmp_path: Path, spec: LdmSpec, n_classes: int, ours: bool, extra: dict | None = None) -> tuple:
    torch.manual_seed(1)
    model = build_label_ldm(spec, n_classes)
    _randomised(model)
    state = export_compvis_state(model)
    state.update(extra or {})
    path = tmp_path / "label2img" / "model.ckpt"
    path.parent.mkdir(parents=True, exist_ok=True)
    mindvis = {"format": "mindvis.label2img/1", "spec": spec.as_dict()} if ours else {}
    if ours:
        save_compvis_checkpoint(path, state, mindvis)
    else:  # a Lightning checkpoint as CompVis writes it, with its config.yaml beside it
        torch.save({"state_dict": state, "epoch": 3, "global_step": 100}, path)
        cfg = {"model": {"params": {
            "linear_start": 0.0015, "linear_end": 0.0195, "timesteps": 1000,
            "unet_config": {"params": {"image_size": spec.unet.sample_size, "num_heads": 1}},
            "first_stage_config": {"params": {"ddconfig": {"resolution": spec.vq.resolution}}},
            "cond_stage_config": {"params": {"n_classes": n_classes + 1}}}}}
        (path.parent / "config.yaml").write_text(yaml.safe_dump(cfg))
    return model, state, path


def test_compvis_label2img_checkpoint_imports_with_a_report(tmp_path):
    model, state, path = _compvis_file(tmp_path, COMPVIS_SMALL, n_classes=5, ours=False,
                                       extra={UNET_PREFIX + "label_emb.weight": torch.zeros(5, 64)})
    # canonical LatentDiffusion keys are all there
    for key in ("model.diffusion_model.input_blocks.0.0.weight", "first_stage_model.quantize.embedding.weight",
                "cond_stage_model.embedding.weight", "betas", "alphas_cumprod", "scale_factor"):
        assert key in state
    assert state["cond_stage_model.embedding.weight"].shape == (6, 16)
    loaded = read_compvis_ldm(path, keep_class_embedder=False)
    assert loaded.spec == COMPVIS_SMALL  # sizes from the tensors + config.yaml
    reasons = loaded.report.reasons()
    assert reasons["class embedder (replaced by the fMRI conditioner)"] == 1
    assert reasons["class embedder of the UNet (replaced by the conditioner)"] == 1
    assert reasons["schedule buffer (recomputed from the schedule)"] == 13
    assert loaded.report.used == len(loaded.unet) + len(loaded.vq)
    # every tensor goes to the same place in a fresh model
    fresh = build_fmri_ldm(loaded.spec, ENC, 6)
    fresh.unet.load_state_dict(unet_from_compvis(loaded.unet, fresh.unet.state_dict(), loaded.spec.unet))
    fresh.vq.load_state_dict(vq_from_compvis(loaded.vq, fresh.vq.state_dict(), loaded.spec.vq))
    for key, value in model.unet.state_dict().items():
        assert torch.equal(fresh.unet.state_dict()[key], value), key
    for key, value in model.vq.state_dict().items():
        assert torch.equal(fresh.vq.state_dict()[key], value), key
    kept = read_compvis_ldm(path, keep_class_embedder=True)
    assert torch.equal(kept.class_embedding, model.conditioner.embedding.weight)


def test_compvis_checkpoint_with_unknown_keys_or_foreign_schedule_fails(tmp_path):
    _, _, path = _compvis_file(tmp_path, COMPVIS_SMALL, 3, ours=True, extra={"mystery.weight": torch.zeros(2)})
    with pytest.raises(InputDataError, match="unexpected key.*mystery.weight"):
        read_compvis_ldm(path)
    cosine = 1 - torch.cos(torch.linspace(0, 1.5, 1000)) * 0.99
    _, _, path = _compvis_file(tmp_path, COMPVIS_SMALL, 3, ours=True, extra={"betas": cosine})
    with pytest.raises(InputDataError, match="not linear in sqrt space"):
        read_compvis_ldm(path)


def test_schedule_buffers_match_diffusers_scaled_linear():
    buffers = schedule_buffers(ScheduleSpec())
    sched = ddpm_scheduler(ScheduleSpec())
    torch.testing.assert_close(buffers["betas"], sched.betas, rtol=1e-5, atol=1e-8)
    torch.testing.assert_close(buffers["alphas_cumprod"], sched.alphas_cumprod, rtol=1e-4, atol=1e-7)
    assert float(buffers["betas"][0]) == pytest.approx(0.0015) and float(buffers["betas"][-1]) == pytest.approx(0.0195)
    # linear in sqrt space: equal steps of sqrt(beta)
    steps = buffers["betas"].double().sqrt().diff()
    assert float(steps.max() - steps.min()) < 1e-6


def test_vq_checkpoint_round_trip(tmp_path):
    vq = _randomised(build_vq(TINY.vq))
    path = tmp_path / "autoencoder.pt"
    theirs = vq_to_compvis(vq.state_dict(), TINY.vq)
    save_compvis_checkpoint(path, {**theirs, "loss.discriminator.main.0.weight": torch.zeros(1)},
                            {"vq": TINY.vq.__dict__ | {"ch_mult": [1, 2, 4], "attn_resolutions": []}})
    spec, state, report, _ = read_vq_checkpoint(path)
    assert spec == TINY.vq and report.dropped == {
        "loss.discriminator.main.0.weight": "VQ training loss networks (LPIPS / discriminator)"}
    assert all(torch.equal(state[k], theirs[k]) for k in theirs)


# -- MinD-Vis finetuned.pth ------------------------------------------------------------------------------
def _stage_b(spec: LdmSpec = COMPVIS_SMALL, n_tokens: int = 6):
    torch.manual_seed(2)
    return _randomised(build_fmri_ldm(spec, ENC, n_tokens), seed=3)


def test_mindvis_state_has_the_reference_names_and_shapes():
    model = _stage_b()
    state = export_mindvis_state(model)
    n, d = 6, ENC.embed_dim
    expected = {
        "model.diffusion_model.time_embed_condtion.0.weight": (38, 77, 1),
        "model.diffusion_model.time_embed_condtion.0.bias": (38,),
        "model.diffusion_model.time_embed_condtion.1.weight": (1, 38, 1),
        "model.diffusion_model.time_embed_condtion.2.weight": (64, 16),
        "model.diffusion_model.input_blocks.0.0.weight": (32, 3, 3, 3),
        "model.diffusion_model.time_embed.0.weight": (64, 32),
        "cond_stage_model.mae.pos_embed": (1, n + 1, d), "cond_stage_model.mae.cls_token": (1, 1, d),
        "cond_stage_model.mae.patch_embed.proj.weight": (d, 1, 16),
        "cond_stage_model.mae.blocks.0.attn.qkv.weight": (3 * d, d), "cond_stage_model.mae.norm.weight": (d,),
        "cond_stage_model.channel_mapper.0.weight": (n // 2, n, 1),
        "cond_stage_model.channel_mapper.1.weight": (77, n // 2, 1),
        "cond_stage_model.dim_mapper.weight": (16, d),
        "first_stage_model.quantize.embedding.weight": (16, 3), "first_stage_model.encoder.mid.attn_1.k.weight":
            (32, 32, 1, 1),
        "betas": (1000,), "posterior_mean_coef2": (1000,),
        "cond_stage_model.mae.mask_token": (1, 1, d),  # the reference's encoder owns one (unused)
    }
    for key, shape in expected.items():
        assert tuple(state[key].shape) == shape, key
    prefixes = ("model.diffusion_model.", "first_stage_model.", "cond_stage_model.mae.",
                "cond_stage_model.channel_mapper.", "cond_stage_model.dim_mapper.")
    assert all(k.startswith(prefixes) or k in schedule_buffers(ScheduleSpec()) for k in state)
    # the reference keeps scale_factor as a plain attribute: a saved one fails its strict load
    assert "scale_factor" not in state and not any(k.startswith("cond_stage_model.mae.decoder") for k in state)
    assert torch.equal(state["cond_stage_model.mae.mask_token"], torch.zeros(1, 1, d))


@pytest.mark.parametrize("with_block", [True, False])
def test_mindvis_finetuned_round_trip(tmp_path, with_block):
    model = _stage_b()
    path = tmp_path / "finetuned.pth"
    if with_block:  # ours: sizes in the config
        from mindvis.checkpoints.mindvis_ldm import finetuned_config

        save_finetuned(path, model, finetuned_config(model, {"protocol": "clean", "test_set_exposed": False}))
    else:  # as MinD-Vis writes it: sizes only in the tensors (its config says nothing about them)
        torch.save({"model_state_dict": export_mindvis_state(model), "config": {"img_size": 16, "num_heads": 2},
                    "state": torch.get_rng_state()}, path)
    loaded = load_finetuned(path)
    assert loaded.layout.spec == model.spec and loaded.layout.n_tokens == 6 and loaded.layout.use_time_cond
    arch = loaded.layout.encoder_arch  # the encoder's sizes (stage B has no MAE decoder to read)
    assert (arch.patch_size, arch.embed_dim, arch.depth, arch.num_heads, arch.mlp_ratio) == (16, 16, 1, 2, 1.0)
    assert loaded.report.used == len(model.state_dict())
    assert set(loaded.report.reasons()) == {"schedule buffer (recomputed from the schedule)", MASK_TOKEN_DROP}
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.model.state_dict()[key], value), key
    again = export_mindvis_state(loaded.model)
    original = export_mindvis_state(model)
    assert again.keys() == original.keys() and all(torch.equal(again[k], original[k]) for k in original)
    # the imported model predicts exactly what the original does
    fmri, x, t = torch.randn(2, 1, 96), torch.randn(2, 3, 8, 8), torch.tensor([3, 800])
    with torch.no_grad():
        torch.testing.assert_close(loaded.model.predict(x, t, loaded.model.condition(fmri)),
                                   model.predict(x, t, model.condition(fmri)))


def test_mindvis_file_with_a_foreign_key_or_missing_mapper_fails(tmp_path):
    model = _stage_b()
    state = export_mindvis_state(model)
    path = tmp_path / "bad.pth"
    torch.save({"model_state_dict": {**state, "cond_stage_model.extra.weight": torch.zeros(1)},
                "config": {"num_heads": 2}}, path)
    with pytest.raises(InputDataError, match="unexpected.*cond_stage_model.extra.weight"):
        load_finetuned(path)
    pooled = {k: v for k, v in state.items() if "channel_mapper" not in k}
    torch.save({"model_state_dict": pooled, "config": {}}, path)
    with pytest.raises(InputDataError, match="global_pool"):
        load_finetuned(path)
