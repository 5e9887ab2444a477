"""Safe checkpoint loading: no pickled code runs; MinD-Vis's fmri_encoder.pth layout round-trips."""

from __future__ import annotations

import os
import pickle
import sys
import types
import zipfile

import pytest
import torch

from mindvis.checkpoints import (
    ForeignConfig,
    UnsafeCheckpointError,
    export_mbm_checkpoint,
    load_mbm_checkpoint,
    pickle_globals,
    reference_config,
    safe_load,
)
from mindvis.models import PRESETS, ScMbm
from mindvis.utils.errors import InputDataError

TINY = PRESETS["tiny"]


class _RunsShell:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class _RunsEval:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (eval, (f"open({str(self.marker)!r}, 'w').close()",))


@pytest.mark.parametrize("payload_cls, refused_name", [(_RunsShell, "system"), (_RunsEval, "builtins.eval")])
def test_malicious_pickle_is_refused_and_runs_nothing(tmp_path, payload_cls, refused_name):
    marker = tmp_path / "PWNED"
    path = tmp_path / "evil.pth"
    torch.save({"model": {"w": torch.zeros(2)}, "config": payload_cls(marker)}, path)
    with pytest.raises(UnsafeCheckpointError) as info:
        safe_load(path)
    assert refused_name in str(info.value) and str(path) in str(info.value)
    assert not marker.exists()


def test_raw_pickle_stream_with_reduce_is_refused(tmp_path):
    """A legacy (non-zip) file: a bare pickle whose REDUCE would call os.system."""
    marker = tmp_path / "PWNED"
    path = tmp_path / "legacy.pth"
    path.write_bytes(pickle.dumps(_RunsShell(marker), protocol=2))
    with pytest.raises(UnsafeCheckpointError, match="system"):
        safe_load(path)
    assert not marker.exists()


def test_only_config_module_config_classes_get_stand_ins(tmp_path):
    fake = types.ModuleType("config")

    class NotAConfig:  # module `config` but not a Config_* class: refused
        pass

    NotAConfig.__module__, NotAConfig.__qualname__ = "config", "NotAConfig"
    fake.NotAConfig = NotAConfig
    sys.modules["config"] = fake
    try:
        torch.save({"config": NotAConfig()}, tmp_path / "x.pth")
    finally:
        del sys.modules["config"]
    with pytest.raises(UnsafeCheckpointError, match=r"config\.NotAConfig"):
        safe_load(tmp_path / "x.pth")


def test_corrupt_file_is_an_input_error(tmp_path):
    path = tmp_path / "cut.pth"
    torch.save({"model": {"w": torch.zeros(100)}}, path)
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(InputDataError):
        safe_load(path)
    with pytest.raises(InputDataError, match="not found"):
        safe_load(tmp_path / "missing.pth")


def _data_pkl(path) -> bytes:
    with zipfile.ZipFile(path) as zf:
        return zf.read(next(n for n in zf.namelist() if n.endswith("/data.pkl")))


def _mindvis_style_checkpoint(path, model, epoch=7):
    """torch.save exactly as MinD-Vis's save_model, with its config class from a module named `config`."""
    fake = types.ModuleType("config")

    class Config_MBM_fMRI:  # noqa: N801 - MinD-Vis's name
        def __init__(self):
            self.lr, self.weight_decay, self.num_epoch, self.batch_size = 2.5e-4, 0.05, 500, 100
            self.mask_ratio, self.patch_size, self.embed_dim = 0.75, 16, TINY.embed_dim
            self.decoder_embed_dim, self.depth, self.num_heads = TINY.decoder_embed_dim, TINY.depth, TINY.num_heads
            self.decoder_num_heads, self.mlp_ratio, self.seed = TINY.decoder_num_heads, TINY.mlp_ratio, 2022
            self.focus_range, self.roi = None, "VC"

    Config_MBM_fMRI.__module__, Config_MBM_fMRI.__qualname__ = "config", "Config_MBM_fMRI"
    fake.Config_MBM_fMRI = Config_MBM_fMRI
    sys.modules["config"] = fake
    try:
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.95))
        model(torch.randn(2, model.num_voxels))[0].backward()
        optimizer.step()
        scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
        torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "epoch": epoch,
                    "scaler": scaler.state_dict(), "config": Config_MBM_fMRI()}, path)
    finally:
        del sys.modules["config"]  # the loader must not need the class
    assert "config" not in sys.modules


def test_mindvis_checkpoint_loads_strictly_and_exports_back(tmp_path):
    torch.manual_seed(0)
    source = ScMbm(TINY, n_tokens=9)
    ref_path = tmp_path / "fmri_encoder.pth"
    _mindvis_style_checkpoint(ref_path, source)
    assert "config.Config_MBM_fMRI" in pickle_globals(_data_pkl(ref_path))

    raw = safe_load(ref_path)
    assert isinstance(raw["config"], ForeignConfig) and raw["config"].class_name == "config.Config_MBM_fMRI"
    assert raw["config"].fields["num_heads"] == TINY.num_heads and raw["config"].fields["focus_range"] is None
    assert "config" not in sys.modules  # nothing was imported

    loaded = load_mbm_checkpoint(ref_path)
    assert loaded.arch == TINY and loaded.n_tokens == 9 and loaded.epoch == 7
    assert loaded.config_class == "config.Config_MBM_fMRI"
    for key, value in source.state_dict().items():
        assert torch.equal(loaded.model.state_dict()[key], value), key

    out = tmp_path / "ours" / "fmri_encoder.pth"
    export_mbm_checkpoint(out, loaded.model, reference_config(loaded.arch, loaded.n_tokens),
                          epoch=loaded.epoch, optimizer=loaded.optimizer, scaler=loaded.scaler)
    ours = torch.load(out, weights_only=True)  # plain data: loads with no allow-list at all
    theirs = safe_load(ref_path)
    assert set(ours) == set(theirs) == {"model", "optimizer", "epoch", "scaler", "config"}
    assert list(ours["model"]) == list(theirs["model"])
    for key in theirs["model"]:
        assert ours["model"][key].shape == theirs["model"][key].shape
        assert torch.equal(ours["model"][key], theirs["model"][key])
    assert ours["epoch"] == 7 and ours["scaler"] == theirs["scaler"]
    assert ours["optimizer"]["param_groups"] == theirs["optimizer"]["param_groups"]
    for idx, st in theirs["optimizer"]["state"].items():
        assert torch.equal(ours["optimizer"]["state"][idx]["exp_avg"], st["exp_avg"])
    assert isinstance(ours["config"], dict) and ours["config"]["num_heads"] == TINY.num_heads
    assert ours["config"]["num_voxels"] == 9 * 16
    # no pickled class anywhere in our file
    assert all(g.startswith(("torch.", "collections.")) for g in pickle_globals(_data_pkl(out)))


def test_resizing_tokens_on_load(tmp_path):
    torch.manual_seed(0)
    path = tmp_path / "fmri_encoder.pth"
    export_mbm_checkpoint(path, ScMbm(TINY, n_tokens=6), reference_config(TINY, 6))
    loaded = load_mbm_checkpoint(path, n_tokens=12)
    assert loaded.checkpoint_tokens == 6 and loaded.n_tokens == 12
    assert loaded.model.pos_embed.shape == (1, 13, TINY.embed_dim)
    assert loaded.model.decoder_pos_embed.shape == (1, 13, TINY.decoder_embed_dim)
    encoder_only = load_mbm_checkpoint(path, with_decoder=False)
    assert not any(k.startswith(("decoder", "mask_token")) for k in encoder_only.model.state_dict())


def test_export_refuses_non_plain_config(tmp_path):
    with pytest.raises(TypeError, match="plain data"):
        export_mbm_checkpoint(tmp_path / "x.pth", ScMbm(TINY, 2), {"bad": object()})
    assert not (tmp_path / "x.pth").exists()


def test_every_torch_load_in_src_is_weights_only():
    import pathlib
    import re

    src = pathlib.Path(__file__).resolve().parents[1] / "src"
    offenders = []
    for file in src.rglob("*.py"):
        text = file.read_text()
        for match in re.finditer(r"torch\.load\(([^()]|\([^()]*\))*\)", text):
            if "weights_only=True" not in match.group(0):
                offenders.append(f"{file}: {match.group(0)}")
    assert offenders == []
