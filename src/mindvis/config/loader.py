"""Turn `--config` + `--set` into a typed, validated config object.

The Snakemake config (YAML, validated by workflow/schemas/config.schema.yaml)
is the single source of truth; a rule hands its command exactly the section
it depends on. Here that section is merged onto the command's dataclass of
defaults with OmegaConf, so a misspelt or unknown key fails loudly instead of
being silently ignored (the reference's "defaults silently kept" problem).
"""

from __future__ import annotations

import json
from dataclasses import fields, is_dataclass
from pathlib import Path
from typing import Any, TypeVar

import yaml
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from mindvis.utils.errors import ConfigError

T = TypeVar("T")


def _read_source(source: str | None) -> tuple[dict[str, Any], str]:
    """The --config mapping and where it came from ("--config file PATH" or "--config (inline)"),
    for messages that name the file."""
    if source is None or source.strip() == "":
        return {}, "--config"
    path = _config_path(source)
    if path is not None:
        origin = f"--config file {path}"
        try:
            text = path.read_text()
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{origin}: cannot be read ({exc.__class__.__name__}: {exc})") from None
    else:
        origin, text = "--config (inline)", source
    try:
        data = yaml.safe_load(text)  # YAML is a superset of JSON
    except yaml.YAMLError as exc:
        raise ConfigError(f"{origin}: invalid YAML/JSON: {_yaml_problem(exc)}") from None
    if data is None:
        return {}, origin
    if not isinstance(data, dict):
        if path is None and isinstance(data, str) and _looks_like_path(source):
            raise ConfigError(f"--config file {source}: no such file")
        if path is None and isinstance(data, str) and not any(c.isspace() for c in source.strip()):
            raise ConfigError(f"--config {source}: no such file, and not an inline YAML/JSON mapping of keys")
        raise ConfigError(f"{origin}: must be a mapping of config keys, got {type(data).__name__} {_short(data)}")
    return data, origin


def _config_path(source: str) -> Path | None:
    """The file `source` names, when it names an existing path; None when it is inline YAML."""
    if source.lstrip().startswith(("{", "[")) or "\n" in source:
        return None
    try:
        path = Path(source)
        if path.is_dir():
            raise ConfigError(f"--config {path}: is a folder, not a YAML/JSON file")
        return path if path.exists() else None
    except (OSError, ValueError):  # e.g. a long inline string is not a valid file name
        return None


def _looks_like_path(source: str) -> bool:
    """One word ending in a config suffix or holding a path separator: meant as a file."""
    text = source.strip()
    if not text or any(c.isspace() for c in text):
        return False
    return text.lower().endswith((".yaml", ".yml", ".json")) or "/" in text


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """One line: the parser's problem and where (1-based line and column)."""
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    return f"{problem}{where}"


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _parse_override(item: str) -> tuple[str, Any]:
    if "=" not in item:
        raise ConfigError(f"--set expects KEY=VALUE, got '{item}'")
    key, raw = item.split("=", 1)
    try:
        return key.strip(), yaml.safe_load(raw)
    except yaml.YAMLError as exc:
        raise ConfigError(f"--set {item}: the value is not valid YAML: {_yaml_problem(exc)}") from None


def _omegaconf_problem(exc: OmegaConfBaseException, schema: type) -> str:
    """OmegaConf's message as one line naming the key, with the valid keys when the key is unknown."""
    from omegaconf.errors import ConfigAttributeError, ConfigKeyError

    key = getattr(exc, "full_key", None) or "?"
    first = str(getattr(exc, "msg", None) or exc).splitlines()[0]
    if isinstance(exc, (ConfigKeyError, ConfigAttributeError)) and first.startswith("Key "):
        top_level = "." not in str(key)  # a nested key's siblings are not the schema's own fields
        known = ", ".join(f.name for f in fields(schema)) if top_level and is_dataclass(schema) else ""
        return f"unknown key '{key}'" + (f" ({schema.__name__} keys: {known})" if known else "")
    return f"key '{key}': {first}"


def load_section(schema: type[T], source: str | None = None, overrides: list[str] | None = None) -> T:
    """Merge defaults (the dataclass), the given section and dotted overrides; an error names
    where the bad value came from (the --config file, or the --set item) and the key."""
    base = OmegaConf.structured(schema)
    data, origin = _read_source(source)
    try:
        merged = OmegaConf.merge(base, OmegaConf.create(data))
    except OmegaConfBaseException as exc:
        raise ConfigError(f"{origin}: {_omegaconf_problem(exc, schema)}") from None
    for item in overrides or []:
        key, value = _parse_override(item)
        try:
            OmegaConf.update(merged, key, value, merge=True)
        except OmegaConfBaseException as exc:
            raise ConfigError(f"--set {item}: {_omegaconf_problem(exc, schema)}") from None
    try:
        obj = OmegaConf.to_object(merged)
    except OmegaConfBaseException as exc:
        raise ConfigError(f"invalid config for {schema.__name__} ({origin}): {_omegaconf_problem(exc, schema)}") from None
    return obj  # type: ignore[return-value]


def to_plain(cfg: Any) -> dict[str, Any]:
    """A JSON-safe dict of a structured config (for logging and artifacts)."""
    return json.loads(json.dumps(OmegaConf.to_container(OmegaConf.structured(cfg), resolve=True), default=str))
