"""Where a BOLD5000 subject's files are under the raw folder (see `bold5000` for the list).

The release is spread over figshare, OpenNeuro and a stimulus zip, and users unpack it
differently, so every input is found by its file name anywhere under the raw root
(one directory walk); a missing or repeated file is an error naming what exists.
`cfg` is the `bold5000.Bold5000PreprocessConfig`.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mindvis.io.images import read_image
from mindvis.utils.errors import InputDataError

log = logging.getLogger(__name__)

BETAS_NAME = "CSI{subject}_GLMbetas-TYPED-FITHRF-GLMDENOISE-RR_ses-{session:02d}.nii.gz"
BETAS_RE = re.compile(r"^CSI(\d+)_GLMbetas-TYPED-FITHRF-GLMDENOISE-RR_ses-(\d+)\.nii(?:\.gz)?$")


class RawIndex:
    """Every file and folder under the raw root, by name (one directory walk)."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        if not self.root.is_dir():
            raise InputDataError(self.root, "raw BOLD5000 folder not found")
        self.files: dict[str, list[Path]] = {}
        self.dirs: dict[str, list[Path]] = {}
        for current, dirnames, filenames in os.walk(self.root, followlinks=True):
            dirnames.sort()
            for name in dirnames:
                self.dirs.setdefault(name, []).append(Path(current) / name)
            for name in sorted(filenames):
                if not name.startswith("._"):  # macOS resource forks from zip archives
                    self.files.setdefault(name, []).append(Path(current) / name)

    def unique_file(self, name: str, what: str, required: bool = True) -> Path | None:
        found = self.files.get(name, [])
        if len(found) > 1:
            raise InputDataError(self.root, f"{what} '{name}' exists {len(found)} times: {', '.join(map(str, found))}")
        if not found:
            if required:
                raise InputDataError(self.root / name, f"{what} not found anywhere under {self.root}")
            return None
        return found[0]

    def matching(self, pattern: re.Pattern[str]) -> list[tuple[re.Match[str], Path]]:
        hits = []
        for name, paths in sorted(self.files.items()):
            match = pattern.match(name)
            if match:
                hits.extend((match, p) for p in paths)
        return hits


@dataclass
class SubjectFiles:
    betas: dict[int, Path]
    masks: dict[str, Path]  # label (e.g. "LHLOC") -> file
    alias_repairs: list[str]  # "sub-CSI2_mask-LHLO.nii.gz -> LHLOC"
    brainmask: Path | None
    imgnames: Path
    lists_dir: Path
    repeated_list: Path



def find_roi_masks(index: RawIndex, subject: int, cfg) -> tuple[dict[str, Path], list[str]]:
    """label -> mask file for every ROI and hemisphere, misnamed files repaired by `cfg.roi_aliases`."""
    pattern = re.compile(rf"^sub-CSI{subject}_mask-(.+?)\.nii(?:\.gz)?$")
    wanted = cfg.roi_labels()
    masks: dict[str, Path] = {}
    repairs: list[str] = []
    for match, path in index.matching(pattern):
        label = match.group(1)
        fixed = cfg.roi_aliases.get(label, label)
        if fixed not in wanted:
            log.debug("ignoring mask %s (label %s not among %s)", path, label, wanted)
            continue
        if fixed in masks:
            raise InputDataError(path, f"a second mask for {fixed}: {masks[fixed]} (after alias repair); keep one")
        if fixed != label:
            repairs.append(f"{path.name} -> {fixed}")
        masks[fixed] = path
    missing = [label for label in wanted if label not in masks]
    if missing:
        found = sorted(p.name for _, p in index.matching(pattern))
        raise InputDataError(
            index.root / f"sub-CSI{subject}_mask-{missing[0]}.nii.gz",
            f"ROI mask(s) {', '.join(missing)} not found under {index.root}; masks present for CSI{subject}: "
            f"{', '.join(found) if found else 'none'} (misnamed files can be mapped with roi_aliases)",
        )
    return masks, repairs


def find_subject_files(index: RawIndex, subject: int, cfg) -> SubjectFiles:
    betas: dict[int, Path] = {}
    for match, path in index.matching(BETAS_RE):
        if int(match.group(1)) != subject:
            continue
        session = int(match.group(2))
        if session in betas:
            raise InputDataError(path, f"a second betas file for session {session}: {betas[session]}")
        betas[session] = path
    if not betas:
        raise InputDataError(index.root / BETAS_NAME.format(subject=subject, session=1), "no betas files for this subject")
    masks, repairs = find_roi_masks(index, subject, cfg)
    list_roots = [p / f"CSI{subject}" for p in index.dirs.get("Stimuli_Presentation_Lists", []) if (p / f"CSI{subject}").is_dir()]
    if len(list_roots) != 1:
        raise InputDataError(
            index.root,
            f"expected one Stimuli_Presentation_Lists/CSI{subject} folder, found {len(list_roots)}"
            + (f": {', '.join(map(str, list_roots))}" if list_roots else ""),
        )
    return SubjectFiles(
        betas=betas,
        masks=masks,
        alias_repairs=repairs,
        brainmask=index.unique_file(f"CSI{subject}_brainmask.nii.gz", "brain mask", required=False),
        imgnames=index.unique_file(f"CSI{subject}_imgnames.txt", "trial image list"),
        lists_dir=list_roots[0],
        repeated_list=index.unique_file(cfg.repeated_list, "repeated (test) image list"),
    )



def check_sessions(files: SubjectFiles, per_session: dict[int, int], subject: int) -> None:
    """Every session 1..last must have both its betas file and its presentation lists."""
    last = max(max(files.betas), max(per_session))
    for session in range(1, last + 1):
        if session not in files.betas:
            where = next(iter(files.betas.values())).parent
            raise InputDataError(
                where / BETAS_NAME.format(subject=subject, session=session),
                f"betas file of session {session} is missing (sessions found: {sorted(files.betas)})",
            )
        if session not in per_session:
            raise InputDataError(
                files.lists_dir / f"CSI{subject}_sess{session:02d}",
                f"presentation lists of session {session} are missing (betas exist for sessions {sorted(files.betas)})",
            )



IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp"}


class ImageFinder:
    """Image name -> file: exact name, else case-insensitive name, else same stem with an image suffix
    (a list saying `x.jpg` for a file `x.JPEG`); copies under `presented_dir` win over others."""

    def __init__(self, index: RawIndex, presented_dir: str):
        self.index = index
        self.presented_dir = presented_dir
        self.by_lower: dict[str, list[Path]] = {}
        self.by_stem: dict[str, list[Path]] = {}
        for name, paths in index.files.items():
            self.by_lower.setdefault(name.lower(), []).extend(paths)
            if Path(name).suffix.lower() in IMAGE_SUFFIXES:
                self.by_stem.setdefault(Path(name).stem.lower(), []).extend(paths)
        self.repaired: list[str] = []

    def find(self, name: str) -> Path | None:
        candidates = self.index.files.get(name, [])
        if not candidates:
            candidates = self.by_lower.get(name.lower()) or self.by_stem.get(Path(name).stem.lower(), [])
            if candidates:
                self.repaired.append(f"{name} -> {candidates[0].name}")
        if len(candidates) > 1:
            preferred = [p for p in candidates if self.presented_dir in p.parts]
            candidates = preferred or candidates
        return candidates[0] if candidates else None



def load_images(finder: ImageFinder, names: Sequence[str], size: int) -> np.ndarray:
    """(n, size, size, 3) uint8 images of `names` (centre-cropped square, bicubic); an error lists the missing."""
    paths = [finder.find(name) for name in names]
    missing = [n for n, p in zip(names, paths) if p is None]
    if missing:
        raise InputDataError(
            finder.index.root,
            f"{len(missing)} stimulus image(s) not found under this folder, e.g. {', '.join(missing[:5])}",
        )
    out = np.empty((len(names), size, size, 3), dtype=np.uint8)
    for row, path in enumerate(paths):
        out[row] = read_image(path, size)[0]
    return out

