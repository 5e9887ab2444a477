"""The LDM trainers' image and label readers on damaged or hostile files (issue 14): one clean
InputDataError naming the file, never a raw numpy / zipfile exception."""

from __future__ import annotations

import numpy as np
import pytest

from mindvis.data.images import read_images, read_labels
from mindvis.utils.errors import InputDataError


def _flip_a_byte_of_member_data(path, member: str) -> None:
    """np.savez stores members uncompressed: damaging a byte past the member's .npy header makes
    its CRC check fail when it is read (the archive itself still opens)."""
    raw = bytearray(path.read_bytes())
    at = raw.find(f"{member}.npy".encode())
    assert at >= 0
    raw[at + 200] ^= 0xFF  # past the local header and the 128-byte .npy header: in the array data
    path.write_bytes(bytes(raw))


def test_read_images_damaged_member_is_a_clean_error(tmp_path):
    path = tmp_path / "images_256.npz"
    np.savez(path, train_images=np.zeros((2, 8, 8, 3), np.uint8))
    _flip_a_byte_of_member_data(path, "train_images")
    with pytest.raises(InputDataError, match=r"images_256\.npz: cannot read npz member 'train_images'"):
        read_images(path)


def test_read_images_pickled_member_is_refused_by_name(tmp_path):
    path = tmp_path / "images_256.npz"
    np.savez(path, train_images=np.array([object()] * 2, dtype=object))
    with pytest.raises(InputDataError, match=r"images_256\.npz: .*pickled object array, which is never loaded"):
        read_images(path)


@pytest.mark.parametrize("labels, problem", [
    (np.array(["a", "b"]), r"train_labels must be 1-D integers, got <U1 \(2,\)"),
    (np.array(3), r"train_labels must be 1-D integers, got int64 \(\)"),
    (np.array([0.5, 1.5]), r"train_labels must be 1-D integers, got float64 \(2,\)"),
])
def test_read_labels_npz_of_a_wrong_dtype_or_shape(tmp_path, labels, problem):
    path = tmp_path / "stimuli.npz"
    np.savez(path, train_labels=labels, class_names=np.array(["x", "y"]))
    with pytest.raises(InputDataError, match=rf"stimuli\.npz: {problem}"):
        read_labels(path, 2)


def test_read_labels_class_names_not_a_list(tmp_path):
    path = tmp_path / "stimuli.npz"
    np.savez(path, train_labels=np.array([0, 1]), class_names=np.array("x"))
    with pytest.raises(InputDataError, match=r"stimuli\.npz: class_names must be 1-D, got shape \(\)"):
        read_labels(path, 2)


def test_read_labels_csv_not_text_or_infinite_id(tmp_path):
    binary = tmp_path / "labels.csv"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(InputDataError, match=r"labels\.csv: not a text CSV file"):
        read_labels(binary, 1)
    infinite = tmp_path / "inf.csv"
    infinite.write_text("1518878.01,a.JPEG\ninf,b.JPEG\n")
    with pytest.raises(InputDataError, match=r"inf\.csv: line 2: 'inf' is not a stimulus id"):
        read_labels(infinite, 2)


def test_read_labels_refuses_a_label_past_its_classes(tmp_path):
    # 2 named classes: label 2 names no class; unnamed: a huge id would size a 10**12-row embedding
    named = tmp_path / "named.npz"
    np.savez(named, train_labels=np.array([0, 2]), class_names=np.array(["a", "b"]))
    with pytest.raises(InputDataError, match="class label 2 but only 2 class_names"):
        read_labels(named, 2)
    huge = tmp_path / "huge.npz"
    np.savez(huge, train_labels=np.array([0, 10**12]))
    with pytest.raises(InputDataError, match="class label 1000000000000 but only 100000 classes"):
        read_labels(huge, 2)
    fine = tmp_path / "fine.npz"
    np.savez(fine, train_labels=np.array([0, 3]))  # unnamed, sparse ids: classes 0..3
    labels, names = read_labels(fine, 2)
    assert labels.tolist() == [0, 3] and names == ["0", "1", "2", "3"]
