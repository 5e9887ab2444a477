"""BOLD5000 trial bookkeeping: presentation lists, `CSI{n}_imgnames.txt`, the repeated-image list.

The release records what was shown in three places that must agree:

- `Stimuli_Presentation_Lists/CSI{n}/CSI{n}_sessXX/CSI_sessXX_runYY.txt`
  (note the `CSI_` prefix without the subject number): one image name per
  line, a repeat presentation prefixed `rep_`;
- `CSI{n}_imgnames.txt`: one name per trial, chronological, `rep_` stripped;
- the betas: one volume per trial, session by session.

Sorting the lists by (session, run) numerically, stripping `rep_`, must give
`CSI{n}_imgnames.txt` exactly; otherwise the betas cannot be matched to images
and we stop with an error naming both files and the first disagreement.
Text files from the release can carry Windows line ends and trailing spaces,
so every line is stripped and blank lines are skipped.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from mindvis.utils.errors import InputDataError

REPEAT_PREFIX = "rep_"
_SESSION_DIR = re.compile(r"^CSI(\d+)_sess(\d+)$")
_RUN_FILE = re.compile(r"^CSI\d*_sess(\d+)_run(\d+)\.txt$")


@dataclass(frozen=True)
class Presentation:
    """One trial as the presentation lists record it."""

    session: int
    run: int
    line: int  # 1-based line number among the file's non-blank lines
    name: str  # image name, `rep_` stripped
    repeat: bool  # the list marked it `rep_`
    source: Path


def read_name_list(path: str | Path) -> list[str]:
    """Non-blank lines of a text file, stripped (tolerates CRLF, CR, trailing spaces, a BOM)."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise InputDataError(path, f"cannot read ({exc.strerror or exc})") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InputDataError(path, f"not a UTF-8 text file ({exc.reason} at byte {exc.start})") from None
    # str.splitlines splits on \n, \r\n and a lone \r alike.
    return [line.strip() for line in text.splitlines() if line.strip()]


def strip_repeat(name: str) -> tuple[str, bool]:
    """('rep_x.jpg') -> ('x.jpg', True); only the one leading prefix is removed."""
    if name.startswith(REPEAT_PREFIX):
        return name[len(REPEAT_PREFIX) :], True
    return name, False


def find_presentation_lists(subject_dir: str | Path, subject: int) -> dict[int, dict[int, Path]]:
    """{session: {run: path}} from `.../Stimuli_Presentation_Lists/CSI{n}`.

    Sessions and runs are keyed by their numbers (not by string order, so
    `run10` comes after `run9` even without zero padding).
    """
    subject_dir = Path(subject_dir)
    if not subject_dir.is_dir():
        raise InputDataError(subject_dir, "presentation-list folder not found")
    sessions: dict[int, dict[int, Path]] = {}
    for sess_dir in sorted(p for p in subject_dir.iterdir() if p.is_dir()):
        match = _SESSION_DIR.match(sess_dir.name)
        if not match:
            continue
        if int(match.group(1)) != subject:
            raise InputDataError(sess_dir, f"session folder of CSI{match.group(1)} inside the CSI{subject} lists")
        session = int(match.group(2))
        runs: dict[int, Path] = {}
        for run_file in sorted(sess_dir.iterdir()):
            run_match = _RUN_FILE.match(run_file.name)
            if not run_match or not run_file.is_file():
                continue
            if int(run_match.group(1)) != session:
                raise InputDataError(run_file, f"run list names session {run_match.group(1)} but sits in {sess_dir.name}")
            run = int(run_match.group(2))
            if run in runs:
                raise InputDataError(run_file, f"two lists for run {run} of session {session}: {runs[run].name}")
            runs[run] = run_file
        if not runs:
            raise InputDataError(sess_dir, "session folder holds no CSI_sessXX_runYY.txt list")
        sessions[session] = runs
    if not sessions:
        raise InputDataError(subject_dir, f"no CSI{subject}_sessXX folders with run lists")
    return sessions


def read_presentations(lists: dict[int, dict[int, Path]]) -> list[Presentation]:
    """All trials in chronological order: session, then run, then line."""
    trials: list[Presentation] = []
    for session in sorted(lists):
        for run in sorted(lists[session]):
            path = lists[session][run]
            names = read_name_list(path)
            if not names:
                raise InputDataError(path, "run list is empty")
            for line, entry in enumerate(names, start=1):
                name, repeat = strip_repeat(entry)
                if not name:
                    raise InputDataError(path, f"line {line} is only the prefix '{REPEAT_PREFIX}'")
                trials.append(Presentation(session, run, line, name, repeat, path))
    return trials


def check_order(trials: Sequence[Presentation], imgnames: Sequence[str], imgnames_path: Path, lists_dir: Path) -> None:
    """Require the rebuilt trial order to equal `CSI{n}_imgnames.txt`, name by name."""
    for index, (trial, expected) in enumerate(zip(trials, imgnames)):
        if trial.name != expected:
            raise InputDataError(
                imgnames_path,
                f"trial {index + 1} is '{expected}' here but '{trial.name}' in the presentation lists "
                f"({trial.source}, line {trial.line}); the lists under {lists_dir} (sorted by session then run, "
                f"'{REPEAT_PREFIX}' stripped) must reproduce this file",
            )
    if len(trials) != len(imgnames):
        raise InputDataError(
            imgnames_path,
            f"{len(imgnames)} trials here but {len(trials)} in the presentation lists under {lists_dir} "
            f"(the first {min(len(trials), len(imgnames))} agree)",
        )


def trials_per_session(trials: Sequence[Presentation]) -> dict[int, int]:
    counts: dict[int, int] = {}
    for trial in trials:
        counts[trial.session] = counts.get(trial.session, 0) + 1
    return counts
