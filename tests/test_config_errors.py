"""Config errors name the file and the key (issue 14 §4: a missing --config file gave
"--config must be a mapping, got str"; invalid YAML did not name the file)."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from mindvis.cli.main import main
from mindvis.config import load_section
from mindvis.utils.errors import ConfigError


@dataclass
class _Inner:
    snr: float = 1.0


@dataclass
class _Section:
    roi: str = "VC"
    repeats: int = 35
    inner: _Inner = field(default_factory=_Inner)


def test_missing_config_file_is_named_as_missing(tmp_path):
    missing = tmp_path / "nowhere" / "god.yaml"
    with pytest.raises(ConfigError) as err:
        load_section(_Section, str(missing))
    assert str(err.value) == f"--config file {missing}: no such file"
    assert "mapping" not in str(err.value)


def test_missing_config_without_suffix_is_not_called_a_mapping_problem():
    with pytest.raises(ConfigError, match=r"^--config settings: no such file, and not an inline YAML/JSON mapping"):
        load_section(_Section, "settings")


def test_invalid_yaml_names_the_file_and_the_line(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("roi: HVC\nrepeats: [1, 2\n")  # the list is never closed: the parser stops at the end (line 3)
    with pytest.raises(ConfigError) as err:
        load_section(_Section, str(path))
    message = str(err.value)
    assert message.startswith(f"--config file {path}: invalid YAML/JSON: ")
    assert "line 3" in message and "\n" not in message


def test_unknown_key_names_the_file_and_the_key(tmp_path):
    path = tmp_path / "typo.yaml"
    path.write_text("roi: HVC\nrepeat: 5\n")
    with pytest.raises(ConfigError) as err:
        load_section(_Section, str(path))
    assert str(err.value) == f"--config file {path}: unknown key 'repeat' (_Section keys: roi, repeats, inner)"


def test_nested_unknown_key_and_bad_type_name_the_dotted_key(tmp_path):
    path = tmp_path / "nested.yaml"
    path.write_text("inner:\n  snrr: 2\n")
    with pytest.raises(ConfigError, match=rf"^--config file {path}: unknown key 'inner.snrr'$"):
        load_section(_Section, str(path))
    path.write_text("inner:\n  snr: loud\n")
    with pytest.raises(ConfigError, match=rf"^--config file {path}: key 'inner.snr': Value 'loud'"):
        load_section(_Section, str(path))


def test_set_errors_name_the_item_and_the_key():
    with pytest.raises(ConfigError, match=r"^--set simulate\.snr=0\.5: unknown key 'simulate'"):
        load_section(_Section, None, ["simulate.snr=0.5"])
    with pytest.raises(ConfigError, match=r"^--set repeats=\[1: the value is not valid YAML"):
        load_section(_Section, None, ["repeats=[1"])


def test_a_list_file_is_not_a_mapping(tmp_path):
    path = tmp_path / "list.yaml"
    path.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match=rf"^--config file {path}: must be a mapping of config keys, got list"):
        load_section(_Section, str(path))


def test_a_folder_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="is a folder"):
        load_section(_Section, str(tmp_path))


def test_cli_prints_one_line_naming_the_file(tmp_path, capsys):
    missing = tmp_path / "god.yaml"
    argv = ["simulate-god", "--stimuli", str(tmp_path), "--subject", "1", "--out", str(tmp_path / "S1.h5"),
            "--no-tracking", "--config", str(missing)]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"mindvis simulate-god: error: --config file {missing}: no such file"
    assert not (tmp_path / "S1.h5").exists()
