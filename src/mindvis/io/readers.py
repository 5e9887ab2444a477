"""Which function reads which kind of file: one loading path per format, for every command.

Every command reads its inputs through these (directly or through the loaders built on
them), and `mindvis inspect` uses the same table, so a file that one command refuses is
refused the same way everywhere, with one clean error naming the file:

  .pth .pt .ckpt      mindvis.checkpoints.safe_load.safe_load  (allow-list unpickler gate)
  .npz / .npy         mindvis.io.npz.open_npz / read_npy        (plain arrays only)
  .h5 .hdf5           mindvis.io.bdata.read_bdata               (BData)
  .dtseries.nii       mindvis.io.cifti.open_dtseries            (CIFTI-2 dense time series)
  .nii .nii.gz        mindvis.io.volume.read_nifti_image        (NIfTI-1/2, CIFTI-2 headers)
  .csv                mindvis.preprocess.stimulus_ids.read_image_list  (GOD imageID lists)
  .txt                mindvis.preprocess.bold5000_lists.read_name_list (BOLD5000 name lists)
"""

from __future__ import annotations

from pathlib import Path

CHECKPOINT_SUFFIXES = (".pth", ".pt", ".ckpt")
KINDS = ("checkpoint", "npz", "npy", "bdata", "cifti", "nifti", "csv", "text")


def kind_of(path: str | Path) -> str | None:
    """The file kind by name (None when no reader takes it)."""
    name = Path(path).name.lower()
    if name.endswith(CHECKPOINT_SUFFIXES):
        return "checkpoint"
    if name.endswith(".npz"):
        return "npz"
    if name.endswith(".npy"):
        return "npy"
    if name.endswith((".h5", ".hdf5")):
        return "bdata"
    if name.endswith((".dtseries.nii", ".dtseries.nii.gz")):
        return "cifti"
    if name.endswith((".nii", ".nii.gz")):
        return "nifti"
    if name.endswith(".csv"):
        return "csv"
    if name.endswith(".txt"):
        return "text"
    return None
