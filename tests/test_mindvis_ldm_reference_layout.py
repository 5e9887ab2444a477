"""A stage B checkpoint in the reference's real layout, both directions (issue 18).

`reference_stage_b_keys` lists, by hand, every key MinD-Vis's LatentDiffusion
(`dc_ldm/models/diffusion/ddpm.py`, cin256-v2's config with `use_ema: False`,
the VQ's loss `torch.nn.Identity`) holds after `fLDM` has put its
`cond_stage_model` in, following the reference's module structure: the UNet's
construction loops (`openaimodel.UNetModel`), the VQ's (`model.Encoder/Decoder`),
`fmri_encoder` (`sc_mbm/mae_for_fmri.py`, with its `mask_token`), the two
mappers and the 12 persistent schedule buffers (docs/reference.md §5 writes
the same list down). A file saved as the reference saves it (`model_state_dict`,
a pickled `config.Config_Generative_Model`, `state`) must import strictly,
encode fMRI exactly as the reference's modules compute by hand (numpy), sample,
and export back to exactly that key list, with a config the reference's own
environment unpickles as its class and our loader reads as data.
"""

from __future__ import annotations

import json
import pickletools
import subprocess
import sys
import textwrap
import types
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from ldm_factory import write_tiny_god

from mindvis.checkpoints.compvis_ldm import read_compvis_ldm
from mindvis.checkpoints.mindvis_ldm import (
    MASK_TOKEN_DROP,
    SCHEDULE_DROP,
    finetuned_config,
    load_finetuned,
    save_finetuned,
)
from mindvis.checkpoints.safe_load import UnsafeCheckpointError
from mindvis.models.ldm.sampling import SamplerConfig, sample_images
from mindvis.utils.errors import InputDataError

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# tiny sizes in the reference's structure (CompVis's GroupNorm has 32 groups: widths are multiples of 32)
UNET = dict(in_channels=3, out_channels=3, model_channels=32, channel_mult=(1, 2), num_res_blocks=1,
            attention_resolutions=(2,), transformer_depth=1, context_dim=16)
VQ = dict(ch=32, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(), in_channels=3, out_ch=3, z_channels=3,
          embed_dim=3, n_embed=16, resolution=16)
ENCODER = dict(patch_size=16, embed_dim=16, depth=1, num_heads=2, mlp_ratio=1.0, n_tokens=6)
LATENT = 16 // 2 ** (len(VQ["ch_mult"]) - 1)  # 8
SCHEDULE = dict(timesteps=1000, linear_start=0.0015, linear_end=0.0195)
SCHEDULE_BUFFERS = ("betas", "alphas_cumprod", "alphas_cumprod_prev", "sqrt_alphas_cumprod",
                    "sqrt_one_minus_alphas_cumprod", "log_one_minus_alphas_cumprod", "sqrt_recip_alphas_cumprod",
                    "sqrt_recipm1_alphas_cumprod", "posterior_variance", "posterior_log_variance_clipped",
                    "posterior_mean_coef1", "posterior_mean_coef2")


# -- the reference's key list, from its module structure -------------------------------------------------
def _linear(out, prefix, name, n_out, n_in, bias=True):
    out[f"{prefix}{name}.weight"] = (n_out, n_in)
    if bias:
        out[f"{prefix}{name}.bias"] = (n_out,)


def _conv(out, prefix, name, n_out, n_in, k, bias=True):
    out[f"{prefix}{name}.weight"] = (n_out, n_in, *k)
    if bias:
        out[f"{prefix}{name}.bias"] = (n_out,)


def _norm(out, prefix, name, n):
    out[f"{prefix}{name}.weight"] = (n,)
    out[f"{prefix}{name}.bias"] = (n,)


def _unet_res_block(out, p, c_in, c_out, temb):  # openaimodel.ResBlock (no scale-shift norm, no conv skip)
    _norm(out, p, "in_layers.0", c_in)
    _conv(out, p, "in_layers.2", c_out, c_in, (3, 3))
    _linear(out, p, "emb_layers.1", c_out, temb)
    _norm(out, p, "out_layers.0", c_out)
    _conv(out, p, "out_layers.3", c_out, c_out, (3, 3))
    if c_in != c_out:
        _conv(out, p, "skip_connection", c_out, c_in, (1, 1))


def _spatial_transformer(out, p, ch, context, depth):  # attention.SpatialTransformer, inner dim = ch
    _norm(out, p, "norm", ch)
    _conv(out, p, "proj_in", ch, ch, (1, 1))
    for d in range(depth):
        b = f"{p}transformer_blocks.{d}."
        for name in ("attn1.to_q", "attn1.to_k", "attn1.to_v", "attn2.to_q"):
            _linear(out, b, name, ch, ch, bias=False)
        _linear(out, b, "attn2.to_k", ch, context, bias=False)
        _linear(out, b, "attn2.to_v", ch, context, bias=False)
        _linear(out, b, "attn1.to_out.0", ch, ch)
        _linear(out, b, "attn2.to_out.0", ch, ch)
        _linear(out, b, "ff.net.0.proj", ch * 4 * 2, ch)  # GEGLU: gated feed-forward, inner 4 ch
        _linear(out, b, "ff.net.2", ch, ch * 4)
        for n in ("norm1", "norm2", "norm3"):
            _norm(out, b, n, ch)
    _conv(out, p, "proj_out", ch, ch, (1, 1))


def unet_keys(u) -> dict[str, tuple]:
    out: dict[str, tuple] = {}
    mc, temb = u["model_channels"], u["model_channels"] * 4
    p = "model.diffusion_model."
    _linear(out, p, "time_embed.0", temb, mc)
    _linear(out, p, "time_embed.2", temb, temb)
    # time_embed_condtion (global_pool False): Conv1d(77, 38, 1), Conv1d(38, 1, 1), Linear(context, temb)
    _conv(out, p, "time_embed_condtion.0", 38, 77, (1,))
    _conv(out, p, "time_embed_condtion.1", 1, 38, (1,))
    _linear(out, p, "time_embed_condtion.2", temb, u["context_dim"])
    _conv(out, p, "input_blocks.0.0", mc, u["in_channels"], (3, 3))
    chans, ch, ds, n = [mc], mc, 1, 1
    for level, mult in enumerate(u["channel_mult"]):
        for _ in range(u["num_res_blocks"]):
            _unet_res_block(out, f"{p}input_blocks.{n}.0.", ch, mult * mc, temb)
            ch = mult * mc
            if ds in u["attention_resolutions"]:
                _spatial_transformer(out, f"{p}input_blocks.{n}.1.", ch, u["context_dim"], u["transformer_depth"])
            chans.append(ch)
            n += 1
        if level != len(u["channel_mult"]) - 1:
            _conv(out, p, f"input_blocks.{n}.0.op", ch, ch, (3, 3))
            chans.append(ch)
            ds *= 2
            n += 1
    _unet_res_block(out, f"{p}middle_block.0.", ch, ch, temb)
    _spatial_transformer(out, f"{p}middle_block.1.", ch, u["context_dim"], u["transformer_depth"])
    _unet_res_block(out, f"{p}middle_block.2.", ch, ch, temb)
    k = 0
    for level, mult in list(enumerate(u["channel_mult"]))[::-1]:
        for i in range(u["num_res_blocks"] + 1):
            skip = chans.pop()
            _unet_res_block(out, f"{p}output_blocks.{k}.0.", ch + skip, mc * mult, temb)
            ch = mc * mult
            slot = 1
            if ds in u["attention_resolutions"]:
                _spatial_transformer(out, f"{p}output_blocks.{k}.1.", ch, u["context_dim"], u["transformer_depth"])
                slot = 2
            if level and i == u["num_res_blocks"]:
                _conv(out, p, f"output_blocks.{k}.{slot}.conv", ch, ch, (3, 3))
                ds //= 2
            k += 1
    _norm(out, p, "out.0", ch)
    _conv(out, p, "out.2", u["out_channels"], mc, (3, 3))
    return out


def _vq_resnet(out, p, c_in, c_out):  # model.ResnetBlock with temb_channels 0
    _norm(out, p, "norm1", c_in)
    _conv(out, p, "conv1", c_out, c_in, (3, 3))
    _norm(out, p, "norm2", c_out)
    _conv(out, p, "conv2", c_out, c_out, (3, 3))
    if c_in != c_out:
        _conv(out, p, "nin_shortcut", c_out, c_in, (1, 1))


def _vq_attn(out, p, c):  # model.AttnBlock: 1x1 convs
    _norm(out, p, "norm", c)
    for name in ("q", "k", "v", "proj_out"):
        _conv(out, p, name, c, c, (1, 1))


def vq_keys(v) -> dict[str, tuple]:
    out: dict[str, tuple] = {}
    p, ch, mults, nrb = "first_stage_model.", v["ch"], v["ch_mult"], v["num_res_blocks"]
    _conv(out, p, "encoder.conv_in", ch, v["in_channels"], (3, 3))
    res, in_mult = v["resolution"], (1, *mults)
    for i, mult in enumerate(mults):
        block_in, block_out = ch * in_mult[i], ch * mult
        for j in range(nrb):
            _vq_resnet(out, f"{p}encoder.down.{i}.block.{j}.", block_in, block_out)
            block_in = block_out
            if res in v["attn_resolutions"]:
                _vq_attn(out, f"{p}encoder.down.{i}.attn.{j}.", block_in)
        if i != len(mults) - 1:
            _conv(out, p, f"encoder.down.{i}.downsample.conv", block_in, block_in, (3, 3))
            res //= 2
    for part in ("encoder", "decoder"):
        top = ch * mults[-1]
        _vq_resnet(out, f"{p}{part}.mid.block_1.", top, top)
        _vq_attn(out, f"{p}{part}.mid.attn_1.", top)
        _vq_resnet(out, f"{p}{part}.mid.block_2.", top, top)
    _norm(out, p, "encoder.norm_out", block_in)
    _conv(out, p, "encoder.conv_out", v["z_channels"], block_in, (3, 3))  # double_z false
    block_in = ch * mults[-1]
    res = v["resolution"] // 2 ** (len(mults) - 1)
    _conv(out, p, "decoder.conv_in", block_in, v["z_channels"], (3, 3))
    for i in reversed(range(len(mults))):
        block_out = ch * mults[i]
        for j in range(nrb + 1):
            _vq_resnet(out, f"{p}decoder.up.{i}.block.{j}.", block_in, block_out)
            block_in = block_out
            if res in v["attn_resolutions"]:
                _vq_attn(out, f"{p}decoder.up.{i}.attn.{j}.", block_in)
        if i != 0:
            _conv(out, p, f"decoder.up.{i}.upsample.conv", block_in, block_in, (3, 3))
            res *= 2
    _norm(out, p, "decoder.norm_out", block_in)
    _conv(out, p, "decoder.conv_out", v["out_ch"], block_in, (3, 3))
    out[f"{p}quantize.embedding.weight"] = (v["n_embed"], v["embed_dim"])
    _conv(out, p, "quant_conv", v["embed_dim"], v["z_channels"], (1, 1))
    _conv(out, p, "post_quant_conv", v["z_channels"], v["embed_dim"], (1, 1))
    return out


def cond_keys(e, context_dim) -> dict[str, tuple]:
    out: dict[str, tuple] = {}
    p, d, n = "cond_stage_model.mae.", e["embed_dim"], e["n_tokens"]
    hidden = int(d * e["mlp_ratio"])
    out[p + "cls_token"] = (1, 1, d)
    out[p + "pos_embed"] = (1, n + 1, d)
    out[p + "mask_token"] = (1, 1, d)  # fmri_encoder owns one; nothing reads it when encoding
    _conv(out, p, "patch_embed.proj", d, 1, (e["patch_size"],))
    for i in range(e["depth"]):  # timm Block
        b = f"{p}blocks.{i}."
        _norm(out, b, "norm1", d)
        _linear(out, b, "attn.qkv", 3 * d, d)
        _linear(out, b, "attn.proj", d, d)
        _norm(out, b, "norm2", d)
        _linear(out, b, "mlp.fc1", hidden, d)
        _linear(out, b, "mlp.fc2", d, hidden)
    _norm(out, p, "norm", d)
    _conv(out, "cond_stage_model.", "channel_mapper.0", n // 2, n, (1,))
    _conv(out, "cond_stage_model.", "channel_mapper.1", 77, n // 2, (1,))
    _linear(out, "cond_stage_model.", "dim_mapper", context_dim, d)
    return out


def reference_stage_b_keys() -> dict[str, tuple]:
    keys = {**unet_keys(UNET), **vq_keys(VQ), **cond_keys(ENCODER, UNET["context_dim"])}
    keys.update({name: (SCHEDULE["timesteps"],) for name in SCHEDULE_BUFFERS})
    return keys


def reference_schedule() -> dict[str, np.ndarray]:
    """DDPM.register_schedule for make_beta_schedule('linear'), v_posterior 0, in float64 (stored as float32)."""
    betas = np.linspace(SCHEDULE["linear_start"] ** 0.5, SCHEDULE["linear_end"] ** 0.5, SCHEDULE["timesteps"],
                        dtype=np.float64) ** 2
    alphas = 1.0 - betas
    cum = np.cumprod(alphas)
    prev = np.append(1.0, cum[:-1])
    post = betas * (1.0 - prev) / (1.0 - cum)
    return {"betas": betas, "alphas_cumprod": cum, "alphas_cumprod_prev": prev, "sqrt_alphas_cumprod": np.sqrt(cum),
            "sqrt_one_minus_alphas_cumprod": np.sqrt(1.0 - cum), "log_one_minus_alphas_cumprod": np.log(1.0 - cum),
            "sqrt_recip_alphas_cumprod": np.sqrt(1.0 / cum), "sqrt_recipm1_alphas_cumprod": np.sqrt(1.0 / cum - 1),
            "posterior_variance": post, "posterior_log_variance_clipped": np.log(np.maximum(post, 1e-20)),
            "posterior_mean_coef1": betas * np.sqrt(prev) / (1.0 - cum),
            "posterior_mean_coef2": (1.0 - prev) * np.sqrt(alphas) / (1.0 - cum)}


# -- files as the reference writes them ----------------------------------------------------------------------
CONFIG_GENERATIVE_MODEL_SOURCE = '''
class Config_Generative_Model:
    """code/config.py's fields (values as there), hand-copied for the test."""
    def __init__(self):
        self.seed = 2022
        self.root_path = '.'
        self.kam_path = './data/Kamitani/npz'
        self.bold5000_path = './data/BOLD5000'
        self.roi = 'VC'
        self.patch_size = 16
        self.pretrain_gm_path = './pretrains/ldm/label2img'
        self.dataset = 'GOD'
        self.kam_subs = ['sbj_3']
        self.bold5000_subs = ['CSI1']
        self.pretrain_mbm_path = './pretrains/GOD/fmri_encoder.pth'
        self.img_size = 256
        self.batch_size = 5
        self.lr = 5.3e-5
        self.num_epoch = 500
        self.precision = 32
        self.accumulate_grad = 1
        self.crop_ratio = 0.2
        self.global_pool = False
        self.use_time_cond = True
        self.eval_avg = True
        self.num_samples = 5
        self.ddim_steps = 250
        self.HW = None
        self.model_meta = None
        self.checkpoint_path = None

class Config_MBM_fMRI:
    def __init__(self):
        self.patch_size, self.embed_dim, self.depth, self.num_heads = 16, 1024, 24, 16
        self.decoder_embed_dim, self.decoder_num_heads, self.mlp_ratio = 512, 16, 1.0
'''


def _reference_config_module() -> types.ModuleType:
    module = types.ModuleType("config")
    exec(CONFIG_GENERATIVE_MODEL_SOURCE, module.__dict__)  # noqa: S102 - the test's own class text
    for cls in (module.Config_Generative_Model, module.Config_MBM_fMRI):
        cls.__module__ = "config"
    return module


def _save_as_reference(path: Path, payload_of) -> None:
    """torch.save with MinD-Vis's `config` module importable only while saving (as in its scripts)."""
    module = _reference_config_module()
    sys.modules["config"] = module
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(payload_of(module), path)
    finally:
        del sys.modules["config"]


def reference_state(seed: int = 0) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    # the encoder's attention gets sharp (scale 1.5), so a wrong head count changes its output clearly
    state = {k: torch.randn(shape, generator=gen) * (1.5 if k.endswith("attn.qkv.weight") else 0.2)
             for k, shape in reference_stage_b_keys().items() if k not in SCHEDULE_BUFFERS}
    state.update({k: torch.from_numpy(v.astype(np.float32)) for k, v in reference_schedule().items()})
    return state


def write_reference_files(root: Path, num_heads: int | None = ENCODER["num_heads"], latent: int = LATENT,
                          with_yaml: bool = True, with_stage_a: bool = True) -> Path:
    """pretrains/GOD/{finetuned,fmri_encoder}.pth and pretrains/ldm/label2img/config.yaml, as the reference has them."""
    state = reference_state()
    path = root / "pretrains" / "GOD" / "finetuned.pth"

    def finetuned(module):
        config = module.Config_Generative_Model()
        config.img_size, config.output_path, config.logger, config.trainer = 16, "./results/x", None, None
        return {"model_state_dict": state, "config": config, "state": torch.get_rng_state()}

    _save_as_reference(path, finetuned)
    if with_stage_a:
        mae = {k.removeprefix("cond_stage_model.mae."): v for k, v in state.items()
               if k.startswith("cond_stage_model.mae.") and k != "cond_stage_model.mae.mask_token"}
        mae["mask_token"] = torch.zeros(1, 1, 8)  # MAEforFMRI's: decoder width, not the encoder's

        def stage_a(module):
            config = module.Config_MBM_fMRI()
            config.embed_dim, config.depth, config.num_heads = ENCODER["embed_dim"], ENCODER["depth"], num_heads
            if num_heads is None:
                del config.num_heads
            return {"model": mae, "optimizer": {}, "epoch": 3, "scaler": {}, "config": config}

        _save_as_reference(path.with_name("fmri_encoder.pth"), stage_a)
    if with_yaml:
        cfg = {"model": {"params": {
            **SCHEDULE, "image_size": latent, "channels": 3, "conditioning_key": "crossattn", "use_ema": False,
            "unet_config": {"params": {"image_size": latent, "num_heads": 1, **{k: list(v) if isinstance(v, tuple)
                                                                                 else v for k, v in UNET.items()}}},
            "first_stage_config": {"params": {"embed_dim": 3, "n_embed": 16, "ddconfig": {
                "resolution": 16, "ch": 32, "ch_mult": list(VQ["ch_mult"]), "num_res_blocks": 1, "z_channels": 3,
                "attn_resolutions": []}}}}}}
        yaml_path = root / "pretrains" / "ldm" / "label2img" / "config.yaml"
        yaml_path.parent.mkdir(parents=True, exist_ok=True)
        yaml_path.write_text(yaml.safe_dump(cfg))
    return path


# -- the reference's conditioning by hand -----------------------------------------------------------------
def _layer_norm(x, w, b, eps=1e-5):
    mu = x.mean(-1, keepdims=True)
    var = x.var(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * w + b


def _gelu(x):
    from math import erf

    return 0.5 * x * (1.0 + np.vectorize(erf)(x / np.sqrt(2.0)))


def reference_condition(state: dict[str, torch.Tensor], fmri: np.ndarray, heads: int) -> tuple[np.ndarray, np.ndarray]:
    """fmri_encoder.forward_encoder (no cls token, global_pool False) -> channel/dim mappers -> time branch."""
    s = {k: v.double().numpy() for k, v in state.items()}
    m = "cond_stage_model.mae."
    b_, v_ = fmri.shape
    patch = ENCODER["patch_size"]
    w = s[m + "patch_embed.proj.weight"][:, 0, :]  # (D, patch): Conv1d with stride = kernel = patch
    x = fmri.reshape(b_, v_ // patch, patch) @ w.T + s[m + "patch_embed.proj.bias"]
    x = x + s[m + "pos_embed"][:, 1:, :]
    d = x.shape[-1]
    hd = d // heads
    for i in range(ENCODER["depth"]):
        p = f"{m}blocks.{i}."
        h = _layer_norm(x, s[p + "norm1.weight"], s[p + "norm1.bias"])
        qkv = (h @ s[p + "attn.qkv.weight"].T + s[p + "attn.qkv.bias"]).reshape(b_, -1, 3, heads, hd)
        q, k, v = (qkv[:, :, j].transpose(0, 2, 1, 3) for j in range(3))  # (B, H, N, hd)
        att = q @ k.transpose(0, 1, 3, 2) * hd ** -0.5
        att = np.exp(att - att.max(-1, keepdims=True))
        att /= att.sum(-1, keepdims=True)
        o = (att @ v).transpose(0, 2, 1, 3).reshape(b_, -1, d)
        x = x + o @ s[p + "attn.proj.weight"].T + s[p + "attn.proj.bias"]
        h = _layer_norm(x, s[p + "norm2.weight"], s[p + "norm2.bias"])
        h = _gelu(h @ s[p + "mlp.fc1.weight"].T + s[p + "mlp.fc1.bias"])
        x = x + h @ s[p + "mlp.fc2.weight"].T + s[p + "mlp.fc2.bias"]
    x = _layer_norm(x, s[m + "norm.weight"], s[m + "norm.bias"])

    def conv_tokens(t, key):  # Conv1d(k=1) over the token axis: one weight per (out token, in token)
        return np.einsum("on,bnd->bod", s[key + ".weight"][:, :, 0], t) + s[key + ".bias"][None, :, None]

    c = conv_tokens(conv_tokens(x, "cond_stage_model.channel_mapper.0"), "cond_stage_model.channel_mapper.1")
    context = c @ s["cond_stage_model.dim_mapper.weight"].T + s["cond_stage_model.dim_mapper.bias"]
    t = "model.diffusion_model.time_embed_condtion."
    tc = conv_tokens(conv_tokens(context, t + "0"), t + "1")
    time = (tc @ s[t + "2.weight"].T + s[t + "2.bias"])[:, 0]
    return context, time


# -- tests ------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def reference_file(tmp_path_factory) -> Path:
    return write_reference_files(tmp_path_factory.mktemp("reference"))


def test_reference_saved_finetuned_imports_strictly_samples_and_exports_the_same_keys(reference_file, tmp_path):
    expected = reference_stage_b_keys()
    state = reference_state()  # the tensors the file holds (regenerated: reading it needs no config class)
    assert {k: tuple(v.shape) for k, v in state.items()} == expected

    loaded = load_finetuned(reference_file)  # stage A and config.yaml found where MinD-Vis keeps them
    assert loaded.from_reference and loaded.config_class == "config.Config_Generative_Model"
    dropped = {"cond_stage_model.mae.mask_token": MASK_TOKEN_DROP} | {k: SCHEDULE_DROP for k in SCHEDULE_BUFFERS}
    assert loaded.report.dropped == dropped  # the exact list, nothing else
    assert loaded.report.used == len(expected) - len(dropped) == len(loaded.model.state_dict())
    assert loaded.layout.encoder_arch.num_heads == 2 and "fmri_encoder.pth" in loaded.layout.sources["encoder_num_heads"]
    assert "config.yaml" in loaded.layout.sources["latent_size"] and loaded.model.spec.unet.sample_size == LATENT

    # the conditioning the imported model computes is the reference's, worked out by hand
    fmri = torch.randn(3, 1, 96, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        cond = loaded.model.condition(fmri)
    context, time = reference_condition(state, fmri[:, 0].double().numpy(), heads=2)
    np.testing.assert_allclose(cond.context.double().numpy(), context, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(cond.time_cond.double().numpy(), time, rtol=1e-4, atol=1e-5)

    samples, _ = sample_images(loaded.model, fmri[:2], SamplerConfig(sampler="plms", steps=3, n_samples=2,
                                                                     batch_size=4, seed=1))
    assert samples.shape == (2, 2, 16, 16, 3) and samples.dtype == np.uint8
    again, _ = sample_images(loaded.model, fmri[:2], SamplerConfig(sampler="plms", steps=3, n_samples=2,
                                                                   batch_size=1, seed=1))
    assert np.array_equal(samples, again)

    out = tmp_path / "finetuned.pt"
    save_finetuned(out, loaded.model, finetuned_config(loaded.model, {"roi": None}, seed=7),
                   mask_token=loaded.mask_token)
    written = _weights_only_payload(out)
    assert set(written) == {"model_state_dict", "config", "state"}
    exported = written["model_state_dict"]
    assert {k: tuple(v.shape) for k, v in exported.items()} == expected  # a strict load_state_dict's check
    for key, value in state.items():
        if key in SCHEDULE_BUFFERS:
            np.testing.assert_allclose(exported[key].double().numpy(), reference_schedule()[key], rtol=1e-5)
        else:
            assert torch.equal(exported[key], value), key
    # the exported file reads back (as ours) to the same model
    back = load_finetuned(out)
    assert not back.from_reference and back.config_class == "config.Config_Generative_Model"
    assert all(torch.equal(back.model.state_dict()[k], v) for k, v in loaded.model.state_dict().items())


def _weights_only_payload(path: Path) -> dict:
    """The file read with safe_load's rules (config as a ForeignConfig)."""
    from mindvis.checkpoints.safe_load import safe_load

    return safe_load(path)


def _data_pkl(path: Path) -> bytes:
    with zipfile.ZipFile(path) as zf:
        return zf.read(next(n for n in zf.namelist() if n.endswith("/data.pkl")))


def test_exported_config_pickle_names_only_the_reference_class_and_torch(reference_file, tmp_path):
    loaded = load_finetuned(reference_file)
    out = tmp_path / "finetuned.pt"
    save_finetuned(out, loaded.model, finetuned_config(loaded.model, {"npz": "/data/sbj_3.npz", "roi": "VC"},
                                                       seed=2022, dataset="GOD"))
    globals_ = set()
    for op, arg, _ in pickletools.genops(_data_pkl(out)):
        assert op.name not in ("STACK_GLOBAL", "INST", "OBJ"), op.name  # protocol 2: every global is a GLOBAL
        if op.name == "GLOBAL":
            globals_.add(arg.replace(" ", "."))
    assert "config.Config_Generative_Model" in globals_
    others = globals_ - {"config.Config_Generative_Model"}
    assert all(g.startswith(("torch.", "collections.OrderedDict")) for g in others), others
    assert not any(g.startswith(("mindvis", "builtins", "copyreg", "__builtin__")) for g in globals_)


def test_exported_file_unpickles_in_the_reference_environment(reference_file, tmp_path):
    """A `config.py` holding the reference's class (and nothing of ours importable) reads our file."""
    loaded = load_finetuned(reference_file)
    out = tmp_path / "finetuned.pt"
    save_finetuned(out, loaded.model, finetuned_config(loaded.model, {"npz": "/data/sbj_3.npz", "roi": "VC"},
                                                       seed=2022, dataset="GOD", ddim_steps=250))
    env = tmp_path / "reference_code"
    env.mkdir()
    (env / "config.py").write_text(CONFIG_GENERATIVE_MODEL_SOURCE)
    script = textwrap.dedent(f"""
        import json, sys
        sys.modules.pop('mindvis', None)
        import torch, config
        sd = torch.load({str(out)!r}, map_location='cpu', weights_only=False)  # torch 1.12's plain pickle
        c = sd['config']
        # gen_eval.py: assigns these, then reads the rest
        c.root_path = '.'; c.kam_path = 'data/Kamitani/npz'; c.bold5000_path = 'data/BOLD5000'
        c.pretrain_mbm_path = 'pretrains/GOD/fmri_encoder.pth'; c.pretrain_gm_path = 'pretrains/ldm/label2img'
        reads = {{k: getattr(c, k) for k in ('roi', 'patch_size', 'kam_subs', 'test_category', 'bold5000_subs',
                                            'logger', 'ddim_steps', 'global_pool', 'use_time_cond', 'num_samples',
                                            'HW', 'img_size', 'dataset', 'seed')}}
        torch.cuda.set_rng_state(sd['state'])  # what fLDM.generate does with it (queued without a GPU)
        print(json.dumps({{'is_reference_class': isinstance(c, config.Config_Generative_Model),
                           'module': type(c).__module__, 'reads': reads, 'keys': len(sd['model_state_dict']),
                           'state': sd['state'].tolist(), 'mindvis_imported': 'mindvis' in sys.modules}}))
    """)
    run = subprocess.run([sys.executable, "-c", script], cwd=env, capture_output=True, text=True, timeout=300,
                         env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(env)})
    assert run.returncode == 0, run.stderr[-2000:]
    got = json.loads(run.stdout.strip().splitlines()[-1])
    assert got["is_reference_class"] and got["module"] == "config" and not got["mindvis_imported"]
    assert got["keys"] == len(reference_stage_b_keys())
    assert got["reads"] == {"roi": "VC", "patch_size": 16, "kam_subs": ["sbj_3"], "test_category": None,
                            "bold5000_subs": ["CSI1"], "logger": None, "ddim_steps": 250, "global_pool": False,
                            "use_time_cond": True, "num_samples": 5, "HW": None, "img_size": 16, "dataset": "GOD",
                            "seed": 2022}
    # a CUDA generator state: seed 2022 as uint64 then Philox offset 0 as int64, little-endian
    assert got["state"] == list((2022).to_bytes(8, "little") + (0).to_bytes(8, "little"))


def test_our_loader_reads_the_config_as_data_and_refuses_other_code(reference_file, tmp_path):
    import os

    loaded = load_finetuned(reference_file)
    out = tmp_path / "finetuned.pt"
    save_finetuned(out, loaded.model, finetuned_config(loaded.model, {}))
    assert "config" not in sys.modules  # reading it imported no module named config
    payload = _weights_only_payload(out)
    assert payload["config"].class_name == "config.Config_Generative_Model"
    assert payload["config"].fields["mindvis"]["format"] == "mindvis.dc_ldm/1"

    class Boom:
        def __reduce__(self):
            return (os.system, ("echo should-not-run",))

    bad = tmp_path / "bad.pt"
    torch.save({**payload, "config": Boom()}, bad)
    with pytest.raises(UnsafeCheckpointError, match="system"):
        load_finetuned(bad)


def test_encoder_head_count_comes_from_the_stage_a_config(tmp_path):
    path = write_reference_files(tmp_path / "four", num_heads=4)
    state = reference_state()
    loaded = load_finetuned(path)
    assert loaded.layout.encoder_arch.num_heads == 4
    fmri = torch.randn(2, 1, 96, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        context = loaded.model.condition(fmri).context.double().numpy()
    np.testing.assert_allclose(context, reference_condition(state, fmri[:, 0].double().numpy(), heads=4)[0],
                               rtol=1e-4, atol=1e-5)
    # elsewhere, given explicitly; or the number itself
    elsewhere = tmp_path / "elsewhere.pth"
    path.with_name("fmri_encoder.pth").rename(elsewhere)
    assert load_finetuned(path, encoder_checkpoint=elsewhere).layout.encoder_arch.num_heads == 4
    assert load_finetuned(path, encoder_num_heads=8).layout.encoder_arch.num_heads == 8
    with pytest.raises(InputDataError, match="disagrees with encoder_num_heads"):
        load_finetuned(path, encoder_checkpoint=elsewhere, encoder_num_heads=2)


def test_missing_head_count_is_a_clean_error_naming_the_key(tmp_path):
    path = write_reference_files(tmp_path / "none", with_stage_a=False)
    with pytest.raises(InputDataError, match=r"head count.*encoder_num_heads.*encoder_checkpoint") as err:
        load_finetuned(path)
    assert str(path) in str(err.value) and "16" in str(err.value)  # the example value, never a silent default
    headless = write_reference_files(tmp_path / "headless", num_heads=None)
    with pytest.raises(InputDataError, match=r"fmri_encoder.pth: its config has no 'num_heads'"):
        load_finetuned(headless)


def test_latent_size_disagreeing_with_the_first_stage_is_a_clean_error(tmp_path):
    path = write_reference_files(tmp_path / "bad", latent=4)  # 16 px / 2 = 8, not 4
    with pytest.raises(InputDataError, match=r"config.yaml: image_size 4 .*disagrees with 16-px images.*8-px"):
        load_finetuned(path)
    # without any config.yaml: img_size / down-sampling, and the log says so
    plain = write_reference_files(tmp_path / "plain", with_yaml=False)
    loaded = load_finetuned(plain)
    assert loaded.model.spec.unet.sample_size == LATENT and "no config.yaml" in loaded.layout.sources["latent_size"]
    # the same check when a CompVis prior is read for training
    prior = tmp_path / "prior" / "model.ckpt"
    state = {k: v for k, v in reference_state().items() if k.startswith(("model.diffusion_model.",
                                                                         "first_stage_model."))
             and "time_embed_condtion" not in k}
    prior.parent.mkdir()
    torch.save({"state_dict": state}, prior)
    (prior.parent / "config.yaml").write_text(yaml.safe_dump({"model": {"params": {
        "image_size": 4, "unet_config": {"params": {"image_size": 4, "num_heads": 1}},
        "first_stage_config": {"params": {"ddconfig": {"resolution": 16, "ch_mult": [1, 2]}}}}}}))
    with pytest.raises(InputDataError, match=r"config.yaml: image_size 4 .*disagrees"):
        read_compvis_ldm(prior, keep_class_embedder=False)


def test_generate_on_a_mindvis_checkpoint_uses_the_reference_normalisation(reference_file, tmp_path, monkeypatch,
                                                                          caplog):
    import logging

    import mindvis.tracking
    import mindvis.generation as generation
    from mindvis.generation import cli_generate

    data = tmp_path / "god"
    data.mkdir()
    write_tiny_god(data)
    asked = []
    real_load_pairs = generation.load_pairs

    def spy(*args, **kwargs):
        asked.append(kwargs.get("normalisation"))
        return real_load_pairs(*args, **kwargs)

    monkeypatch.setattr(generation, "load_pairs", spy)
    tags = {}

    class Recorder:
        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def set_tags(self, values):
            tags.update(values)

        def log_metrics(self, *a, **k):
            pass

        log_dict = log_file_reference = log_image = log_metrics

    monkeypatch.setattr(mindvis.tracking, "tracker_for", lambda *a, **k: Recorder())
    import argparse

    args = argparse.Namespace(model=reference_file, npz=data / "sbj_1.npz", images=data / "images_256.npz",
                              dataset="god", out=tmp_path / "samples.npz", grid=None, overrides=[],
                              config=json.dumps({"sampler": "plms", "steps": 2, "n_samples": 1, "max_items": 2,
                                                 "guidance_scale": 1.0}))
    with caplog.at_level(logging.INFO, logger="mindvis.generation"):
        assert cli_generate.run(args) == 0
    assert asked == ["reference"]
    assert tags["test_normalisation"] == "reference" and tags["checkpoint_origin"] == "mindvis-reference"
    assert tags["test_set_exposed"] == "true"  # MinD-Vis picked its released epoch on the test set
    assert any("MinD-Vis checkpoint: test fMRI normalised as 'reference'" in r.getMessage() for r in caplog.records)
    with np.load(tmp_path / "samples.npz") as npz:
        assert npz["samples"].shape == (2, 1, 16, 16, 3)


def test_guidance_is_refused_for_a_mindvis_checkpoint(reference_file, tmp_path):
    # MinD-Vis never drops the condition in training: its files have no unconditional branch to guide with
    from mindvis.generation import GenerateConfig, generate_samples
    from mindvis.utils.errors import ConfigError

    data = tmp_path / "god"
    data.mkdir()
    write_tiny_god(data)
    out = tmp_path / "samples.npz"
    with pytest.raises(ConfigError, match=r"guidance_scale 3 needs a model trained with condition dropout.*"
                                          r"MinD-Vis checkpoint.*guidance_scale: 1"):
        generate_samples(reference_file, data / "sbj_1.npz", out, None,
                         GenerateConfig(sampler="plms", steps=2, n_samples=1, max_items=2, guidance_scale=3.0),
                         images=data / "images_256.npz")
    assert not out.exists()
