"""A training input's identity for the resume fingerprint: its size and the sha256 of its bytes.

Content, not place: a work folder that is copied or moved (a cluster scratch copy,
a restored backup) keeps resuming, while an input whose bytes changed (an upstream
job rerun with other results) still makes the run start over.

Hashing a multi-GB checkpoint costs seconds per GB, so each hash is cached in a small
JSON file beside the resume file (`<out>.resume-inputs.json`), keyed by the input's
absolute path, size and modification time (ns): a job that is resumed again and again
hashes each input once. The cache lives and dies with the resume file it serves, needs
no lock (one job writes one `<out>`), and travels with a copied work folder, where its
keys (path, mtime) no longer match and the inputs are hashed once more: the cache never
vouches for a file it has not read.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from mindvis.tracking.job import file_digest
from mindvis.utils.atomic import write_json

log = logging.getLogger(__name__)

CACHE_FORMAT = "mindvis.input_hashes/1"


def hash_cache_path_for(out_path: str | Path) -> Path:
    """Where the input-hash cache of the job writing `out_path` lives (beside `<out>.resume.pt`)."""
    out = Path(out_path)
    return out.with_name(out.name + ".resume-inputs.json")


def _read_cache(cache: Path) -> dict[str, Any]:
    try:
        data = json.loads(cache.read_text())
    except (OSError, ValueError):
        return {}  # absent or damaged: a cache is only ever a shortcut
    if not isinstance(data, dict) or data.get("format") != CACHE_FORMAT or not isinstance(data.get("files"), dict):
        return {}
    return data["files"]


def input_identity(path: str | Path | None, cache: str | Path) -> str | None:
    """`<size>:<sha256>` of the file at `path` (None for no input), through the hash cache at `cache`."""
    if path is None:
        return None
    where = Path(path).resolve()
    st = where.stat()
    files = _read_cache(Path(cache))
    entry = files.get(str(where))
    if (isinstance(entry, dict) and entry.get("size") == st.st_size and entry.get("mtime_ns") == st.st_mtime_ns
            and isinstance(entry.get("sha256"), str)):
        return f"{st.st_size}:{entry['sha256']}"
    log.info("hashing %s (%.1f MB) for the resume fingerprint", where, st.st_size / 1e6)
    sha = file_digest(where)
    if where.stat().st_mtime_ns != st.st_mtime_ns:  # rewritten while read: use the hash, never cache it
        return f"{st.st_size}:{sha}"
    files[str(where)] = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": sha}
    try:
        write_json(cache, {"format": CACHE_FORMAT, "files": files})
    except OSError as exc:  # a read-only work folder still trains; it only hashes again next time
        log.warning("could not write the input-hash cache %s: %s", cache, exc)
    return f"{st.st_size}:{sha}"
