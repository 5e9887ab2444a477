"""BOLD5000 presentation lists: parsing (rep_, CRLF, trailing spaces), ordering, the imgnames check."""

from __future__ import annotations

from pathlib import Path

import pytest

from mindvis.preprocess.bold5000_lists import (
    check_order,
    find_presentation_lists,
    read_name_list,
    read_presentations,
    strip_repeat,
    trials_per_session,
)
from mindvis.utils.errors import InputDataError


def _write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def test_read_name_list_tolerates_crlf_spaces_bom_and_blank_lines(tmp_path):
    path = _write(tmp_path / "run.txt", b"\xef\xbb\xbfa.jpg  \r\nrep_b.JPEG\t\r\n\r\n  c.jpg\rd.png\n\n")
    assert read_name_list(path) == ["a.jpg", "rep_b.JPEG", "c.jpg", "d.png"]


def test_read_name_list_errors_name_the_file(tmp_path):
    with pytest.raises(InputDataError, match=r"missing\.txt: cannot read"):
        read_name_list(tmp_path / "missing.txt")
    bad = _write(tmp_path / "latin1.txt", b"caf\xe9.jpg\n")
    with pytest.raises(InputDataError, match=r"latin1\.txt: not a UTF-8 text file"):
        read_name_list(bad)


def test_strip_repeat_removes_one_leading_prefix_only():
    assert strip_repeat("rep_n01440764_10110.JPEG") == ("n01440764_10110.JPEG", True)
    assert strip_repeat("rep_rep_x.jpg") == ("rep_x.jpg", True)
    assert strip_repeat("xrep_.jpg") == ("xrep_.jpg", False)
    assert strip_repeat("COCO_train2014_000000000036.jpg") == ("COCO_train2014_000000000036.jpg", False)


def test_sessions_and_runs_sorted_numerically(tmp_path):
    root = tmp_path / "CSI2"
    # Unpadded run numbers: string order would put run10 before run2.
    for run in (1, 2, 10):
        _write(root / "CSI2_sess02" / f"CSI_sess02_run{run}.txt", f"s2r{run}.jpg\r\n".encode())
    _write(root / "CSI2_sess01" / "CSI_sess01_run01.txt", b"first.jpg \nrep_first.jpg\n")
    _write(root / "CSI2_sess01" / "notes.md", b"ignored")
    lists = find_presentation_lists(root, 2)
    assert sorted(lists) == [1, 2] and sorted(lists[2]) == [1, 2, 10]
    trials = read_presentations(lists)
    assert [t.name for t in trials] == ["first.jpg", "first.jpg", "s2r1.jpg", "s2r2.jpg", "s2r10.jpg"]
    assert [t.repeat for t in trials] == [False, True, False, False, False]
    assert (trials[1].session, trials[1].run, trials[1].line) == (1, 1, 2)
    assert trials_per_session(trials) == {1: 2, 2: 3}


def test_list_layout_errors(tmp_path):
    with pytest.raises(InputDataError, match="presentation-list folder not found"):
        find_presentation_lists(tmp_path / "nope", 1)
    _write(tmp_path / "CSI1" / "CSI3_sess01" / "CSI_sess01_run01.txt", b"a.jpg\n")
    with pytest.raises(InputDataError, match=r"CSI3_sess01: session folder of CSI3 inside the CSI1 lists"):
        find_presentation_lists(tmp_path / "CSI1", 1)
    _write(tmp_path / "CSI4" / "CSI4_sess01" / "CSI_sess02_run01.txt", b"a.jpg\n")
    with pytest.raises(InputDataError, match="run list names session 02 but sits in CSI4_sess01"):
        find_presentation_lists(tmp_path / "CSI4", 4)
    _write(tmp_path / "CSI5" / "CSI5_sess01" / "CSI_sess01_run01.txt", b"\r\n  \n")
    with pytest.raises(InputDataError, match="run list is empty"):
        read_presentations(find_presentation_lists(tmp_path / "CSI5", 5))


def test_check_order_reports_first_mismatch_and_length(tmp_path):
    root = tmp_path / "CSI1"
    _write(root / "CSI1_sess01" / "CSI_sess01_run01.txt", b"a.jpg\nb.jpg\n")
    _write(root / "CSI1_sess01" / "CSI_sess01_run02.txt", b"rep_a.jpg\nc.jpg\n")
    trials = read_presentations(find_presentation_lists(root, 1))
    imgnames = tmp_path / "CSI1_imgnames.txt"
    check_order(trials, ["a.jpg", "b.jpg", "a.jpg", "c.jpg"], imgnames, root)  # agrees: no error
    with pytest.raises(InputDataError) as err:
        check_order(trials, ["a.jpg", "b.jpg", "c.jpg", "a.jpg"], imgnames, root)
    message = str(err.value)
    assert message.startswith(f"{imgnames}: trial 3 is 'c.jpg' here but 'a.jpg'")
    assert "CSI_sess01_run02.txt, line 1" in message and str(root) in message
    with pytest.raises(InputDataError, match=r"5 trials here but 4 in the presentation lists.*first 4 agree"):
        check_order(trials, ["a.jpg", "b.jpg", "a.jpg", "c.jpg", "d.jpg"], imgnames, root)
