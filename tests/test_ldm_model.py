"""Stage B model: presets, conditioning shapes, the time branch, trainable sets, loss and guidance."""

from __future__ import annotations

import re

import pytest
import torch

from mindvis.models.ldm.conditioning import ClassConditioner, Condition, FmriConditioner
from mindvis.models.ldm.dc_ldm import STAGE_B_REFERENCE, DcLdm, build_fmri_ldm, build_label_ldm, guided
from mindvis.models.ldm.presets import (
    PAPER,
    TINY,
    LdmModelConfig,
    ldm_spec_from_dict,
    resolve_ldm_spec,
)
from mindvis.models.ldm.unet import build_unet, is_cross_attention_param, unet_predict
from mindvis.utils.errors import ConfigError

from ldm_factory import ENC, MICRO, N_TOKENS



# tiny models: one thread is fastest, and keeps timings steady on shared cores
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def fmri_model(seed: int = 0, use_time_cond: bool = True) -> DcLdm:
    torch.manual_seed(seed)
    return build_fmri_ldm(MICRO, ENC, N_TOKENS, use_time_cond=use_time_cond)


def test_paper_preset_is_cin256_v2():
    with torch.device("meta"):
        unet = build_unet(PAPER.unet)
    assert unet.config.block_out_channels == (192, 384, 576, 960)
    # attention at downsampling 2, 4, 8 = levels 1..3, not at full latent resolution
    assert unet.config.down_block_types == ("DownBlock2D",) + ("CrossAttnDownBlock2D",) * 3
    assert unet.config.up_block_types == ("CrossAttnUpBlock2D",) * 3 + ("UpBlock2D",)
    assert unet.config.cross_attention_dim == 512 and unet.config.time_embedding_dim == 768
    assert unet.time_embedding.linear_1.weight.shape == (768, 192)
    block = unet.down_blocks[3].attentions[0].transformer_blocks[0]
    assert block.attn1.heads == 1 and block.attn2.heads == 1  # one head as wide as the level (960)
    assert block.attn2.to_k.weight.shape == (960, 512)
    assert sum(p.numel() for p in unet.parameters()) == 400_920_579  # LDM-4 cin: ~400 M
    assert PAPER.vq.latent_size == 64 and PAPER.vq.n_embed == 8192 and PAPER.vq.ch_mult == (1, 2, 4)
    assert TINY.vq.latent_size == 8 and TINY.unet.sample_size == 8


def test_model_config_overrides_and_dict_round_trip():
    spec = resolve_ldm_spec(LdmModelConfig(preset="tiny", image_size=32, unet_model_channels=16, context_dim=32))
    assert spec.vq.resolution == 32 and spec.unet.sample_size == 8  # latent size follows the image size
    assert spec.unet.model_channels == 16 and spec.unet.context_dim == 32
    assert ldm_spec_from_dict(spec.as_dict()) == spec
    with pytest.raises(ConfigError):
        resolve_ldm_spec(LdmModelConfig(preset="huge"))
    with pytest.raises(ConfigError):
        resolve_ldm_spec(LdmModelConfig(image_size=30))  # not divisible by the VQ's 4


def test_context_and_time_condition_shapes():
    model = fmri_model()
    fmri = torch.randn(3, 1, N_TOKENS * 16)
    cond = model.condition(fmri)
    assert cond.context.shape == (3, 77, MICRO.unet.context_dim)
    assert cond.time_cond.shape == (3, MICRO.unet.time_embed_dim)
    conditioner = model.conditioner
    assert conditioner.channel_mapper[0].weight.shape == (N_TOKENS // 2, N_TOKENS, 1)
    assert conditioner.channel_mapper[1].weight.shape == (77, N_TOKENS // 2, 1)
    assert conditioner.dim_mapper.weight.shape == (MICRO.unet.context_dim, ENC.embed_dim)
    assert [tuple(m.weight.shape) for m in conditioner.time_branch] == [(38, 77, 1), (1, 38, 1), (16, 8)]
    # the context is a function of the encoder tokens: mapper(tokens) by hand
    tokens = conditioner.encoder.encode(fmri)
    by_hand = conditioner.dim_mapper(torch.einsum("on,bnd->bod", conditioner.channel_mapper[1].weight[..., 0],
                                                  torch.einsum("on,bnd->bod",
                                                               conditioner.channel_mapper[0].weight[..., 0], tokens)
                                                  + conditioner.channel_mapper[0].bias[None, :, None])
                                     + conditioner.channel_mapper[1].bias[None, :, None])
    torch.testing.assert_close(cond.context, by_hand, rtol=1e-5, atol=1e-5)
    assert model.condition(fmri[:1]).context.shape == (1, 77, 8)


def test_time_branch_is_added_to_the_time_embedding():
    model = fmri_model()
    unet = model.unet
    x = torch.randn(2, 3, 4, 4)
    t = torch.tensor([10, 900])
    context = torch.randn(2, 77, 8)
    shift = torch.randn(2, 16)
    with torch.no_grad():
        via_class_labels = unet_predict(unet, x, t, context, shift)
        plain = unet_predict(unet, x, t, context, None)
        # the same shift added by hand to the output of the UNet's time embedding
        original = unet.time_embedding.forward
        unet.time_embedding.forward = lambda *a, **k: original(*a, **k) + shift
        try:
            by_hand = unet_predict(unet, x, t, context, None)
        finally:
            unet.time_embedding.forward = original
    torch.testing.assert_close(via_class_labels, by_hand, rtol=1e-5, atol=1e-6)
    assert (via_class_labels - plain).abs().max() > 1e-3  # the branch changes the prediction


def test_fmri_changes_prediction_through_time_branch_alone():
    model = fmri_model()
    x, t = torch.randn(2, 3, 4, 4), torch.tensor([500, 500])
    cond = model.condition(torch.randn(2, 1, N_TOKENS * 16))
    with torch.no_grad():
        with_time = model.predict(x, t, cond)
        without = model.predict(x, t, Condition(cond.context, None))
    assert (with_time - without).abs().max() > 1e-3
    assert fmri_model(use_time_cond=False).conditioner.time_branch is None


def test_reference_trainable_set():
    model = fmri_model()
    names = {n for n, p in model.named_parameters() if p.requires_grad}
    unet_names = {n for n in names if n.startswith("unet.")}
    assert unet_names and all(re.search(r"transformer_blocks\.\d+\.(attn2|norm2)\.", n) for n in unet_names)
    # every cross-attention and its norm in the UNet (here: 1 down, 1 mid, 2 up transformers)
    assert {n.split("transformer_blocks")[0] for n in unet_names} == {
        "unet.down_blocks.1.attentions.0.", "unet.mid_block.attentions.0.", "unet.up_blocks.0.attentions.0.",
        "unet.up_blocks.0.attentions.1."}
    assert not any(".resnets." in n for n in names)  # diffusers res-blocks also have a norm2: not trained
    assert {n for n in names if n.startswith("conditioner.")} == {
        n for n, _ in model.named_parameters() if n.startswith("conditioner.")}
    assert not any(n.startswith("vq.") for n in names)
    assert not is_cross_attention_param("unet.down_blocks.0.resnets.0.norm2.weight")

    counts = model.set_trainable(["unet", *STAGE_B_REFERENCE])
    assert counts["unet"] == sum(p.numel() for p in model.unet.parameters())
    with pytest.raises(ConfigError):
        model.set_trainable(["everything"])


def test_training_step_moves_only_the_trainable_parameters():
    model = fmri_model()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    images = torch.rand(4, 3, 16, 16) * 2 - 1
    loss = model.diffusion_loss(images, torch.randn(4, 1, N_TOKENS * 16), torch.Generator().manual_seed(0))
    loss.backward()
    opt.step()
    for name, p in model.named_parameters():
        changed = not torch.equal(p.detach(), before[name])
        if name in trainable and p.grad is not None:
            assert changed, name
        if name not in trainable:
            assert not changed, name
    assert not torch.equal(model.unet.up_blocks[0].attentions[0].transformer_blocks[0].attn2.to_k.weight,
                           before["unet.up_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.weight"])


def test_diffusion_loss_depends_only_on_the_generator_seed():
    model = fmri_model()
    images, fmri = torch.rand(3, 3, 16, 16) * 2 - 1, torch.randn(3, 1, N_TOKENS * 16)
    with torch.no_grad():
        a = model.diffusion_loss(images, fmri, torch.Generator().manual_seed(5))
        b = model.diffusion_loss(images, fmri, torch.Generator().manual_seed(5))
        c = model.diffusion_loss(images, fmri, torch.Generator().manual_seed(6))
    assert float(a) == float(b) and float(a) != float(c)


def test_guidance_formula_and_scale_one_is_the_conditional_model():
    ec, eu = torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4)
    torch.testing.assert_close(guided(ec, eu, 1.0), ec)
    torch.testing.assert_close(guided(ec, eu, 0.0), eu)
    torch.testing.assert_close(guided(ec, eu, 3.0), eu + 3 * (ec - eu))

    model = fmri_model()
    x, t = torch.randn(2, 3, 4, 4), torch.tensor([100, 700])
    cond = model.condition(torch.randn(2, 1, N_TOKENS * 16))
    with torch.no_grad():
        conditional = unet_predict(model.unet, x, t, cond.context, cond.time_cond)
        uncond = model.null_condition(2, "cpu")
        unconditional = unet_predict(model.unet, x, t, uncond.context, uncond.time_cond)
        torch.testing.assert_close(model.predict(x, t, cond, guidance_scale=1.0), conditional)
        torch.testing.assert_close(model.predict(x, t, cond, guidance_scale=2.5),
                                   unconditional + 2.5 * (conditional - unconditional), rtol=1e-4, atol=1e-5)


def test_condition_dropout_uses_the_unconditional_input():
    model = fmri_model()
    cond = model.condition(torch.randn(3, 1, N_TOKENS * 16))
    dropped = model.conditioner.drop(cond, torch.tensor([True, False, True]))
    null = model.null_condition(3, "cpu")
    assert torch.equal(dropped.context[0], torch.zeros(77, 8)) and torch.equal(dropped.context[1], cond.context[1])
    torch.testing.assert_close(dropped.time_cond[2], null.time_cond[2])

    labels = ClassConditioner(n_classes=5, context_dim=8)
    c = labels(torch.tensor([0, 4]))
    assert c.context.shape == (2, 1, 8) and c.time_cond is None
    d = labels.drop(c, torch.tensor([True, False]))
    assert torch.equal(d.context[0, 0], labels.embedding.weight[5]) and torch.equal(d.context[1], c.context[1])


def test_label_prior_model_trains_unet_and_class_embedder_only():
    model = build_label_ldm(MICRO, n_classes=10)
    assert model.conditioner.embedding.weight.shape == (11, 8)  # + the 'no class' row
    trainable = {n.split(".")[0] for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"unet", "conditioner"}
    assert all(not p.requires_grad for p in model.vq.parameters())
    with pytest.raises(ValueError):
        FmriConditioner(fmri_model().conditioner.encoder.__class__(ENC, 1, with_decoder=False))


def test_start_from_prior_makes_stage_b_the_priors_unconditional_model():
    """fMRI scale 0: every context token is the 'no class' embedding and the time branch adds nothing, so the
    stage B UNet predicts exactly what the label prior predicts for 'no class'; a small scale stays close."""
    torch.manual_seed(0)
    prior = build_label_ldm(MICRO, n_classes=4)
    stage_b = fmri_model()
    stage_b.unet.load_state_dict(prior.unet.state_dict())
    table = prior.conditioner.embedding.weight.detach()
    fmri = torch.randn(3, 1, N_TOKENS * 16)
    latents = torch.randn(3, MICRO.unet.in_channels, MICRO.unet.sample_size, MICRO.unet.sample_size)
    steps = torch.tensor([10, 500, 990])
    with torch.no_grad():
        expected = prior.predict(latents, steps, prior.null_condition(3, "cpu"))
        before = stage_b.predict(latents, steps, stage_b.condition(fmri))
        stage_b.conditioner.start_from_prior(table, fmri_scale=0.0)
        cond = stage_b.condition(fmri)
        assert torch.equal(cond.time_cond, torch.zeros_like(cond.time_cond))
        torch.testing.assert_close(cond.context, table[-1].expand_as(cond.context))
        torch.testing.assert_close(stage_b.predict(latents, steps, cond), expected, rtol=1e-5, atol=1e-5)
        assert not torch.allclose(before, expected, atol=1e-3)  # random mappers: a different model

        scaled = fmri_model()
        scaled.conditioner.start_from_prior(table, fmri_scale=0.1)
        ctx = scaled.condition(fmri).context
        spread = (ctx - table[-1]).norm(dim=-1) / table[-1].norm()
        assert 0 < spread.max() < 1  # the fMRI moves the tokens, but from the prior's 'no class' point
    with pytest.raises(ValueError, match="wide context"):
        stage_b.conditioner.start_from_prior(torch.zeros(5, 3))
