"""SC-MBM's held-out reconstruction quality: the metrics stage A reports every epoch.

Only HIDDEN voxels count: a voxel of a row is hidden when every input position holding it
is masked (wrap padding puts copies of voxels at several positions; a GOD subject fitted to
a 262-token checkpoint appears ~6 times), so copying a visible duplicate earns nothing. A
hidden voxel's prediction is the mean of the model's predictions at its positions. With
m = the voxel's mean over the TRAINING rows:
  masked_corr            Pearson r pooled over all hidden (row, voxel) entries between
                         prediction - m and truth - m: what is predicted beyond the
                         per-voxel-mean baseline (which scores 0 by construction), frame-wide
                         fluctuations included;
  masked_r2              1 - SSE(model) / SSE(per-voxel mean) over the same entries: the share
                         of the baseline's squared error the model removes (< 0: worse than it);
  masked_corr_per_sample mean over rows of the Pearson r across that row's hidden voxels
                         (MinD-Vis style); blind to a frame-wide offset, it only credits the
                         spatial pattern;
  loss                   the model's own training loss (MSE over masked patches, copies included).
The held-out rows are masked with fixed masks (`eval_masks`), identical every epoch and run.
"""

from __future__ import annotations

import math
from contextlib import nullcontext

import numpy as np
import torch

from mindvis.models.sc_mbm import ScMbm


def wrap_sources(lengths: list[int] | tuple[int, ...]) -> np.ndarray:
    """The original voxel each position holds after a chain of wrap paddings or cuts.

    `lengths[0]` is the number of distinct voxels; each later entry is a length the
    vector is then brought to with `pad_to_length` (MinD-Vis's wrap padding, or a cut):
    e.g. [4183, 4192] for `wrap_pad` of an HCP row, [670, 672, 4192] for a GOD subject
    padded and fitted to a 262-token checkpoint. Equal ids = copies of one voxel.
    """
    ids = np.arange(int(lengths[0]))
    for n in lengths[1:]:
        ids = ids[np.arange(int(n)) % ids.size]
    return ids


def eval_masks(model: ScMbm, n_rows: int, mask_ratio: float, mask_seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The fixed held-out masking noise, and the (n, N) mask it gives (1 = masked)."""
    noise = model.masking_noise(n_rows, generator=torch.Generator().manual_seed(mask_seed))
    keep = int(model.n_tokens * (1 - mask_ratio))
    mask = torch.ones_like(noise)
    ranks = torch.argsort(torch.argsort(noise, dim=1), dim=1)
    mask[ranks < keep] = 0
    return noise, mask


class HiddenVoxelScore:
    """Accumulates, batch by batch, the sums behind masked_corr, masked_r2 and masked_corr_per_sample."""

    def __init__(self):
        self.sums = np.zeros(6)  # n, sum a, sum b, sum a^2, sum b^2, sum ab (a = pred - m, b = true - m)
        self.sse = 0.0
        self.row_corrs: list[float] = []

    def add(self, pred: torch.Tensor, true: torch.Tensor, voxel_mask: torch.Tensor, mean: torch.Tensor,
            sources: torch.Tensor) -> None:
        """pred, true, voxel_mask (1 = masked), sources: (B, P); mean: (P,)."""
        pred, true, voxel_mask = pred.double(), true.double(), voxel_mask.double()
        b = pred.shape[0]
        n_ids = int(sources.max()) + 1

        def per_voxel(values: torch.Tensor) -> torch.Tensor:
            return torch.zeros(b, n_ids, dtype=torch.float64, device=values.device).scatter_add_(1, sources, values)

        count = per_voxel(torch.ones_like(pred))
        hidden = (count > 0) & (per_voxel(voxel_mask) == count)
        denom = count.clamp_min(1)
        p, t = per_voxel(pred) / denom, per_voxel(true) / denom  # copies hold equal truths
        m = per_voxel(mean.double().expand(b, -1)) / denom
        a, c = (p - m)[hidden], (t - m)[hidden]
        self.sums += np.array([a.numel(), a.sum(), c.sum(), (a * a).sum(), (c * c).sum(), (a * c).sum()],
                              dtype=np.float64)
        self.sse += float(((a - c) ** 2).sum())
        w = hidden.double()
        n_row = w.sum(dim=1)
        pc = (p - (p * w).sum(1, keepdim=True) / n_row.clamp_min(1)[:, None]) * w
        tc = (t - (t * w).sum(1, keepdim=True) / n_row.clamp_min(1)[:, None]) * w
        norm = (pc.norm(dim=1) * tc.norm(dim=1))
        ok = (n_row >= 2) & (norm > 0)
        self.row_corrs += ((pc * tc).sum(dim=1)[ok] / norm[ok]).tolist()

    def result(self) -> dict[str, float]:
        n, sa, sb, saa, sbb, sab = self.sums
        if n == 0:
            return {}
        var_a, var_b = saa - sa * sa / n, sbb - sb * sb / n
        corr = (sab - sa * sb / n) / math.sqrt(var_a * var_b) if var_a > 1e-12 * n and var_b > 0 else 0.0
        return {"masked_corr": float(corr),
                "masked_r2": float(1.0 - self.sse / sbb) if sbb > 0 else 0.0,
                "masked_corr_per_sample": float(np.mean(self.row_corrs)) if self.row_corrs else 0.0,
                "hidden_voxels": int(n)}


def _voxel_mask(mask: torch.Tensor, patch_size: int) -> torch.Tensor:
    """(B, N) token mask -> (B, N * patch) voxel mask."""
    return mask[:, :, None].expand(-1, -1, patch_size).reshape(mask.shape[0], -1)


def _sources_tensor(sources: np.ndarray | None, n_rows: int, n_positions: int) -> torch.Tensor:
    if sources is None:
        return torch.arange(n_positions).expand(n_rows, -1)
    src = torch.as_tensor(np.asarray(sources), dtype=torch.int64)
    if src.shape[-1] != n_positions or src.ndim not in (1, 2) or (src.ndim == 2 and src.shape[0] != n_rows):
        raise ValueError(f"sources must be ({n_positions},) or ({n_rows}, {n_positions}), got {tuple(src.shape)}")
    return src.expand(n_rows, -1)


@torch.no_grad()
def masked_reconstruction_quality(model: ScMbm, rows: np.ndarray | torch.Tensor, mask_ratio: float,
                                  mask_seed: int, batch_size: int = 256, device: str | torch.device = "cpu",
                                  autocast_dtype: torch.dtype | None = None,
                                  voxel_mean: np.ndarray | None = None,
                                  sources: np.ndarray | None = None) -> dict[str, float]:
    """Held-out loss and masked_corr / masked_r2 / masked_corr_per_sample (definitions above).

    `voxel_mean`: (P,) per-position mean of the training rows (None: zeros);
    `sources`: (P,) or (n, P) original voxel id of each position (None: all distinct).
    """
    x = torch.as_tensor(rows, dtype=torch.float32)
    if x.shape[0] == 0:
        return {}
    noise, _ = eval_masks(model, x.shape[0], mask_ratio, mask_seed)
    mean = torch.zeros(x.shape[1]) if voxel_mean is None else torch.as_tensor(voxel_mean, dtype=torch.float32)
    src = _sources_tensor(sources, x.shape[0], x.shape[1])
    was_training = model.training
    model.eval()
    device = torch.device(device)
    losses, score = [], HiddenVoxelScore()
    for start in range(0, x.shape[0], batch_size):
        xb = x[start:start + batch_size].to(device)
        nb = noise[start:start + batch_size].to(device)
        ctx = torch.autocast(device.type, dtype=autocast_dtype) if autocast_dtype else nullcontext()
        with ctx:
            loss, pred, mask = model(xb, mask_ratio, nb)
        if int(mask[0].sum()) == 0:
            continue
        losses.append(float(loss) * xb.shape[0])
        score.add(model.unpatchify(pred.float()).reshape(xb.shape[0], -1), xb, _voxel_mask(mask, model.patch_size),
                  mean.to(device), src[start:start + batch_size].to(device))
    model.train(was_training)
    quality = score.result()
    if not losses or not quality:
        return {}
    return {"loss": sum(losses) / x.shape[0], **quality}


def voxel_mean_baseline(voxel_mean: np.ndarray, holdout_rows: np.ndarray, model: ScMbm, mask_ratio: float,
                        mask_seed: int, sources: np.ndarray | None = None) -> dict[str, float]:
    """The same metrics when every masked voxel is predicted by its training mean `voxel_mean` (P,) (no model):
    masked_corr and masked_r2 are 0 by definition; loss and masked_corr_per_sample are measured."""
    if holdout_rows.shape[0] == 0:
        return {}
    _, mask = eval_masks(model, holdout_rows.shape[0], mask_ratio, mask_seed)
    vmask = _voxel_mask(mask, model.patch_size)
    mean = torch.as_tensor(voxel_mean, dtype=torch.float32)
    true = torch.as_tensor(holdout_rows, dtype=torch.float32)
    pred = mean[None].expand(true.shape[0], -1)
    score = HiddenVoxelScore()
    score.add(pred, true, vmask, mean, _sources_tensor(sources, true.shape[0], true.shape[1]))
    quality = score.result()
    if not quality:
        return {}
    sel = vmask.bool()
    return {"loss": float(((pred[sel] - true[sel]) ** 2).mean()), **quality}
