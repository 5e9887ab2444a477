"""The real-data and paper overlays (config/*.yaml on top of config/config.yaml) are valid configs:
the schema accepts the merged config and every section a rule hands to a command loads into its dataclass."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import yaml
from snakemake.utils import validate

from mindvis.config import load_section
from mindvis.evaluation import EvaluateConfig
from mindvis.generation import GenerateConfig
from mindvis.training.stage_a2 import FinetuneConfig
from mindvis.training.stage_b import FinetuneLdmConfig

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = ROOT / "workflow" / "schemas" / "config.schema.yaml"
SECTIONS = {("stage_a", "finetune"): FinetuneConfig, ("stage_b", "finetune"): FinetuneLdmConfig,
            ("stage_b", "generate"): GenerateConfig, ("evaluate",): EvaluateConfig}


def merged(*names: str) -> dict:
    """config.yaml, then each overlay, merged key by key as Snakemake merges --configfile files."""
    def deep_update(base: dict, extra: dict) -> None:
        for key, value in extra.items():
            if isinstance(value, dict) and isinstance(base.get(key), dict):
                deep_update(base[key], value)
            else:
                base[key] = copy.deepcopy(value)

    config = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    for name in names:
        deep_update(config, yaml.safe_load((ROOT / "config" / name).read_text()))
    return config


def section_of(config: dict, keys: tuple[str, ...]) -> str:
    node = config
    for key in keys:
        node = node[key]
    return json.dumps(node)


@pytest.mark.parametrize("overlays", [("god.yaml",), ("bold5000.yaml",), ("hcp.yaml",),
                                      ("hcp.yaml", "god.yaml", "paper.yaml"), ("bold5000.yaml", "paper.yaml"),
                                      ("hcp.yaml", "nsd.yaml", "paper.yaml")])
def test_overlays_give_valid_configs(overlays):
    config = merged(*overlays)
    validate(config, str(SCHEMA), set_default=True)
    for keys, cls in SECTIONS.items():
        load_section(cls, section_of(config, keys))


def test_paper_overlay_restores_the_reference_where_the_demo_departs_from_it():
    demo, paper = merged(), merged("god.yaml", "paper.yaml")
    ft = load_section(FinetuneLdmConfig, section_of(paper, ("stage_b", "finetune")))
    gen = load_section(GenerateConfig, section_of(paper, ("stage_b", "generate")))
    ev = load_section(EvaluateConfig, section_of(paper, ("evaluate",)))
    assert (ft.lr, ft.batch_size, ft.epochs, ft.crop_p, ft.crop_ratio) == (5.3e-5, 5, 500, 0.5, 0.8)
    assert (ft.conditioner_init, ft.cond_drop_prob, ft.snr_gamma) == ("random", 0.0, 0.0)
    assert (gen.sampler, gen.steps, gen.guidance_scale, gen.n_samples) == ("plms", 250, 1.0, 5)
    assert (ev.judge, ev.n_way, ev.trials) == ("vit_h_14_swag", 50, 1000)
    assert paper["stage_b"]["prior"]["source"] == "compvis" and paper["stage_b"]["model"]["preset"] == "paper"
    # the demo really departs (else this test would prove nothing)
    demo_ft = load_section(FinetuneLdmConfig, section_of(demo, ("stage_b", "finetune")))
    assert (demo_ft.crop_p, demo_ft.cond_drop_prob) == (0.0, 0.1) and demo["stage_b"]["generate"]["guidance_scale"] > 1


def test_nsd_overlay_is_the_fields_setting():
    from mindvis.preprocess.nsd import NsdPreprocessConfig, validate as validate_nsd

    config = merged("hcp.yaml", "nsd.yaml", "paper.yaml")
    cfg = load_section(NsdPreprocessConfig, section_of(config, ("nsd", "preprocess")))
    validate_nsd(cfg)
    assert (cfg.sessions, cfg.roi, cfg.zscore, cfg.pixel_image_size) == (40, "nsdgeneral", "session", 425)
    assert config["nsd"]["subjects"] == [1, 2, 5, 7] and config["nsd"]["source"] == "release"
    assert config["god"]["subjects"] == [] and config["bold5000"]["subjects"] == []
