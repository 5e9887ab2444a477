"""One source of defaults per setting: config/config.yaml (the embedded demo) holds the value of
every key it sets; the schema and the command dataclasses may only repeat it.

The rule checked here, walking all three files programmatically:
- every section a rule hands to a command (rules/*.smk) is routed below to the dataclass that loads
  it; every key the command receives is a field of that dataclass, and the field's default equals
  config.yaml's value (so a command run without --config does what the demo does);
- every key the schema documents exists in config.yaml, under a routed section it is a field of the
  dataclass too, and every schema `default:` equals config.yaml's value at that place (an object's
  default only repeats config.yaml's keys);
- keys only a dataclass knows (config.yaml does not set them) have their one default there.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from conftest import REPO_ROOT
from mindvis.evaluation import EvaluateConfig
from mindvis.evaluation.judge_training import JudgeTrainConfig
from mindvis.evaluation.report import ReportConfig
from mindvis.generation import GenerateConfig
from mindvis.evaluation.sampler_comparison import SamplerComparisonConfig
from mindvis.preprocess.bold5000 import Bold5000PreprocessConfig
from mindvis.preprocess.god import GodPreprocessConfig
from mindvis.preprocess.god_images import GodImagesConfig
from mindvis.preprocess.hcp import HcpPreprocessConfig
from mindvis.preprocess.nsd import NsdPreprocessConfig
from mindvis.simulate.bold5000 import Bold5000SimConfig
from mindvis.simulate.god import GodSimConfig
from mindvis.simulate.hcp import HcpSimConfig
from mindvis.simulate.nsd import NsdSimConfig
from mindvis.simulate.stimuli import StimuliConfig
from mindvis.training.stage_a2 import FinetuneConfig
from mindvis.training.stage_a1 import MbmTrainConfig
from mindvis.training.autoencoder import AutoencoderConfig
from mindvis.training.label2img import Label2ImgConfig
from mindvis.training.stage_b import FinetuneLdmConfig

CONFIG = yaml.safe_load((REPO_ROOT / "config" / "config.yaml").read_text())
SCHEMA = yaml.safe_load((REPO_ROOT / "workflow" / "schemas" / "config.schema.yaml").read_text())
RULES = sorted((REPO_ROOT / "rules").glob("*.smk"))


@dataclass(frozen=True)
class Route:
    """What one command receives: config.yaml at `path` (only `only` keys when given, less `skip`),
    plus `inject`ed keys taken from elsewhere in config.yaml, loaded into `schema`."""

    schema: type
    inject: dict[str, tuple[str, ...]] = field(default_factory=dict)
    skip: frozenset[str] = frozenset()
    only: frozenset[str] | None = None


# As rules/*.smk hand the sections over (section(), section_with(), with_model() and the json.dumps params).
ROUTES: dict[tuple[str, ...], Route] = {
    ("stimuli",): Route(StimuliConfig),
    ("god", "simulate"): Route(GodSimConfig),
    ("god", "images"): Route(GodImagesConfig),
    ("god", "preprocess"): Route(GodPreprocessConfig),
    ("bold5000", "simulate"): Route(Bold5000SimConfig),
    ("bold5000", "preprocess"): Route(Bold5000PreprocessConfig),
    ("hcp", "simulate"): Route(HcpSimConfig, inject={"runs": ("hcp", "runs")}),
    ("hcp", "preprocess"): Route(HcpPreprocessConfig, inject={"runs": ("hcp", "runs")}),
    ("nsd", "simulate"): Route(NsdSimConfig),  # subjects: nsd.subjects, given as --subjects
    ("nsd", "preprocess"): Route(NsdPreprocessConfig),
    ("stage_a", "pretrain"): Route(MbmTrainConfig, inject={"model": ("stage_a", "model")}),
    ("stage_a", "finetune"): Route(FinetuneConfig),
    ("stage_b", "autoencoder"): Route(AutoencoderConfig, inject={"model": ("stage_b", "model")}),
    ("stage_b", "label2img"): Route(Label2ImgConfig, inject={"model": ("stage_b", "model")}),
    ("stage_b", "finetune"): Route(FinetuneLdmConfig),
    ("stage_b", "generate"): Route(GenerateConfig),
    ("judge",): Route(JudgeTrainConfig),
    ("evaluate",): Route(EvaluateConfig),
    ("report", "samplers"): Route(SamplerComparisonConfig, skip=frozenset({"enabled", "dataset", "subject"}),
                                  inject={"judge": ("evaluate", "judge"),
                                          "guidance_scale": ("stage_b", "generate", "guidance_scale")}),
    ("report",): Route(ReportConfig, only=frozenset({"title"})),
}

# Known drift (none today): a path here must hold this stale dataclass default; the test fails once it is
# fixed, so the entry is then removed.
PENDING: dict[tuple[str, ...], Any] = {}


def at(node: Any, path: tuple[str, ...]) -> Any:
    for key in path:
        node = node[key]
    return node


def same(a: Any, b: Any) -> bool:
    """Equal as config values: 2 == 2.0 and a tuple equals a list, but True is not 1."""
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    return a == b


def received(path: tuple[str, ...], route: Route) -> dict[str, Any]:
    section = dict(at(CONFIG, path))
    if route.only is not None:
        section = {k: v for k, v in section.items() if k in route.only}
    section = {k: v for k, v in section.items() if k not in route.skip}
    return {**section, **{key: at(CONFIG, source) for key, source in route.inject.items()}}


def default_mismatches(schema_obj: Any, values: dict[str, Any], where: tuple[str, ...]) -> list[str]:
    """Keys of `values` the dataclass instance lacks or defaults otherwise (nested dataclasses walked)."""
    known = {f.name for f in fields(schema_obj)}
    problems = []
    for key, value in values.items():
        here = where + (key,)
        if key not in known:
            problems.append(f"{'.'.join(here)}: set in config.yaml, not a field of {type(schema_obj).__name__}")
            continue
        default = getattr(schema_obj, key)
        if is_dataclass(default) and isinstance(value, dict):
            problems += default_mismatches(default, value, here)
        elif here in PENDING:
            assert same(default, PENDING[here]) and not same(default, value), (
                f"{'.'.join(here)} is no longer the pending drift {PENDING[here]!r}: remove it from PENDING")
        elif not same(default, value):
            problems.append(f"{'.'.join(here)}: config.yaml {value!r}, {type(schema_obj).__name__} default {default!r}")
    return problems


@pytest.mark.parametrize("path", list(ROUTES), ids=".".join)
def test_dataclass_defaults_are_config_yaml(path):
    route = ROUTES[path]
    assert default_mismatches(route.schema(), received(path, route), path) == []


def _schema_nodes(schema: dict, node: dict | None = None, path: tuple[str, ...] = ()):
    """(path, node) of the schema and every property below it, $refs resolved."""
    node = schema if node is None else node
    if "$ref" in node:
        node = {**at(schema, tuple(node["$ref"].removeprefix("#/").split("/"))),
                **{k: v for k, v in node.items() if k != "$ref"}}
    yield path, node
    for key, sub in node.get("properties", {}).items():
        yield from _schema_nodes(schema, sub, path + (key,))


MISSING = object()


def in_config(config: dict, path: tuple[str, ...]) -> Any:
    node: Any = config
    for key in path:
        if not isinstance(node, dict) or key not in node:
            return MISSING
        node = node[key]
    return node


def schema_default_problems(schema: dict, config: dict) -> list[str]:
    """Schema `default:` entries that config.yaml does not set to the same value."""
    problems = []
    for path, node in _schema_nodes(schema):
        if "default" not in node:
            continue
        value, default = in_config(config, path), node["default"]
        if default == {} and isinstance(value, dict):
            continue  # an empty object default only creates the section
        if isinstance(default, dict) and "properties" in node:  # an object's default: a subset of config.yaml's
            wrong = {k: v for k, v in default.items() if not isinstance(value, dict) or not same(value.get(k), v)}
            if wrong:
                problems.append(f"{'.'.join(path)}: default {wrong} vs config.yaml {value!r}")
        elif value is MISSING or not same(default, value):
            problems.append(f"{'.'.join(path)}: schema default {default!r}, config.yaml "
                            f"{'(unset)' if value is MISSING else repr(value)}")
    return problems


def test_every_schema_key_is_set_by_config_yaml():
    assert [".".join(p) for p, _ in _schema_nodes(SCHEMA) if p and in_config(CONFIG, p) is MISSING] == []


def test_schema_defaults_are_config_yaml():
    assert schema_default_problems(SCHEMA, CONFIG) == []


def test_schema_keys_of_routed_sections_are_dataclass_fields():
    problems = []
    for path, route in ROUTES.items():
        for sub, _ in _schema_nodes(SCHEMA):
            if len(sub) != len(path) + 1 or sub[:-1] != path:
                continue
            key = sub[-1]
            if key in route.skip or (route.only is not None and key not in route.only):
                continue
            if key not in {f.name for f in fields(route.schema)}:
                problems.append(f"{'.'.join(sub)}: in the schema, not a field of {route.schema.__name__}")
    assert problems == []


SECTION_CALLS = [  # in order of preference: a spread section (**config[...]) is the one merged into
    (re.compile(r'\*\*config((?:\["\w+"\])+)'), lambda m: tuple(re.findall(r'"(\w+)"', m.group(1)))),
    (re.compile(r'\bsection\(([^)]*)\)'), lambda m: tuple(re.findall(r'"(\w+)"', m.group(1)))),
    (re.compile(r'\bsection_with\(\(([^)]*)\)'), lambda m: tuple(re.findall(r'"(\w+)"', m.group(1)))),
    (re.compile(r'\bwith_model\("(\w+)"\)'), lambda m: ("stage_b", m.group(1))),
    (re.compile(r'config((?:\["\w+"\])+)'), lambda m: tuple(re.findall(r'"(\w+)"', m.group(1)))),
]


def _section_named(expression: str, text: str) -> tuple[str, ...] | None:
    """The section an expression hands over; a call of a helper defined in the rules is read through."""
    for pattern, convert in SECTION_CALLS:
        hits = list(pattern.finditer(expression))
        if hits:
            return convert(hits[0])
    helper = re.match(r"\s*(\w+)\b", expression)  # helper() or a function Snakemake calls: helper
    body = helper and re.search(rf"^def {helper.group(1)}\(.*?(?=^\S)", text, re.M | re.S)
    return _section_named(body.group(0), text) if body else None


def handed_sections(text: str) -> set[tuple[str, ...]]:
    """The config section each `cfg=` param of a rule hands to its command."""
    found = set()
    for param in re.finditer(r"^\s+cfg=(.*(?:\n\s{12,}.*)*)", text, re.M):
        section = _section_named(param.group(1), text)
        assert section, f"cannot tell which section this rule hands over: {param.group(0).strip()[:80]}"
        found.add(section)
    return found


def test_every_section_a_rule_hands_over_is_routed():
    handed = set().union(*(handed_sections(path.read_text()) for path in RULES))
    assert ("stage_b", "finetune") in handed and ("stage_a", "pretrain") in handed  # the parser sees them
    # ("report", "title"): the report rule hands {"title": ...} over, routed as ("report",) with only title
    unrouted = {p for p in handed if p not in ROUTES and not (p[:-1] in ROUTES and ROUTES[p[:-1]].only)}
    assert unrouted == set()


def test_the_rule_would_catch_a_drifted_default():
    """The checks see drift: a dataclass default, a stray key and a schema default, changed on purpose."""
    @dataclass
    class Drifted(FinetuneLdmConfig):
        epochs: int = CONFIG["stage_b"]["finetune"]["epochs"] + 1

    problems = default_mismatches(Drifted(), received(("stage_b", "finetune"), ROUTES[("stage_b", "finetune")]),
                                  ("stage_b", "finetune"))
    assert problems == [f"stage_b.finetune.epochs: config.yaml {CONFIG['stage_b']['finetune']['epochs']!r}, "
                        f"Drifted default {CONFIG['stage_b']['finetune']['epochs'] + 1!r}"]
    stray = default_mismatches(FinetuneLdmConfig(), {"epoch": 3}, ("stage_b", "finetune"))
    assert stray and "not a field" in stray[0]
    drifted = copy.deepcopy(SCHEMA)
    wrong = CONFIG["stimuli"]["train_per_class"] + 1
    drifted["properties"]["stimuli"]["properties"]["train_per_class"]["default"] = wrong
    assert schema_default_problems(drifted, CONFIG) == [
        f"stimuli.train_per_class: schema default {wrong}, config.yaml {CONFIG['stimuli']['train_per_class']!r}"]
