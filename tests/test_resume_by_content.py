"""Resume by content, not by place: a partly trained job whose whole work folder is copied
elsewhere (new absolute paths) and whose inputs are touched (new modification times)
continues from its checkpoint there, and ends with the weights of an uninterrupted run;
an input whose bytes changed makes the job start over.

Covered: stage B (`finetune_ldm`: prior, stage A2 encoder) and stage A2
(`finetune_from_rows`: the stage A1 checkpoint), the loops whose fingerprints name input
files. Step counts are worked out by hand from the sizes and counted independently of the
loops (calls of AdamW.step in the resumed process).
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from ldm_factory import ENC, N_CLASSES, write_tiny_god  # shared stage B test data

from mindvis.checkpoints.compvis_ldm import export_compvis_state, save_compvis_checkpoint, vq_to_compvis
from mindvis.checkpoints.mindvis_encoder import export_mbm_checkpoint, reference_config
from mindvis.checkpoints.safe_load import safe_load
from mindvis.models.ldm.dc_ldm import build_label_ldm
from mindvis.models.ldm.presets import LdmModelConfig, resolve_ldm_spec
from mindvis.models.ldm.sampling import SamplerConfig
from mindvis.models.sc_mbm import ScMbm
from mindvis.training.checkpointing import resume_path_for
from mindvis.training.stage_a2 import FinetuneConfig, SubjectRows, finetune_from_rows
from mindvis.training.input_identity import hash_cache_path_for, input_identity
from mindvis.training.stage_b import FinetuneLdmConfig, finetune_ldm

MICRO_MODEL = dict(image_size=16, vq_ch=8, vq_ch_mult=[1, 2, 2], vq_num_res_blocks=1, vq_n_embed=16,
                   norm_num_groups=4, unet_model_channels=8, unet_channel_mult=[1, 2], unet_num_res_blocks=1,
                   unet_attention_resolutions=[2], context_dim=8, time_embed_dim=16)
INPUTS = ("sbj_1.npz", "images_256.npz", "fmri_encoder.pth", "label2img.pt")

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _write_inputs(root: Path) -> None:
    """A tiny GOD subject, an A2 encoder and a label prior (with its VQ), as stage B reads them."""
    write_tiny_god(root, seed=0)
    torch.manual_seed(0)
    export_mbm_checkpoint(root / "fmri_encoder.pth", ScMbm(ENC, 6), reference_config(ENC, 6))
    spec = resolve_ldm_spec(LdmModelConfig(**MICRO_MODEL))
    prior = build_label_ldm(spec, N_CLASSES)
    save_compvis_checkpoint(root / "label2img.pt", export_compvis_state(prior),
                            {"format": "mindvis.label2img/1", "spec": spec.as_dict(), "n_classes": N_CLASSES})


# 12 training pairs, 20 % (2) held out for selection: 10 pairs, batch 4 -> 2 steps per epoch, 3 epochs = 6 steps
STAGE_B_CFG = FinetuneLdmConfig(epochs=3, batch_size=4, lr=1e-3, checkpoint_every_steps=2, select_every_epochs=1,
                                val_fraction=0.2, grid_every_epochs=0, threads=1, select_metric="loss",
                                select_loss_draws=1, select_sampler=SamplerConfig(sampler="ddim", steps=2,
                                                                                  n_samples=1))
STAGE_B_STEPS = 6


def _stage_b(work: Path, stop_after_steps: int | None = None, **cfg) -> dict:
    return finetune_ldm(work / "sbj_1.npz", work / "images_256.npz", work / "fmri_encoder.pth",
                        work / "label2img.pt", work / "run" / "finetuned.pt", replace(STAGE_B_CFG, **cfg),
                        stop_after_steps=stop_after_steps)


def _move_work_folder(old: Path, new: Path) -> None:
    """Copy the whole work folder to a new place, delete the old one, and give every input a new mtime."""
    shutil.copytree(old, new)
    shutil.rmtree(old)
    for name in INPUTS:
        st = (new / name).stat()
        os.utime(new / name, ns=(st.st_atime_ns, st.st_mtime_ns + 7_000_000_000))


class _CountSteps:
    """Counts AdamW.step calls (the loops' optimizer), independently of the loops' own step counter."""

    def __init__(self, monkeypatch):
        self.calls = 0
        original = torch.optim.AdamW.step

        def counting(opt, *args, **kwargs):
            self.calls += 1
            return original(opt, *args, **kwargs)

        monkeypatch.setattr(torch.optim.AdamW, "step", counting)


def _assert_same_tensors(got: dict[str, torch.Tensor], want: dict[str, torch.Tensor]) -> None:
    assert got.keys() == want.keys()
    for key, value in want.items():
        assert torch.equal(got[key], value), key


def test_input_identity_is_size_and_sha256_of_the_bytes_and_hashes_once(tmp_path, monkeypatch):
    payload = b"mindvis" * 1000
    a, b = tmp_path / "a.bin", tmp_path / "elsewhere" / "b.bin"
    b.parent.mkdir()
    a.write_bytes(payload)
    b.write_bytes(payload)
    expected = f"{len(payload)}:{hashlib.sha256(payload).hexdigest()}"
    hashed: list[str] = []
    import mindvis.training.input_identity as module

    real = module.file_digest
    monkeypatch.setattr(module, "file_digest", lambda path: hashed.append(str(path)) or real(path))
    cache = hash_cache_path_for(tmp_path / "out.pt")
    assert input_identity(a, cache) == expected
    assert input_identity(a, cache) == expected and len(hashed) == 1  # the second call reads the cache
    assert input_identity(b, cache) == expected and len(hashed) == 2  # same bytes, other place: same identity
    os.utime(a, ns=(0, 10**18))
    assert input_identity(a, cache) == expected and len(hashed) == 3  # new mtime: hashed again, same identity
    a.write_bytes(payload[:-1] + b"X")
    assert input_identity(a, cache) != expected  # other bytes: another identity
    assert input_identity(None, cache) is None


def test_stage_b_resumes_in_a_copied_work_folder_and_ends_as_uninterrupted(tmp_path, monkeypatch):
    reference = tmp_path / "reference"
    reference.mkdir()
    _write_inputs(reference)
    _stage_b(reference)
    want = safe_load(reference / "run" / "finetuned.pt")["model_state_dict"]

    first = tmp_path / "scratch-node"
    first.mkdir()
    _write_inputs(first)
    assert _stage_b(first, stop_after_steps=3) == {"stopped_at_step": 3}  # "killed" after step 3
    assert safe_load(resume_path_for(first / "run" / "finetuned.pt"))["step"] == 2  # the last periodic save

    moved = tmp_path / "restored" / "work"
    _move_work_folder(first, moved)
    steps = _CountSteps(monkeypatch)
    summary = _stage_b(moved)
    assert summary["resumed"] is True
    assert steps.calls == STAGE_B_STEPS - 2  # continued after step 2, not from scratch
    _assert_same_tensors(safe_load(moved / "run" / "finetuned.pt")["model_state_dict"], want)
    out = moved / "run" / "finetuned.pt"
    assert not resume_path_for(out).exists() and not hash_cache_path_for(out).exists()  # both gone on success


def test_stage_b_starts_over_when_an_input_changed_content(tmp_path, caplog):
    work = tmp_path / "work"
    work.mkdir()
    _write_inputs(work)
    assert _stage_b(work, stop_after_steps=3) == {"stopped_at_step": 3}
    prior = safe_load(work / "label2img.pt")
    key = next(k for k in prior["state_dict"] if k.endswith("attn2.to_k.weight"))
    prior["state_dict"][key] = prior["state_dict"][key] + 1.0  # a retrained prior: other bytes, same place
    torch.save(prior, work / "label2img.pt")
    with caplog.at_level(logging.WARNING, logger="mindvis.training.checkpointing"):
        # a resumed run (at step 2) would stop after step 3; a fresh one stops after step 1
        assert _stage_b(work, stop_after_steps=1) == {"stopped_at_step": 1}
    assert "differs in prior" in caplog.text


def test_stage_b_starts_over_when_the_config_changed(tmp_path, caplog):
    work = tmp_path / "work"
    work.mkdir()
    _write_inputs(work)
    assert _stage_b(work, stop_after_steps=3) == {"stopped_at_step": 3}
    with caplog.at_level(logging.WARNING, logger="mindvis.training.checkpointing"):
        assert _stage_b(work, stop_after_steps=1, lr=2e-3) == {"stopped_at_step": 1}
    assert "differs in lr" in caplog.text


# stage A2: 40 rows, nothing held out, batch 8 -> 5 steps per epoch, 2 epochs = 10 steps
A2_CFG = FinetuneConfig(epochs=2, batch_size=8, checkpoint_every_steps=2, holdout_fraction=0.0, device="cpu",
                        threads=1)
A2_STEPS = 10


def _a2_inputs(root: Path) -> SubjectRows:
    torch.manual_seed(1)
    export_mbm_checkpoint(root / "a1.pth", ScMbm(ENC, 6), reference_config(ENC, 6))
    rng = np.random.default_rng(0)
    return SubjectRows(rng.standard_normal((40, 90)).astype(np.float32),
                       rng.standard_normal((5, 90)).astype(np.float32))


def test_stage_a2_resumes_in_a_copied_work_folder_and_starts_over_for_another_a1(tmp_path, monkeypatch, caplog):
    reference = tmp_path / "reference"
    reference.mkdir()
    subject = _a2_inputs(reference)
    finetune_from_rows(reference / "a1.pth", subject, reference / "a2.pth", A2_CFG)
    want = safe_load(reference / "a2.pth")["model"]

    first = tmp_path / "first"
    first.mkdir()
    _a2_inputs(first)
    assert finetune_from_rows(first / "a1.pth", subject, first / "a2.pth", A2_CFG,
                              stop_after_steps=5)["stopped_at_step"] == 5
    assert safe_load(resume_path_for(first / "a2.pth"))["step"] == 4
    moved = tmp_path / "moved"
    shutil.copytree(first, moved)
    shutil.rmtree(first)
    st = (moved / "a1.pth").stat()
    os.utime(moved / "a1.pth", ns=(st.st_atime_ns, st.st_mtime_ns + 7_000_000_000))

    steps = _CountSteps(monkeypatch)
    summary = finetune_from_rows(moved / "a1.pth", subject, moved / "a2.pth", A2_CFG)
    assert summary["resumed"] is True and steps.calls == A2_STEPS - 4
    _assert_same_tensors(safe_load(moved / "a2.pth")["model"], want)

    # the same partial run, then stage A1 retrained (other weights in the same file): start over
    again = tmp_path / "again"
    again.mkdir()
    _a2_inputs(again)
    assert finetune_from_rows(again / "a1.pth", subject, again / "a2.pth", A2_CFG,
                              stop_after_steps=5)["stopped_at_step"] == 5
    torch.manual_seed(2)
    export_mbm_checkpoint(again / "a1.pth", ScMbm(ENC, 6), reference_config(ENC, 6))
    with caplog.at_level(logging.WARNING, logger="mindvis.training.checkpointing"):
        # resumed at step 4 it would stop after step 5; from scratch after step 1
        assert finetune_from_rows(again / "a1.pth", subject, again / "a2.pth", A2_CFG,
                                  stop_after_steps=1)["stopped_at_step"] == 1
    assert "differs in pretrained" in caplog.text
