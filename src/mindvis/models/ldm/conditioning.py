"""What the UNet is conditioned on: fMRI (stage B) or a class label (the image prior).

A conditioner maps its input to a `Condition`: the cross-attention context
(B, L, context_dim) and, optionally, a vector added to the UNet's time
embedding (B, time_embed_dim).

FmriConditioner (MinD-Vis's `cond_stage_model` + the UNet's `time_embed_condtion`,
docs/reference.md §7.4):
    fMRI (B, 1, V) -> stage A encoder (no mask, no cls token, all N tokens, final norm) (B, N, D)
        -> channel_mapper: Conv1d(N -> N//2, k=1), Conv1d(N//2 -> 77, k=1)   (B, 77, D)
        -> dim_mapper: Linear(D -> context_dim)                               context (B, 77, 512)
    time_branch(context): Conv1d(77 -> 38, k=1), Conv1d(38 -> 1, k=1), Linear(context_dim -> time_embed_dim)
        -> (B, 768), added to the time-step embedding.
The two Conv1d treat tokens as channels: they mix tokens, one weight per
(output token, input token) pair, shared over the feature dimension.

ClassConditioner (CompVis's `ClassEmbedder`, the label2img prior's condition):
    label (B,) -> nn.Embedding(n_classes + 1, context_dim) -> context (B, 1, context_dim)
The last row is the "no class" entry (CompVis cin: 1000 classes + 1), used
for classifier-free guidance.

Unconditional input for classifier-free guidance (`null_condition`): the null
class for labels; an all-zero context for fMRI (passed through the time
branch like any context), which needs no parameter beyond the reference's.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from mindvis.models.sc_mbm import ScMbm


@dataclass
class Condition:
    context: torch.Tensor  # (B, L, context_dim): keys/values of every cross-attention
    time_cond: torch.Tensor | None = None  # (B, time_embed_dim) added to the time embedding, or None

    def repeat(self, k: int) -> Condition:
        """Each row k times in a row (K samples per input)."""
        return Condition(self.context.repeat_interleave(k, dim=0),
                         None if self.time_cond is None else self.time_cond.repeat_interleave(k, dim=0))

    def select(self, rows) -> Condition:
        return Condition(self.context[rows], None if self.time_cond is None else self.time_cond[rows])

    @staticmethod
    def cat(parts: list[Condition]) -> Condition:
        times = [p.time_cond for p in parts]
        return Condition(torch.cat([p.context for p in parts]),
                         None if any(t is None for t in times) else torch.cat(times))


def time_branch(context_len: int, context_dim: int, time_embed_dim: int) -> nn.Sequential:
    """MinD-Vis's time_embed_condtion: tokens 77 -> 38 -> 1, then the width to the time embedding's."""
    return nn.Sequential(
        nn.Conv1d(context_len, context_len // 2, kernel_size=1),
        nn.Conv1d(context_len // 2, 1, kernel_size=1),
        nn.Linear(context_dim, time_embed_dim),
    )


class FmriConditioner(nn.Module):
    """Stage A encoder + channel/dim mappers (cross-attention context) + time-conditioning branch."""

    def __init__(self, encoder: ScMbm, context_len: int = 77, context_dim: int = 512, time_embed_dim: int = 768,
                 use_time_cond: bool = True):
        super().__init__()
        n_tokens = encoder.n_tokens
        if n_tokens < 2:
            raise ValueError(f"the channel mapper needs at least 2 fMRI tokens (N -> N//2), got {n_tokens}")
        self.encoder = encoder
        self.context_len = context_len
        self.channel_mapper = nn.Sequential(
            nn.Conv1d(n_tokens, n_tokens // 2, kernel_size=1),
            nn.Conv1d(n_tokens // 2, context_len, kernel_size=1),
        )
        self.dim_mapper = nn.Linear(encoder.arch.embed_dim, context_dim)
        self.time_branch = time_branch(context_len, context_dim, time_embed_dim) if use_time_cond else None

    @property
    def num_voxels(self) -> int:
        return self.encoder.num_voxels

    def context(self, fmri: torch.Tensor) -> torch.Tensor:
        tokens = self.encoder.encode(fmri)  # (B, N, D)
        return self.dim_mapper(self.channel_mapper(tokens))  # (B, 77, context_dim)

    def time_cond(self, context: torch.Tensor) -> torch.Tensor | None:
        if self.time_branch is None:
            return None
        return self.time_branch(context).squeeze(1)  # (B, 1, T) -> (B, T)

    def forward(self, fmri: torch.Tensor) -> Condition:
        context = self.context(fmri)
        return Condition(context, self.time_cond(context))

    def null_condition(self, batch: int, device: torch.device | str = "cpu", dtype=torch.float32) -> Condition:
        context = torch.zeros(batch, self.context_len, self.dim_mapper.out_features, device=device, dtype=dtype)
        return Condition(context, self.time_cond(context))

    @torch.no_grad()
    def start_from_prior(self, class_embedding: torch.Tensor, fmri_scale: float = 0.1) -> None:
        """Start as the prior's unconditional model instead of from random context (an option; not the reference).

        Every context token starts near the prior's 'no class' embedding (the
        last row of `class_embedding`): the dim mapper's bias is that row and
        its weight is scaled by `fmri_scale`, so the fMRI moves the tokens
        away from where the UNet's cross-attention already works. The time
        branch's last layer starts at zero, so it adds nothing until trained.
        With random mappers the frozen UNet first sees context it was never
        trained on. Measured on the demo it helped only while crops were on
        (README: "What made the difference"), so it is not the default.
        """
        width = self.dim_mapper.out_features
        if class_embedding.ndim != 2 or class_embedding.shape[1] != width:
            raise ValueError(f"class embedding of shape {tuple(class_embedding.shape)} does not give "
                             f"{width}-wide context tokens")
        self.dim_mapper.weight.mul_(fmri_scale)
        self.dim_mapper.bias.copy_(class_embedding[-1].to(self.dim_mapper.bias))
        if self.time_branch is not None:
            last = self.time_branch[-1]
            last.weight.zero_()
            last.bias.zero_()

    def drop(self, cond: Condition, drop: torch.Tensor) -> Condition:
        """Rows where `drop` is True get the unconditional input (classifier-free guidance training)."""
        if not bool(drop.any()):
            return cond
        null = self.null_condition(cond.context.shape[0], cond.context.device, cond.context.dtype)
        keep = ~drop
        context = torch.where(keep[:, None, None], cond.context, null.context)
        time = None if cond.time_cond is None else torch.where(keep[:, None], cond.time_cond, null.time_cond)
        return Condition(context, time)


class ClassConditioner(nn.Module):
    """CompVis's ClassEmbedder: one learned context token per class, plus a 'no class' entry."""

    def __init__(self, n_classes: int, context_dim: int):
        super().__init__()
        self.n_classes = n_classes
        self.embedding = nn.Embedding(n_classes + 1, context_dim)

    @property
    def null_class(self) -> int:
        return self.n_classes

    def forward(self, labels: torch.Tensor) -> Condition:
        return Condition(self.embedding(labels.long())[:, None, :])

    def null_condition(self, batch: int, device: torch.device | str = "cpu", dtype=torch.float32) -> Condition:
        labels = torch.full((batch,), self.null_class, dtype=torch.long, device=device)
        return Condition(self.embedding(labels)[:, None, :].to(dtype))

    def drop(self, cond: Condition, drop: torch.Tensor) -> Condition:
        if not bool(drop.any()):
            return cond
        null = self.null_condition(cond.context.shape[0], cond.context.device, cond.context.dtype)
        return Condition(torch.where(drop[:, None, None], null.context, cond.context))
