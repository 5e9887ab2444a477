"""Turn `--config` + `--set` into a typed, validated config object.

The Snakemake config (YAML, validated by workflow/schemas/config.schema.yaml)
is the single source of truth; a rule hands its command exactly the section
it depends on. Here that section is merged onto the command's dataclass of
defaults with OmegaConf, so a misspelt or unknown key fails loudly instead of
being silently ignored (the reference's "defaults silently kept" problem).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, TypeVar

import yaml
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from mindvis.utils.errors import ConfigError

T = TypeVar("T")


def _read_source(source: str | None) -> dict[str, Any]:
    if source is None or source.strip() == "":
        return {}
    text = _file_text(source)
    if text is None:
        text = source
    try:
        data = yaml.safe_load(text)  # YAML is a superset of JSON
    except yaml.YAMLError as exc:
        raise ConfigError(f"--config is neither a readable file nor valid YAML/JSON: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"--config must be a mapping, got {type(data).__name__}")
    return data


def _file_text(source: str) -> str | None:
    """The file's text when `source` names an existing file, else None (it is inline YAML)."""
    if source.lstrip().startswith(("{", "[")) or "\n" in source:
        return None
    try:
        path = Path(source)
        return path.read_text() if path.is_file() else None
    except OSError:  # e.g. a long inline string is not a valid file name
        return None


def _parse_override(item: str) -> tuple[str, Any]:
    if "=" not in item:
        raise ConfigError(f"--set expects KEY=VALUE, got '{item}'")
    key, raw = item.split("=", 1)
    return key.strip(), yaml.safe_load(raw)


def load_section(schema: type[T], source: str | None = None, overrides: list[str] | None = None) -> T:
    """Merge defaults (the dataclass), the given section and dotted overrides."""
    base = OmegaConf.structured(schema)
    try:
        merged = OmegaConf.merge(base, OmegaConf.create(_read_source(source)))
        for item in overrides or []:
            key, value = _parse_override(item)
            OmegaConf.update(merged, key, value, merge=True)
        obj = OmegaConf.to_object(merged)
    except OmegaConfBaseException as exc:
        raise ConfigError(f"invalid config for {schema.__name__}: {exc}") from None
    return obj  # type: ignore[return-value]


def to_plain(cfg: Any) -> dict[str, Any]:
    """A JSON-safe dict of a structured config (for logging and artifacts)."""
    return json.loads(json.dumps(OmegaConf.to_container(OmegaConf.structured(cfg), resolve=True), default=str))
