"""Stage A2: fine-tune a pre-trained SC-MBM on one subject of GOD or BOLD5000.

The pre-trained checkpoint (ours, or MinD-Vis's own fmri_encoder.pth; read
without executing pickled code) fixes the architecture and, by default, the
number of tokens N: the subject's fMRI (ROI `roi`, default GOD VC / BOLD5000
all five ROIs) is wrap-padded to a multiple of the patch size, z-scored, then
wrap-padded or cut to N * patch voxels, as MinD-Vis does
(`token_policy: checkpoint`). `token_policy: data` instead resizes the
position tables to the subject's own N (`pos_interpolation`).

Protocols (config `protocol`):
  clean      (default) tune on the training fMRI only; a seeded
             `holdout_fraction` of it is held out for the metric.
  reference  MinD-Vis's choice: tune on the TEST fMRI, the data later used to
             evaluate decoding: the averaged rows, followed by the single trials
             when `include_nonavg_test` (MinD-Vis's A2 default). The MLflow run is
             tagged test_set_exposed=true; the metric still uses held-out training rows.
Normalisation (config `normalisation`; docs/reference.md sections 2-3): clean =
one scalar mean/std of the subject's padded training fMRI for every row;
reference = MinD-Vis's own steps bit for bit (GOD: test rows in effect only
padded; BOLD5000: statistics of all trials); auto (default) = as `protocol`.

Output: <out> in MinD-Vis's fmri_encoder.pth layout (config a plain dict),
resumable through <out>.resume.pt like pretrain-mbm.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mindvis.checkpoints.mindvis_encoder import load_mbm_checkpoint, reference_config
from mindvis.data.conventions import PROTOCOLS, ScalarNorm, fit_voxels, split_holdout, wrap_pad_amount
from mindvis.data.pairs import DATASETS
from mindvis.data.normalisation import resolve_normalisation
from mindvis.models.pos_embed import INTERPOLATION_MODES
from mindvis.models.sc_mbm import ScMbm
from mindvis.training import distributed as ddp
from mindvis.training.input_identity import hash_cache_path_for, input_identity
from mindvis.training.mbm import LoopConfig, PreparedRows, check_finite, prepare_rows, train_mbm
from mindvis.training.mbm_quality import wrap_sources
from mindvis.utils.errors import ConfigError
from mindvis.utils.seeding import seed_everything

log = logging.getLogger(__name__)

@dataclass
class FinetuneConfig(LoopConfig):
    """Stage A2 (`stage_a.finetune`). Defaults: the embedded demo; paper values in comments."""

    protocol: str = "clean"  # clean: training fMRI only | reference: MinD-Vis, tunes on the test fMRI
    normalisation: str = "auto"  # auto (as protocol) | clean | reference (MinD-Vis's steps; docs/reference.md)
    include_nonavg_test: bool = True  # protocol reference: the single test trials too (MinD-Vis's A2 default)
    roi: str | None = None  # null: the dataset's default (GOD: VC, as MinD-Vis; BOLD5000: all five ROIs)
    epochs: int = 15  # paper: 15
    batch_size: int = 16  # paper: 16 (GOD) / 4 (BOLD5000)
    lr: float = 2.0e-4  # paper: 5.3e-5
    warmup_epochs: float = 2.0  # paper: 2
    holdout_fraction: float = 0.2  # 16 held-out GOD rows: a steadier metric
    threads: int = 1  # torch CPU threads (0 = torch's default)
    token_policy: str = "checkpoint"  # checkpoint: keep its N, pad/cut data (MinD-Vis) | data: resize pos tables
    pos_interpolation: str = "linear"  # with token_policy=data: linear | nearest (MinD-Vis's F.interpolate default)


@dataclass
class SubjectRows:
    """One subject's fMRI: raw rows (`normalised` None), or rows already wrap-padded and
    normalised the reference's way (`normalised`: the training rows' statistics)."""

    train_fmri: np.ndarray
    test_fmri: np.ndarray  # the rows protocol reference tunes on
    normalised: ScalarNorm | None = None
    raw_voxels: int | None = None  # voxels before padding (normalised rows only)


def load_subject(npz: str | Path, dataset: str, normalisation: str = "clean", include_nonavg_test: bool = False,
                 roi: str | None = None) -> SubjectRows:
    """The subject's training and test rows; test = averaged rows (+ single trials with include_nonavg_test)."""
    if dataset not in DATASETS:
        raise ConfigError(f"--dataset must be one of {DATASETS}, got {dataset!r}")
    roi = roi or ("VC" if dataset == "god" else None)
    if normalisation == "reference":
        if dataset == "god":
            from mindvis.data.god import GodFmriDataset as Reader
        else:
            from mindvis.data.bold5000 import Bold5000FmriDataset as Reader
        extra = {} if dataset == "god" else {"with_images": False}
        train = Reader(npz, split="train", roi=roi, normalisation="reference", **extra)
        test = Reader(npz, split="test", roi=roi, normalisation="reference", include_nonavg_test=include_nonavg_test,
                      **extra)
        return SubjectRows(check_finite(train.fmri, "training fMRI", npz), check_finite(test.fmri, "test fMRI", npz),
                           normalised=train.norm, raw_voxels=train.subjects[0].n_voxels)
    if dataset == "god":
        from mindvis.data.god import load_god_npz

        data = load_god_npz(npz).select_roi(roi)
    else:
        from mindvis.data.bold5000 import load_bold5000_npz

        data = load_bold5000_npz(npz, with_images=False).select_roi(roi)
    test = np.concatenate([data.test_fmri, data.test_fmri_trials]) if include_nonavg_test else data.test_fmri
    return SubjectRows(check_finite(data.train_fmri, "training fMRI", npz), check_finite(test, "test fMRI", npz))


def load_subject_for(npz: str | Path, dataset: str, cfg: FinetuneConfig) -> SubjectRows:
    """`load_subject` with the config's normalisation (resolved against its protocol), test trials and ROI."""
    normalisation = resolve_normalisation(cfg.normalisation, cfg.protocol, "stage_a.finetune")
    return load_subject(npz, dataset, normalisation, cfg.include_nonavg_test, cfg.roi)


def _normalised_rows(subject: SubjectRows, tune_rows: np.ndarray, holdout_rows: np.ndarray,
                     num_voxels: int) -> PreparedRows:
    """Rows the reference's way already padded and normalised: only fitted to the model (wrap or cut, as its A2)."""
    if num_voxels < tune_rows.shape[1]:
        log.warning("data have %d voxels after padding but the model takes %d: the last %d are cut",
                    tune_rows.shape[1], num_voxels, tune_rows.shape[1] - num_voxels)
    return PreparedRows(train=np.ascontiguousarray(fit_voxels(tune_rows, num_voxels), dtype=np.float32),
                        holdout=np.ascontiguousarray(fit_voxels(holdout_rows, num_voxels), dtype=np.float32),
                        norm=subject.normalised, raw_voxels=int(subject.raw_voxels or tune_rows.shape[1]),
                        padded_voxels=int(tune_rows.shape[1]), num_voxels=int(num_voxels))


def finetune_from_rows(pretrained: str | Path, subject: SubjectRows, out: str | Path, cfg: FinetuneConfig,
                       tracker=None, env: ddp.DistEnv | None = None, stop_after_steps: int | None = None,
                       info: dict[str, Any] | None = None, from_scratch: bool = False) -> dict[str, Any]:
    """Stage A2 on one subject's rows. `from_scratch`: same architecture, fresh weights (ablation)."""
    if cfg.protocol not in PROTOCOLS:
        raise ConfigError(f"protocol must be one of {PROTOCOLS}, got {cfg.protocol!r}")
    if cfg.token_policy not in ("checkpoint", "data"):
        raise ConfigError(f"token_policy must be checkpoint or data, got {cfg.token_policy!r}")
    if cfg.pos_interpolation not in INTERPOLATION_MODES:
        raise ConfigError(f"pos_interpolation must be one of {INTERPOLATION_MODES}, got {cfg.pos_interpolation!r}")
    train_fmri, test_fmri = subject.train_fmri, subject.test_fmri
    if train_fmri.shape[1] != test_fmri.shape[1]:
        raise ConfigError(f"training and test fMRI disagree in voxels: {train_fmri.shape[1]} vs {test_fmri.shape[1]}")

    probe = load_mbm_checkpoint(pretrained)  # reads the architecture and N
    arch = probe.arch
    train_idx, hold_idx = split_holdout(train_fmri.shape[0], cfg.holdout_fraction, cfg.seed)
    tune_rows = train_fmri[train_idx] if cfg.protocol == "clean" else test_fmri
    if subject.normalised is None:
        padded = train_fmri.shape[1] + wrap_pad_amount(train_fmri.shape[1], arch.patch_size)
    else:
        padded = train_fmri.shape[1]  # already wrap-padded (to a multiple of 16, MinD-Vis's patch)
        if padded % arch.patch_size:
            raise ConfigError(f"normalisation reference pads to multiples of 16 voxels; the checkpoint's patch "
                              f"size is {arch.patch_size}")
    n_tokens = probe.checkpoint_tokens if cfg.token_policy == "checkpoint" else padded // arch.patch_size
    if subject.normalised is None:
        rows = prepare_rows(tune_rows, train_fmri[hold_idx], num_voxels=n_tokens * arch.patch_size,
                            norm_rows=train_fmri, patch_size=arch.patch_size)
    else:
        rows = _normalised_rows(subject, tune_rows, train_fmri[hold_idx], n_tokens * arch.patch_size)
    normalisation = "clean" if subject.normalised is None else "reference"

    seed_everything(cfg.seed)
    if from_scratch:
        model = ScMbm(arch, n_tokens)
    elif n_tokens == probe.checkpoint_tokens:
        model = probe.model
    else:
        model = load_mbm_checkpoint(pretrained, n_tokens=n_tokens, interpolation=cfg.pos_interpolation).model
    exposed = cfg.protocol == "reference"
    export = reference_config(
        arch, n_tokens,
        mindvis={"stage": "A2", "protocol": cfg.protocol, "normalisation": normalisation, "test_set_exposed": exposed,
                 "norm_mean": rows.norm.mean, "norm_std": rows.norm.std, "raw_voxels": rows.raw_voxels,
                 "token_policy": cfg.token_policy, "pretrained": str(pretrained),
                 "pretrained_config_class": probe.config_class, "from_scratch": from_scratch, **(info or {})},
    )
    if tracker is not None and getattr(tracker, "enabled", True):
        tracker.set_tags({"test_set_exposed": str(exposed).lower(), "protocol": cfg.protocol})
    # held-out rows are the subject's voxels wrap-padded (and fitted to N tokens): score each voxel once
    sources = wrap_sources([rows.raw_voxels, rows.padded_voxels, rows.num_voxels])
    # the pre-trained weights by content (a copied work folder resumes; a retrained stage A1 starts over)
    inputs = {"pretrained": input_identity(pretrained, hash_cache_path_for(out)), "from_scratch": from_scratch,
              "pos_interpolation": cfg.pos_interpolation}
    summary = train_mbm(model, rows.train, rows.holdout, cfg, out, export, tracker=tracker, env=env,
                        stop_after_steps=stop_after_steps, holdout_sources=sources, inputs=inputs)
    summary.update(protocol=cfg.protocol, normalisation=normalisation, test_set_exposed=exposed,
                   raw_voxels=rows.raw_voxels, n_tune_rows=int(tune_rows.shape[0]),
                   padded_voxels=rows.padded_voxels, checkpoint_tokens=probe.checkpoint_tokens,
                   norm_mean=rows.norm.mean, norm_std=rows.norm.std, from_scratch=from_scratch, **(info or {}))
    return summary


def finetune_mbm(pretrained: Path, npz: Path, dataset: str, out: Path, cfg: FinetuneConfig, tracker=None,
                 env: ddp.DistEnv | None = None) -> dict[str, Any]:
    subject = load_subject_for(npz, dataset, cfg)
    log.info("%s: %d training and %d test rows, %d voxels (%s normalisation)", npz, subject.train_fmri.shape[0],
             subject.test_fmri.shape[0], subject.train_fmri.shape[1],
             "clean" if subject.normalised is None else "reference")
    return finetune_from_rows(pretrained, subject, out, cfg, tracker=tracker, env=env,
                              info={"dataset": dataset, "npz": str(npz)})
