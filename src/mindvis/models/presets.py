"""Sizes of the SC-MBM masked autoencoder: named presets plus per-key overrides.

`paper` is MinD-Vis's configuration (docs/reference.md §7.1; the field names
follow its `Config_MBM_fMRI`, plus `decoder_depth`, which MinD-Vis leaves at
the constructor default 8). `tiny` is the embedded demo's size: it trains in
seconds on two CPU cores.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace

from mindvis.utils.errors import ConfigError


@dataclass(frozen=True)
class ArchSpec:
    """Every size of the model (the number of tokens comes from the data or checkpoint)."""

    patch_size: int
    embed_dim: int
    depth: int
    num_heads: int
    mlp_ratio: float
    decoder_embed_dim: int
    decoder_depth: int
    decoder_num_heads: int

    def validate(self) -> ArchSpec:
        for name in ("patch_size", "embed_dim", "depth", "num_heads", "decoder_embed_dim", "decoder_depth",
                     "decoder_num_heads"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"model.{name} must be positive, got {getattr(self, name)}")
        if self.mlp_ratio <= 0:
            raise ConfigError(f"model.mlp_ratio must be positive, got {self.mlp_ratio}")
        # heads split the width evenly; sine-cosine tables need an even width
        for width, heads, label in ((self.embed_dim, self.num_heads, ""), (self.decoder_embed_dim,
                                                                          self.decoder_num_heads, "decoder_")):
            if width % heads:
                raise ConfigError(f"model.{label}embed_dim={width} is not a multiple of {label}num_heads={heads}")
            if width % 2:
                raise ConfigError(f"model.{label}embed_dim={width} must be even (sine-cosine position table)")
        return self

    def as_dict(self) -> dict:
        return asdict(self)


PRESETS: dict[str, ArchSpec] = {
    # MinD-Vis paper / released checkpoints
    "paper": ArchSpec(patch_size=16, embed_dim=1024, depth=24, num_heads=16, mlp_ratio=1.0,
                      decoder_embed_dim=512, decoder_depth=8, decoder_num_heads=16),
    # embedded demo: same structure, ~0.16 M parameters (encoder ~0.1 M). The decoder is as wide
    # as the encoder: at width 32 it learned less of the spatial pattern of the simulated HCP data
    # on the demo's budget (held-out masked_r2 0.31 vs 0.34, per-sample r 0.29 vs 0.37, 40 epochs)
    "tiny": ArchSpec(patch_size=16, embed_dim=64, depth=4, num_heads=4, mlp_ratio=1.0,
                     decoder_embed_dim=64, decoder_depth=2, decoder_num_heads=4),
}


@dataclass
class MbmModelConfig:
    """Config section `model`: a preset, and any size overridden key by key (null = preset's value)."""

    preset: str = "tiny"  # "tiny" (embedded demo) or "paper" (MinD-Vis, ~151 M encoder parameters)
    patch_size: int | None = None  # voxels per token (MinD-Vis: 16; the data are wrap-padded to a multiple)
    embed_dim: int | None = None  # encoder width D
    depth: int | None = None  # encoder transformer blocks
    num_heads: int | None = None  # encoder attention heads (divides embed_dim)
    mlp_ratio: float | None = None  # MLP hidden width / block width (encoder and decoder, as MinD-Vis)
    decoder_embed_dim: int | None = None  # decoder width
    decoder_depth: int | None = None  # decoder transformer blocks
    decoder_num_heads: int | None = None  # decoder attention heads


def resolve_arch(cfg: MbmModelConfig) -> ArchSpec:
    """The preset with the config's non-null keys applied."""
    if cfg.preset not in PRESETS:
        raise ConfigError(f"model.preset must be one of {sorted(PRESETS)}, got {cfg.preset!r}")
    overrides = {f.name: getattr(cfg, f.name) for f in fields(ArchSpec) if getattr(cfg, f.name) is not None}
    return replace(PRESETS[cfg.preset], **overrides).validate()
