"""Typed configs: each command's section as an OmegaConf structured dataclass."""

from mindvis.config.loader import load_section, to_plain

__all__ = ["load_section", "to_plain"]
