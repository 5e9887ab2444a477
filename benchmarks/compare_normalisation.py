"""How far apart are the two fMRI normalisations? (docs/reference.md sections 2-3)

For each subject file, and for all GOD files joined, prints per split the
largest |reference - clean| difference and the mean/std of the rows under each
normalisation ("reference": MinD-Vis's steps bit for bit; "clean": the
subject's padded training statistics for every row):

    python benchmarks/compare_normalisation.py --god data/Kamitani/npz/sbj_1.npz data/Kamitani/npz/sbj_2.npz \\
        --bold5000 data/BOLD5000/npz/CSI1.npz data/BOLD5000/npz/CSI4.npz
"""

from __future__ import annotations

import argparse
from pathlib import Path

from mindvis.data.bold5000 import Bold5000FmriDataset
from mindvis.data.god import GodFmriDataset

SPLITS = ("train", "test", "test_trials")


def compare(reader, paths, label: str, **options) -> None:
    for split in SPLITS:
        ref = reader(paths, split=split, normalisation="reference", **options)
        clean = reader(paths, split=split, normalisation="clean", **options)
        diff = abs(ref.fmri.astype("float64") - clean.fmri).max()
        print(f"{label:28s} {split:11s} rows {len(ref):5d}  max|ref-clean| {diff:8.4f}   "
              f"reference mean {ref.fmri.mean():+8.4f} std {ref.fmri.std():7.4f}   "
              f"clean mean {clean.fmri.mean():+8.4f} std {clean.fmri.std():7.4f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--god", type=Path, nargs="*", default=[], help="GOD sbj_N.npz files")
    parser.add_argument("--bold5000", type=Path, nargs="*", default=[], help="BOLD5000 CSI{n}.npz files")
    args = parser.parse_args()
    for path in args.god:
        compare(GodFmriDataset, path, f"GOD {path.stem}")
    if len(args.god) > 1:
        compare(GodFmriDataset, args.god, "GOD " + "+".join(p.stem for p in args.god))
    for path in args.bold5000:
        compare(Bold5000FmriDataset, path, f"BOLD5000 {path.stem}", with_images=False)


if __name__ == "__main__":
    main()
