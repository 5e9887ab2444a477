"""The embedded stimulus set: digits rendering, GOD-style split, ids, CSVs, folder source."""

from __future__ import annotations

import csv
import re

import numpy as np
import pytest
from PIL import Image

from mindvis.cli.main import main
from mindvis.simulate.stimuli import (
    StimuliConfig,
    build_stimuli,
    id_filename,
    id_key,
    id_text,
    load_stimuli,
    write_stimuli,
)
from mindvis.utils.errors import InputDataError

SMALL = dict(image_size=32, train_per_class=3, test_per_class=2)
ROW_RE = re.compile(r'^(\d+)\.(\d{6}),"n(\d{8})_(\d+)\.JPEG"$')


def test_id_text_and_filename_by_hand():
    stim_id = 9000003 + 42 / 1e6
    assert id_text(stim_id) == "9000003.000042"
    assert id_filename(stim_id) == "n09000003_42.JPEG"
    # GOD's own example row: 1518878.010042 <-> n01518878_10042.JPEG
    assert id_filename(1518878.010042) == "n01518878_10042.JPEG"
    assert id_key(1518878.010042) == 1518878010042


def test_digits_deterministic_split_and_shapes():
    a = build_stimuli(StimuliConfig(seed=5, **SMALL))
    b = build_stimuli(StimuliConfig(seed=5, **SMALL))
    c = build_stimuli(StimuliConfig(seed=6, **SMALL))
    assert a.train_images.shape == (30, 32, 32, 3) and a.train_images.dtype == np.uint8
    assert a.test_images.shape == (20, 32, 32, 3)
    np.testing.assert_array_equal(a.train_images, b.train_images)
    np.testing.assert_array_equal(a.test_ids, b.test_ids)
    assert not np.array_equal(a.train_images, c.train_images)
    assert np.bincount(a.train_labels, minlength=10).tolist() == [3] * 10
    assert np.bincount(a.test_labels, minlength=10).tolist() == [2] * 10
    # Test images are different images of the same classes.
    assert not set(id_key(a.train_ids).tolist()) & set(id_key(a.test_ids).tolist())
    assert a.class_wnids.tolist() == [9000000 + k for k in range(10)]
    # The id encodes the class: integer part = the class's WNID number.
    np.testing.assert_array_equal(np.floor(a.train_ids).astype(int), a.class_wnids[a.train_labels])
    # Sorted by id, like GOD's lists.
    assert np.all(np.diff(id_key(a.train_ids)) > 0)


def test_colouring_varies_and_digit_is_visible():
    s = build_stimuli(StimuliConfig(seed=1, image_size=32, train_per_class=8, test_per_class=1))
    x = s.train_images.astype(float) / 255
    border = np.concatenate([x[:, 0], x[:, -1], x[:, :, 0], x[:, :, -1]], axis=1).mean(axis=1)  # (n, 3)
    # Background colours differ a lot between images of the same class.
    for k in range(10):
        assert border[s.train_labels == k].std(axis=0).max() > 0.1
    # The digit (centre) differs from the background in every image.
    centre = x[:, 8:24, 8:24].reshape(len(x), -1, 3)
    contrast = np.abs(centre - border[:, None, :]).sum(-1).max(axis=1)
    assert contrast.min() > 0.3


def test_write_csv_roundtrip_via_cli(tmp_path):
    out = tmp_path / "stim"
    cfg = "{image_size: 24, train_per_class: 2, test_per_class: 1, seed: 3}"
    assert main(["make-stimuli", "--out-dir", str(out), "--config", cfg, "--no-tracking"]) == 0
    stim = load_stimuli(out / "stimuli.npz")
    splits = (("training", stim.train_ids, stim.train_images), ("test", stim.test_ids, stim.test_images))
    for split, ids, images in splits:
        lines = (out / f"imageID_{split}.csv").read_text().splitlines()
        assert len(lines) == len(ids)
        for line in lines:
            m = ROW_RE.match(line)
            assert m, line
            assert int(m.group(1)) == int(m.group(3))  # WNID in id and name agree
            assert int(m.group(2)) == int(m.group(4))  # index in id and name agree
        rows = list(csv.reader((out / f"imageID_{split}.csv").open()))
        np.testing.assert_array_equal(id_key([float(r[0]) for r in rows]), id_key(ids))
        names = [r[1] for r in rows]
        assert sorted(p.name for p in (out / "images" / split).iterdir()) == sorted(names)
        # JPEG (quality 95) decodes close to the exact pixels in the npz.
        for name, img in zip(names[:3], images[:3]):
            decoded = np.asarray(Image.open(out / "images" / split / name))
            assert decoded.shape == (24, 24, 3)
            assert np.abs(decoded.astype(int) - img.astype(int)).mean() < 4
    assert not list(out.glob(".*tmp*"))  # no leftovers of the atomic writes


def _png(path, size, colour):
    Image.fromarray(np.full((size[1], size[0], 3), colour, np.uint8)).save(path)


def test_folder_source(tmp_path):
    root = tmp_path / "imgs"
    for k, cls in enumerate(["n01443537", "cats"]):
        (root / cls).mkdir(parents=True)
        for i in range(3):
            _png(root / cls / f"im{i}.png", (40 + 10 * i, 30), (50 * k, 20 * i, 100))
    folder = dict(source="folder", folder=str(root), image_size=16)
    s = build_stimuli(StimuliConfig(train_per_class=2, test_per_class=1, **folder))
    assert s.class_names == ["cats", "n01443537"]  # sorted folder names
    assert s.class_wnids.tolist() == [9000000, 1443537]  # a WNID-named folder keeps its id
    assert s.train_images.shape == (4, 16, 16, 3) and s.test_images.shape == (2, 16, 16, 3)
    # Index = 1-based position of the file in its sorted class folder.
    assert set(id_key(np.concatenate([s.train_ids, s.test_ids])) % 1_000_000) <= {1, 2, 3}
    # Too few images for the split, an empty class folder, a missing folder: clear errors.
    with pytest.raises(InputDataError, match="fewer than"):
        build_stimuli(StimuliConfig(train_per_class=3, test_per_class=1, **folder))
    (root / "empty").mkdir()
    with pytest.raises(InputDataError, match="without images: empty"):
        build_stimuli(StimuliConfig(**folder))
    with pytest.raises(InputDataError, match="not found"):
        build_stimuli(StimuliConfig(source="folder", folder=str(tmp_path / "nope")))
    (tmp_path / "bare").mkdir()
    with pytest.raises(InputDataError, match="no class sub-folders"):
        build_stimuli(StimuliConfig(source="folder", folder=str(tmp_path / "bare")))


def test_load_stimuli_rejects_bad_files(tmp_path):
    with pytest.raises(InputDataError, match="not found"):
        load_stimuli(tmp_path / "missing.npz")
    np.savez(tmp_path / "bad.npz", train_images=np.zeros((2, 4, 4, 3), np.uint8))
    with pytest.raises(InputDataError, match="missing"):
        load_stimuli(tmp_path / "bad.npz")
    s = build_stimuli(StimuliConfig(**SMALL))
    write_stimuli(s, tmp_path / "ok")
    back = load_stimuli(tmp_path / "ok" / "stimuli.npz")
    np.testing.assert_array_equal(back.test_images, s.test_images)
    assert back.class_names == s.class_names
