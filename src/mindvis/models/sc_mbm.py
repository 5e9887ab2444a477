"""SC-MBM: the masked autoencoder for fMRI vectors (MinD-Vis stage A).

Layout and parameter names are MinD-Vis's `MAEforFMRI` (docs/reference.md
§7.1 and §5.1), so its `fmri_encoder.pth` loads into `ScMbm` with strict=True:

    input (B, 1, V), V = N * patch
    patch_embed.proj   Conv1d(1 -> D, kernel = stride = patch)  -> N tokens of width D
    cls_token          (1, 1, D)
    pos_embed          (1, N + 1, D) fixed sine-cosine table, zero cls row (not trained)
    blocks.{i}         timm pre-norm transformer blocks (qkv bias, GELU, LayerNorm eps 1e-5)
    norm               final LayerNorm
    decoder_embed      Linear(D -> Dd)
    mask_token         (1, 1, Dd)
    decoder_pos_embed  (1, N + 1, Dd) fixed sine-cosine table
    decoder_blocks.{i}, decoder_norm
    decoder_pred       Linear(Dd -> patch)

Masking is MAE's: each sample draws one uniform number per token, tokens are
sorted by it and the first `int(N * (1 - mask_ratio))` are kept. The loss is
the per-patch mean squared error averaged over masked patches only, against
the raw (not per-patch normalised) voxels.

`encode(x)` is the stage B path and copies MinD-Vis's `fmri_encoder`: no
masking, the cls token is never prepended, all N tokens pass the blocks and
the final norm -> (B, N, D).
"""

from __future__ import annotations

from functools import partial

import torch
import torch.nn as nn
from timm.models.vision_transformer import Block

from mindvis.models.pos_embed import sincos_table
from mindvis.models.presets import ArchSpec

# torch's LayerNorm default eps is 1e-5, MinD-Vis's norm_layer=nn.LayerNorm; timm's own default is 1e-6
LayerNorm = partial(nn.LayerNorm, eps=1e-5)


class PatchEmbed1D(nn.Module):
    """Cut (B, 1, V) into non-overlapping patches and project each to width D."""

    def __init__(self, patch_size: int, embed_dim: int):
        super().__init__()
        self.proj = nn.Conv1d(1, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).transpose(1, 2)  # (B, D, N) -> (B, N, D)


def _blocks(width: int, depth: int, heads: int, mlp_ratio: float) -> nn.ModuleList:
    return nn.ModuleList(
        Block(width, heads, mlp_ratio=mlp_ratio, qkv_bias=True, norm_layer=LayerNorm) for _ in range(depth)
    )


class ScMbm(nn.Module):
    """MinD-Vis's masked brain model; `with_decoder=False` gives the stage B encoder's key set."""

    def __init__(self, arch: ArchSpec, n_tokens: int, with_decoder: bool = True):
        super().__init__()
        if n_tokens < 1:
            raise ValueError(f"need at least one token, got n_tokens={n_tokens}")
        self.arch = arch.validate()
        self.n_tokens = int(n_tokens)
        self.patch_size = arch.patch_size
        d, dd = arch.embed_dim, arch.decoder_embed_dim

        self.patch_embed = PatchEmbed1D(arch.patch_size, d)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, d))
        self.pos_embed = nn.Parameter(sincos_table(d, n_tokens), requires_grad=False)
        self.blocks = _blocks(d, arch.depth, arch.num_heads, arch.mlp_ratio)
        self.norm = LayerNorm(d)

        self.with_decoder = with_decoder
        if with_decoder:
            self.decoder_embed = nn.Linear(d, dd)
            self.mask_token = nn.Parameter(torch.zeros(1, 1, dd))
            self.decoder_pos_embed = nn.Parameter(sincos_table(dd, n_tokens), requires_grad=False)
            self.decoder_blocks = _blocks(dd, arch.decoder_depth, arch.decoder_num_heads, arch.mlp_ratio)
            self.decoder_norm = LayerNorm(dd)
            self.decoder_pred = nn.Linear(dd, arch.patch_size)
        self._init_weights()

    # -- initialisation (MAE's recipe) ----------------------------------------
    def _init_weights(self) -> None:
        w = self.patch_embed.proj.weight
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))  # as a Linear over the patch
        nn.init.normal_(self.cls_token, std=0.02)
        if self.with_decoder:
            nn.init.normal_(self.mask_token, std=0.02)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    # -- shapes -----------------------------------------------------------------
    @property
    def num_voxels(self) -> int:
        return self.n_tokens * self.patch_size

    def as_input(self, x: torch.Tensor) -> torch.Tensor:
        """Accept (B, V) or (B, 1, V) with V = n_tokens * patch; return (B, 1, V)."""
        if x.ndim == 2:
            x = x[:, None, :]
        if x.ndim != 3 or x.shape[1] != 1 or x.shape[2] != self.num_voxels:
            raise ValueError(
                f"SC-MBM expects (B, 1, {self.num_voxels}) fMRI ({self.n_tokens} tokens x {self.patch_size} "
                f"voxels), got {tuple(x.shape)}; pad or cut the data with mindvis.data.conventions.fit_voxels"
            )
        return x

    def patchify(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 1, V) -> (B, N, patch): token t holds voxels [t*patch, (t+1)*patch)."""
        x = self.as_input(x)
        return x.reshape(x.shape[0], self.n_tokens, self.patch_size)

    def unpatchify(self, patches: torch.Tensor) -> torch.Tensor:
        return patches.reshape(patches.shape[0], 1, self.n_tokens * self.patch_size)

    # -- masking ------------------------------------------------------------------
    def masking_noise(self, batch: int, generator: torch.Generator | None = None,
                      device: torch.device | str = "cpu") -> torch.Tensor:
        """One uniform number per token; lowest are kept. Draw on CPU so a seed gives the same mask anywhere."""
        return torch.rand(batch, self.n_tokens, generator=generator).to(device)

    @staticmethod
    def random_masking(tokens: torch.Tensor, mask_ratio: float, noise: torch.Tensor):
        """Keep `int(N * (1 - mask_ratio))` tokens per sample.

        Returns kept tokens (B, keep, D), mask (B, N) with 1 = masked, and
        ids_restore (B, N) that puts the shuffled sequence back in order.
        """
        if not 0.0 <= mask_ratio < 1.0:
            raise ValueError(f"mask_ratio must be in [0, 1), got {mask_ratio}")
        b, n, d = tokens.shape
        keep = int(n * (1 - mask_ratio))
        ids_shuffle = torch.argsort(noise, dim=1)
        ids_restore = torch.argsort(ids_shuffle, dim=1)
        ids_keep = ids_shuffle[:, :keep]
        kept = torch.gather(tokens, 1, ids_keep[:, :, None].expand(-1, -1, d))
        mask = torch.ones(b, n, device=tokens.device)
        mask[:, :keep] = 0
        mask = torch.gather(mask, 1, ids_restore)
        return kept, mask, ids_restore

    # -- passes -------------------------------------------------------------------
    def forward_encoder(self, x: torch.Tensor, mask_ratio: float, noise: torch.Tensor | None = None):
        tokens = self.patch_embed(self.as_input(x)) + self.pos_embed[:, 1:, :]
        if noise is None:
            noise = self.masking_noise(tokens.shape[0], device=tokens.device)
        kept, mask, ids_restore = self.random_masking(tokens, mask_ratio, noise)
        cls = (self.cls_token + self.pos_embed[:, :1, :]).expand(kept.shape[0], -1, -1)
        h = torch.cat([cls, kept], dim=1)
        for block in self.blocks:
            h = block(h)
        return self.norm(h), mask, ids_restore

    def forward_decoder(self, latent: torch.Tensor, ids_restore: torch.Tensor) -> torch.Tensor:
        if not self.with_decoder:
            raise RuntimeError("this SC-MBM was built without its decoder (encoder-only)")
        h = self.decoder_embed(latent)
        b, n_present, dd = h.shape
        fill = self.mask_token.expand(b, self.n_tokens + 1 - n_present, -1)
        body = torch.cat([h[:, 1:, :], fill], dim=1)
        body = torch.gather(body, 1, ids_restore[:, :, None].expand(-1, -1, dd))  # back to token order
        h = torch.cat([h[:, :1, :], body], dim=1) + self.decoder_pos_embed
        for block in self.decoder_blocks:
            h = block(h)
        return self.decoder_pred(self.decoder_norm(h))[:, 1:, :]  # drop the cls position

    def masked_loss(self, x: torch.Tensor, pred: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Per-patch MSE, averaged over masked patches (no per-patch target normalisation)."""
        per_patch = ((pred.float() - self.patchify(x).float()) ** 2).mean(dim=-1)
        masked = mask.sum()
        total = (per_patch * mask).sum()
        return total / masked if masked > 0 else total

    def forward(self, x: torch.Tensor, mask_ratio: float = 0.75, noise: torch.Tensor | None = None):
        """(loss, pred (B, N, patch), mask (B, N))."""
        x = self.as_input(x)
        latent, mask, ids_restore = self.forward_encoder(x, mask_ratio, noise)
        pred = self.forward_decoder(latent, ids_restore)
        return self.masked_loss(x, pred, mask), pred, mask

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Stage B features: all N tokens, no mask, no cls token, after the final norm -> (B, N, D)."""
        h = self.patch_embed(self.as_input(x)) + self.pos_embed[:, 1:, :]
        for block in self.blocks:
            h = block(h)
        return self.norm(h)


def count_parameters(model: nn.Module, prefix_filter: tuple[str, ...] | None = None,
                     trainable_only: bool = False) -> int:
    """Parameters whose name starts with one of `prefix_filter` (all when None)."""
    total = 0
    for name, p in model.named_parameters():
        if trainable_only and not p.requires_grad:
            continue
        if prefix_filter is None or name.startswith(prefix_filter):
            total += p.numel()
    return total


ENCODER_PREFIXES = ("patch_embed.", "cls_token", "pos_embed", "blocks.", "norm.")

