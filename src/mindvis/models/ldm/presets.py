"""Sizes of the latent diffusion model: the CompVis cin256-v2 preset and the embedded demo's tiny one.

Field names follow the CompVis configs (`unet_config.params`,
`first_stage_config.params.ddconfig`), so a reader holding docs/reference.md
§7.3 or a CompVis `config.yaml` finds each number under its own name:

    UnetSpec   model_channels 192, channel_mult [1,2,3,5], num_res_blocks 2,
               attention_resolutions [8,4,2] (downsampling factors ds: level l
               of the UNet works at ds = 2**l, so attention sits at levels 1..3,
               not at the full-resolution level 0; the middle block always has it),
               num_heads 1 (one head whose width is the level's channel count),
               transformer_depth 1, context_dim 512, time_embed_dim 768 (= 4 x 192)
    VqSpec     VQ-f4: ch 128, ch_mult [1,2,4], num_res_blocks 2, z_channels 3,
               embed_dim 3, n_embed 8192, no attention inside the levels
    ScheduleSpec  linear in sqrt space 0.0015 -> 0.0195, T = 1000, epsilon, scale factor 1.0

`tiny` differs in one non-size choice: its UNet predicts v (v = sqrt(a) eps -
sqrt(1 - a) x0) instead of the noise. The demo trains its prior from scratch
in minutes on a CPU; with this schedule (alpha_bar = 9e-4 at t = 900, 1.4e-4
at t = 999) an error e in the predicted noise becomes an error e / sqrt(alpha_bar)
(30-80 x e) in the implied image at the noisiest steps, so an epsilon model shows
no shapes until it is trained far longer than the demo allows (measured: none
after 2000 steps). A v model predicts the image itself there.
Set `prediction_type: epsilon` to train the demo exactly like the paper.

`tiny` keeps every structural choice (levels with and without attention, one
head, a 77-token fMRI context, the time-conditioning branch) at sizes that
train on two CPU cores in minutes: 32 px images (the demo's digits are 8 x 8
drawings, upsampled), VQ-f4 latents 3 x 8 x 8.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from mindvis.utils.errors import ConfigError


def level_block_types(spec: UnetSpec | VqSpec, attention_block: str, plain_block: str,
                      lowest_first: bool = False) -> tuple[str, ...]:
    """The diffusers block type of each level: `attention_block` where the level has attention, else
    `plain_block`; `lowest_first` lists them from the lowest resolution up (diffusers' up blocks)."""
    levels = range(spec.n_levels)
    order = reversed(levels) if lowest_first else levels
    return tuple(attention_block if spec.level_has_attention(i) else plain_block for i in order)


@dataclass(frozen=True)
class UnetSpec:
    sample_size: int  # latent side (CompVis `image_size` of the UNet)
    in_channels: int
    out_channels: int
    model_channels: int
    channel_mult: tuple[int, ...]
    num_res_blocks: int
    attention_resolutions: tuple[int, ...]  # downsampling factors ds = 2**level that get a transformer
    num_heads: int
    transformer_depth: int
    context_dim: int
    time_embed_dim: int
    norm_num_groups: int = 32

    @property
    def block_channels(self) -> tuple[int, ...]:
        return tuple(self.model_channels * m for m in self.channel_mult)

    @property
    def n_levels(self) -> int:
        return len(self.channel_mult)

    def level_has_attention(self, level: int) -> bool:
        return 2**level in self.attention_resolutions

    def validate(self) -> UnetSpec:
        if not self.channel_mult or min(self.channel_mult) < 1:
            raise ConfigError(f"unet.channel_mult must be positive integers, got {list(self.channel_mult)}")
        for name in ("sample_size", "in_channels", "out_channels", "model_channels", "num_res_blocks", "num_heads",
                     "transformer_depth", "context_dim", "time_embed_dim", "norm_num_groups"):
            if getattr(self, name) < 1:
                raise ConfigError(f"unet.{name} must be positive, got {getattr(self, name)}")
        for width in self.block_channels:
            if width % self.norm_num_groups:
                raise ConfigError(f"unet: {width} channels do not split into {self.norm_num_groups} norm groups")
            if width % self.num_heads:
                raise ConfigError(f"unet: {width} channels do not split into {self.num_heads} heads")
        if self.sample_size % 2 ** (len(self.channel_mult) - 1):
            raise ConfigError(f"unet.sample_size {self.sample_size} is not divisible by the "
                              f"{2 ** (len(self.channel_mult) - 1)} of its {len(self.channel_mult)} levels")
        return self


@dataclass(frozen=True)
class VqSpec:
    resolution: int  # image side the autoencoder works at
    in_channels: int
    out_ch: int
    ch: int
    ch_mult: tuple[int, ...]
    num_res_blocks: int
    z_channels: int
    embed_dim: int
    n_embed: int
    attn_resolutions: tuple[int, ...] = ()  # pixel sides (at that level) with attention inside the level
    norm_num_groups: int = 32

    @property
    def downsampling(self) -> int:
        return 2 ** (len(self.ch_mult) - 1)

    @property
    def latent_size(self) -> int:
        return self.resolution // self.downsampling

    @property
    def n_levels(self) -> int:
        return len(self.ch_mult)

    def level_has_attention(self, level: int) -> bool:
        return self.resolution // 2**level in self.attn_resolutions

    def validate(self) -> VqSpec:
        for name in ("resolution", "in_channels", "out_ch", "ch", "num_res_blocks", "z_channels", "embed_dim",
                     "n_embed", "norm_num_groups"):
            if getattr(self, name) < 1:
                raise ConfigError(f"vq.{name} must be positive, got {getattr(self, name)}")
        if not self.ch_mult or min(self.ch_mult) < 1:
            raise ConfigError(f"vq.ch_mult must be positive integers, got {list(self.ch_mult)}")
        for width in (self.ch * m for m in self.ch_mult):
            if width % self.norm_num_groups:
                raise ConfigError(f"vq: {width} channels do not split into {self.norm_num_groups} norm groups")
        if self.resolution % self.downsampling:
            raise ConfigError(f"vq.resolution {self.resolution} is not divisible by {self.downsampling}")
        return self


PREDICTION_TYPES = ("epsilon", "v_prediction")


@dataclass(frozen=True)
class ScheduleSpec:
    timesteps: int = 1000
    linear_start: float = 0.0015  # beta_1; betas are linear in sqrt space ("scaled_linear" in diffusers)
    linear_end: float = 0.0195
    scale_factor: float = 1.0  # latents = scale_factor * VQ encoder output
    prediction_type: str = "epsilon"  # what the UNet predicts: epsilon (CompVis, MinD-Vis) | v_prediction

    def validate(self) -> ScheduleSpec:
        if self.timesteps < 2 or not 0 < self.linear_start < self.linear_end < 1 or self.scale_factor <= 0:
            raise ConfigError(f"invalid noise schedule {asdict(self)}")
        if self.prediction_type not in PREDICTION_TYPES:
            raise ConfigError(f"prediction_type must be one of {PREDICTION_TYPES}, got {self.prediction_type!r}")
        return self


@dataclass(frozen=True)
class LdmSpec:
    unet: UnetSpec
    vq: VqSpec
    schedule: ScheduleSpec
    context_len: int = 77  # fMRI context tokens (the channel mapper's output), as CLIP's 77

    def validate(self) -> LdmSpec:
        self.unet.validate()
        self.vq.validate()
        self.schedule.validate()
        if self.unet.sample_size != self.vq.latent_size:
            raise ConfigError(f"the UNet works on {self.unet.sample_size}-px latents but the VQ gives "
                              f"{self.vq.latent_size} px ({self.vq.resolution} / {self.vq.downsampling})")
        if self.unet.in_channels != self.vq.embed_dim or self.unet.out_channels != self.vq.embed_dim:
            raise ConfigError(f"UNet channels {self.unet.in_channels}/{self.unet.out_channels} differ from the "
                              f"VQ latent channels {self.vq.embed_dim}")
        if self.context_len < 2:
            raise ConfigError(f"context_len must be at least 2, got {self.context_len}")
        return self

    def as_dict(self) -> dict[str, Any]:
        return spec_to_dict(self)


PAPER = LdmSpec(
    unet=UnetSpec(sample_size=64, in_channels=3, out_channels=3, model_channels=192, channel_mult=(1, 2, 3, 5),
                  num_res_blocks=2, attention_resolutions=(8, 4, 2), num_heads=1, transformer_depth=1,
                  context_dim=512, time_embed_dim=768),
    vq=VqSpec(resolution=256, in_channels=3, out_ch=3, ch=128, ch_mult=(1, 2, 4), num_res_blocks=2, z_channels=3,
              embed_dim=3, n_embed=8192),
    schedule=ScheduleSpec(),
)

TINY = LdmSpec(
    unet=UnetSpec(sample_size=8, in_channels=3, out_channels=3, model_channels=32, channel_mult=(1, 2, 3),
                  num_res_blocks=1, attention_resolutions=(4, 2), num_heads=1, transformer_depth=1,
                  context_dim=64, time_embed_dim=128, norm_num_groups=8),
    vq=VqSpec(resolution=32, in_channels=3, out_ch=3, ch=16, ch_mult=(1, 2, 4), num_res_blocks=1, z_channels=3,
              embed_dim=3, n_embed=1024, norm_num_groups=8),
    schedule=ScheduleSpec(prediction_type="v_prediction"),
)

PRESETS: dict[str, LdmSpec] = {"paper": PAPER, "tiny": TINY}


# -- plain-dict round trip (checkpoint configs hold plain data, never pickled classes) --------------
def spec_to_dict(spec: Any) -> dict[str, Any]:
    out = {}
    for f in fields(spec):
        value = getattr(spec, f.name)
        if hasattr(value, "__dataclass_fields__"):
            value = spec_to_dict(value)
        elif isinstance(value, tuple):
            value = list(value)
        out[f.name] = value
    return out


def _from_dict(cls, data: dict[str, Any], where: str):
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}")
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
    try:
        return cls(**values)
    except TypeError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def vq_spec_from_dict(data: dict[str, Any]) -> VqSpec:
    return _from_dict(VqSpec, dict(data), "vq").validate()


def ldm_spec_from_dict(data: dict[str, Any]) -> LdmSpec:
    return LdmSpec(
        unet=_from_dict(UnetSpec, dict(data["unet"]), "unet"),
        vq=_from_dict(VqSpec, dict(data["vq"]), "vq"),
        schedule=_from_dict(ScheduleSpec, dict(data.get("schedule", {})), "schedule"),
        context_len=int(data.get("context_len", 77)),
    ).validate()


# -- the `model:` config section --------------------------------------------------------------------
@dataclass
class LdmModelConfig:
    """Config section `model`: a preset plus per-key overrides (null = the preset's value)."""

    preset: str = "tiny"  # tiny (embedded demo, 64 px) | paper (CompVis cin256-v2, 256 px)
    image_size: int | None = None  # image side = VQ resolution (paper 256, tiny 64)
    vq_ch: int | None = None  # VQ base channels (paper 128)
    vq_ch_mult: list[int] | None = None  # VQ channel multipliers per level (paper [1, 2, 4]: f4)
    vq_num_res_blocks: int | None = None  # VQ res-blocks per level (paper 2)
    vq_n_embed: int | None = None  # codebook size (paper 8192)
    vq_embed_dim: int | None = None  # latent channels = z_channels = embed_dim (paper 3)
    unet_model_channels: int | None = None  # UNet base channels (paper 192)
    unet_channel_mult: list[int] | None = None  # UNet channel multipliers (paper [1, 2, 3, 5])
    unet_num_res_blocks: int | None = None  # UNet res-blocks per level (paper 2)
    unet_attention_resolutions: list[int] | None = None  # downsampling factors with attention (paper [8, 4, 2])
    unet_num_heads: int | None = None  # attention heads (paper 1)
    context_dim: int | None = None  # cross-attention width (paper 512)
    time_embed_dim: int | None = None  # time-embedding width (paper 768)
    norm_num_groups: int | None = None  # GroupNorm groups of both networks (paper 32)
    context_len: int | None = None  # fMRI context tokens (paper 77)
    prediction_type: str | None = None  # epsilon (paper) | v_prediction (tiny: trains in minutes from scratch)


def resolve_ldm_spec(cfg: LdmModelConfig) -> LdmSpec:
    """The preset with the config's non-null keys applied (latent size follows the image size)."""
    if cfg.preset not in PRESETS:
        raise ConfigError(f"model.preset must be one of {sorted(PRESETS)}, got {cfg.preset!r}")
    base = PRESETS[cfg.preset]

    def pick(value, default):
        return default if value is None else (tuple(value) if isinstance(value, list) else value)

    vq = replace(base.vq, resolution=pick(cfg.image_size, base.vq.resolution), ch=pick(cfg.vq_ch, base.vq.ch),
                 ch_mult=pick(cfg.vq_ch_mult, base.vq.ch_mult),
                 num_res_blocks=pick(cfg.vq_num_res_blocks, base.vq.num_res_blocks),
                 n_embed=pick(cfg.vq_n_embed, base.vq.n_embed), embed_dim=pick(cfg.vq_embed_dim, base.vq.embed_dim),
                 z_channels=pick(cfg.vq_embed_dim, base.vq.z_channels),
                 norm_num_groups=pick(cfg.norm_num_groups, base.vq.norm_num_groups))
    unet = replace(base.unet, sample_size=vq.latent_size, in_channels=vq.embed_dim, out_channels=vq.embed_dim,
                   model_channels=pick(cfg.unet_model_channels, base.unet.model_channels),
                   channel_mult=pick(cfg.unet_channel_mult, base.unet.channel_mult),
                   num_res_blocks=pick(cfg.unet_num_res_blocks, base.unet.num_res_blocks),
                   attention_resolutions=pick(cfg.unet_attention_resolutions, base.unet.attention_resolutions),
                   num_heads=pick(cfg.unet_num_heads, base.unet.num_heads),
                   context_dim=pick(cfg.context_dim, base.unet.context_dim),
                   time_embed_dim=pick(cfg.time_embed_dim, base.unet.time_embed_dim),
                   norm_num_groups=pick(cfg.norm_num_groups, base.unet.norm_num_groups))
    schedule = replace(base.schedule, prediction_type=pick(cfg.prediction_type, base.schedule.prediction_type))
    return LdmSpec(unet=unet, vq=vq, schedule=schedule,
                   context_len=pick(cfg.context_len, base.context_len)).validate()
