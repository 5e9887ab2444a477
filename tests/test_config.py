"""The Snakemake config schema and the typed per-command configs."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import jsonschema
import pytest
import yaml

from conftest import REPO_ROOT
from mindvis.config import load_section, to_plain
from mindvis.utils.errors import ConfigError

SCHEMA = yaml.safe_load((REPO_ROOT / "workflow/schemas/config.schema.yaml").read_text())
CONFIG_FILES = sorted((REPO_ROOT / "config").glob("*.yaml"))


@dataclass
class _Inner:
    snr: float = 1.0


@dataclass
class _Section:
    roi: str = "VC"
    repeats: int = 35
    inner: _Inner = field(default_factory=_Inner)


def test_schema_is_valid_2020_12():
    jsonschema.Draft202012Validator.check_schema(SCHEMA)
    assert SCHEMA["$schema"].endswith("2020-12/schema")


@pytest.mark.parametrize("path", CONFIG_FILES, ids=lambda p: p.name)
def test_shipped_configs_validate(path):
    jsonschema.Draft202012Validator(SCHEMA).validate(yaml.safe_load(path.read_text()))


def test_schema_rejects_a_misspelt_key():
    cfg = yaml.safe_load((REPO_ROOT / "config/config.yaml").read_text())
    bad = copy.deepcopy(cfg)
    bad["god"]["preprocess"]["rio"] = "VC"
    with pytest.raises(jsonschema.ValidationError, match="rio"):
        jsonschema.Draft202012Validator(SCHEMA).validate(bad)


def test_load_section_merges_inline_yaml_and_overrides():
    cfg = load_section(_Section, '{"roi": "HVC", "inner": {"snr": 0.5}}', ["repeats=5"])
    assert (cfg.roi, cfg.repeats, cfg.inner.snr) == ("HVC", 5, 0.5)
    assert to_plain(cfg) == {"roi": "HVC", "repeats": 5, "inner": {"snr": 0.5}}


def test_load_section_reads_a_file(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("roi: LVC\n")
    assert load_section(_Section, str(path)).roi == "LVC"


def test_load_section_refuses_unknown_keys_and_bad_types():
    with pytest.raises(ConfigError, match="rio"):
        load_section(_Section, '{"rio": "VC"}')
    with pytest.raises(ConfigError):
        load_section(_Section, '{"repeats": "many"}')
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        load_section(_Section, None, ["repeats"])
