"""The `config` and `state` entries of a finetuned.pth that MinD-Vis's own scripts can use.

MinD-Vis's `gen_eval.py` does `config = sd['config']` and then reads and assigns
attributes on it (`config.root_path = ...`, `config.kam_subs`, `config.HW`, ...);
its stage B script resumes from `model_meta['config']` the same way. So the
`config` we write must unpickle, in MinD-Vis's environment, as an instance of
its class `config.Config_Generative_Model` (module `config`, from its `code/`
folder) carrying every field those scripts read (docs/reference.md §5).

How it is written, without any class of ours being needed to read it:
`ConfigGenerativeModel` is a plain attribute holder. Its instances are pickled
with torch's usual protocol 2 (NEWOBJ + BUILD of the attribute dict), and the
one place where pickle would name our class, the GLOBAL opcode for the class
itself, is written by hand as `config\\nConfig_Generative_Model\\n` (see
`_Pickler.save_global`). Nothing is imported to write it: pickle's normal path
would import a module called `config` to check the name.

Reading: MinD-Vis's `torch.load` imports its `config.py` and fills an instance;
our `safe_load` reads the same bytes as data (a `ForeignConfig`) and refuses
any other global.

`state`: gen_eval passes `sd['state']` to `torch.cuda.set_rng_state`, so it is
a CUDA generator state: 16 bytes, the seed (uint64) then the Philox offset
(int64), little-endian, as `CUDAGeneratorImpl::get_state` lays them out.
"""

from __future__ import annotations

import pickle
import types
from pathlib import Path
from typing import Any

import numpy as np
import torch

REFERENCE_MODULE = "config"
REFERENCE_CLASS = "Config_Generative_Model"
REFERENCE_GLOBAL = f"{REFERENCE_MODULE}.{REFERENCE_CLASS}"

# Config_Generative_Model.__init__'s fields with its values (code/config.py), plus the ones its
# scripts add before saving: output_path (stage B main), logger / trainer (fLDM.finetune sets
# both to None) and test_category, which gen_eval passes to create_Kamitani_dataset.
REFERENCE_DEFAULTS: dict[str, Any] = {
    "seed": 2022, "root_path": ".", "kam_path": "./data/Kamitani/npz", "bold5000_path": "./data/BOLD5000",
    "roi": "VC", "patch_size": 16, "pretrain_gm_path": "./pretrains/ldm/label2img", "dataset": "GOD",
    "kam_subs": ["sbj_3"], "bold5000_subs": ["CSI1"], "pretrain_mbm_path": "./pretrains/GOD/fmri_encoder.pth",
    "img_size": 256, "batch_size": 5, "lr": 5.3e-5, "num_epoch": 500, "precision": 32, "accumulate_grad": 1,
    "crop_ratio": 0.2, "global_pool": False, "use_time_cond": True, "eval_avg": True, "num_samples": 5,
    "ddim_steps": 250, "HW": None, "model_meta": None, "checkpoint_path": None,
    "output_path": ".", "logger": None, "trainer": None, "test_category": None,
}
# the fields gen_eval.py reads (after assigning root_path, kam_path, bold5000_path, pretrain_*_path)
GEN_EVAL_READS = ("root_path", "kam_path", "bold5000_path", "pretrain_mbm_path", "pretrain_gm_path", "roi",
                  "patch_size", "kam_subs", "test_category", "bold5000_subs", "logger", "ddim_steps",
                  "global_pool", "use_time_cond", "num_samples", "HW")


class ConfigGenerativeModel:
    """An attribute holder pickled under MinD-Vis's name `config.Config_Generative_Model`."""

    def __init__(self, fields: dict[str, Any]):
        self.__dict__.update(fields)


class _Pickler(pickle._Pickler):  # the Python pickler: its save_global can be specialised
    def save_global(self, obj, name=None):
        if obj is ConfigGenerativeModel:
            # protocol-2 GLOBAL opcode naming MinD-Vis's class; no import of a module `config`
            self.write(pickle.GLOBAL + f"{REFERENCE_MODULE}\n{REFERENCE_CLASS}\n".encode("ascii"))
            self.memoize(obj)
            return
        super().save_global(obj, name)


# what torch.save takes as `pickle_module`: anything with a Pickler class
PICKLE_MODULE = types.ModuleType("mindvis_reference_pickle")
PICKLE_MODULE.Pickler = _Pickler


def cuda_rng_state(seed: int, offset: int = 0) -> torch.Tensor:
    """A CUDA generator state (what torch.cuda.get_rng_state returns): seed uint64 + offset int64."""
    raw = np.array([seed], "<u8").tobytes() + np.array([offset], "<i8").tobytes()
    return torch.frombuffer(bytearray(raw), dtype=torch.uint8).clone()


def _subject_names(block: dict[str, Any], dataset: str) -> dict[str, list[str]]:
    npz = block.get("npz")
    if not npz:
        return {}
    stem = Path(str(npz)).stem  # sbj_3.npz -> sbj_3, CSI1.npz -> CSI1
    return {"kam_subs": [stem]} if dataset == "GOD" else {"bold5000_subs": [stem]}


def reference_fields(config: dict[str, Any]) -> dict[str, Any]:
    """Our plain-dict stage B config -> every Config_Generative_Model field (ours kept as extra attributes)."""
    block = config.get("mindvis") if isinstance(config.get("mindvis"), dict) else {}
    out = dict(REFERENCE_DEFAULTS)
    dataset = str(config.get("dataset") or out["dataset"])
    out["dataset"] = dataset
    out["pretrain_mbm_path"] = f"./pretrains/{dataset}/fmri_encoder.pth"
    out.update(_subject_names(block, dataset))
    if block.get("roi"):
        out["roi"] = block["roi"]
    out.update({k: v for k, v in config.items() if v is not None or k not in out})
    for key in ("kam_subs", "bold5000_subs"):  # the reference iterates these lists
        out[key] = list(out[key])
    return out


def save_reference_payload(path_or_buffer, payload: dict[str, Any]) -> None:
    """torch.save with MinD-Vis's config class name written for any ConfigGenerativeModel in `payload`."""
    torch.save(payload, path_or_buffer, pickle_module=PICKLE_MODULE)
