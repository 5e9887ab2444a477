"""Property-based fuzzing of every reader (issue 14): truncations, bit flips, wrong dtypes and
shapes, NaN/Inf, missing / renamed / reordered keys, damaged lines, pickled payloads.

Property (tests/reader_fuzz.py): a valid result or the project's own clean error, never another
exception, never a half-written output, never a payload run. A bounded, derandomised number of
examples per reader runs here; benchmarks/fuzz_readers.py runs many more and counts them.
"""

from __future__ import annotations

import logging
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import reader_fuzz
from mindvis.utils.errors import InputDataError

# examples per reader in the suite (the slower readers, which run a whole preprocessing step, fewer)
EXAMPLES = {"bdata-h5": 30, "god-csv-via-preprocess": 20, "image-id-csv": 30, "cifti-dtseries": 12,
            "nifti-run": 20, "nifti-run-gz": 20, "nifti-labels": 15, "god-npz": 30, "stimuli-npz": 20,
            "samples-npz": 30, "hcp-npz": 30, "bold5000-npz": 30, "checkpoint-zip": 30, "checkpoint-legacy": 30,
            "bold5000-presentation-list": 25, "bold5000-imgnames": 20,
            # `mindvis inspect` on the same kinds of malformed files
            "inspect-bdata-h5": 10, "inspect-image-id-csv": 10, "inspect-cifti-dtseries": 6, "inspect-nifti-run-gz": 10,
            "inspect-god-npz": 10, "inspect-checkpoint-zip": 10, "inspect-checkpoint-legacy": 10,
            "inspect-bold5000-imgnames": 10}


@pytest.fixture(scope="module")
def scratch(tmp_path_factory):
    reader_fuzz.configure_for_fuzzing()
    logging.disable(logging.WARNING)  # readers warn about what they repair; thousands of lines otherwise
    yield tmp_path_factory.mktemp("fuzz")
    logging.disable(logging.NOTSET)


def _property_holds(name: str, scratch, mutation_index: int, seed: int) -> None:
    target = reader_fuzz.TARGETS[name]
    mutation = target.mutations[mutation_index % len(target.mutations)]
    outcome = reader_fuzz.run_case(target, mutation, seed, scratch)
    assert outcome.result in ("valid", "clean-error"), (
        f"{name}: {mutation.__name__} (seed {seed}) -> {outcome.result}: {outcome.detail}")


@pytest.mark.parametrize("name", list(EXAMPLES))
def test_reader_gives_a_result_or_a_clean_error(name, scratch):
    @settings(max_examples=EXAMPLES[name], derandomize=True, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(mutation_index=st.integers(0, 10**6), seed=st.integers(0, 2**32 - 1))
    def check(mutation_index, seed):
        _property_holds(name, scratch, mutation_index, seed)

    check()


def test_bold5000_npz_damaged_member_is_a_clean_error(scratch):
    """Found by fuzzing: data/bold5000.py read npz members unguarded (a bad CRC raised BadZipFile,
    a pickled member ValueError); it now reads through mindvis.io.npz.open_npz."""
    outcome = reader_fuzz.run_case(reader_fuzz.TARGETS["bold5000-npz"], reader_fuzz.npz_member_corrupt, 0, scratch)
    assert outcome.result in ("valid", "clean-error"), outcome.detail


def test_hcp_npz_area_of_a_non_numeric_dtype_is_a_clean_error(scratch):
    """Found by fuzzing: data/hcp.py concatenated areas of any dtype (a datetime64 area raised
    DTypePromotionError); areas must now hold real numbers."""
    mutation = reader_fuzz.npz_wrong_dtype
    for seed in range(40):  # the seeds that give datetime64 to an area
        outcome = reader_fuzz.run_case(reader_fuzz.TARGETS["hcp-npz"], mutation, seed, scratch)
        assert outcome.result in ("valid", "clean-error"), outcome.detail


def test_every_mutation_of_every_reader_once(scratch):
    """Each mutation kind at least once per reader (hypothesis may not draw them all)."""
    failures = []
    for name, target in reader_fuzz.TARGETS.items():
        for mutation in target.mutations:
            outcome = reader_fuzz.run_case(target, mutation, 7, scratch)
            if outcome.result not in ("valid", "clean-error"):
                failures.append(f"{name}/{mutation.__name__}: {outcome.result}: {outcome.detail}")
    assert not failures, "\n".join(failures)


def test_pickled_npz_payload_never_runs_and_is_named(scratch):
    named = 0
    for name in ("samples-npz", "stimuli-npz", "god-npz"):
        for seed in range(6):  # seeds put the payload under a key the reader reads, or an unread new one
            outcome = reader_fuzz.run_case(reader_fuzz.TARGETS[name], reader_fuzz.npz_pickled_payload, seed, scratch)
            assert outcome.result in ("valid", "clean-error"), outcome.detail  # payload-ran would say so
            named += "pickled object array, which is never loaded" in outcome.detail  # mindvis.io.npz's words
    assert named >= 2


def test_checkpoint_payloads_never_run_and_are_refused_by_name(scratch):
    for name in ("checkpoint-zip", "checkpoint-legacy"):
        for seed in range(12):  # GLOBAL, STACK_GLOBAL, decoys, payload after a valid pickle; many callables
            outcome = reader_fuzz.run_case(reader_fuzz.TARGETS[name], reader_fuzz.pickle_payload, seed, scratch)
            assert outcome.result == "clean-error", outcome.detail
            assert "refused: unpickling it asks for " in outcome.detail, outcome.detail


def test_a_stalled_hdf5_read_is_stopped_with_a_clean_error(tmp_path, monkeypatch):
    """HDF5 loops forever, in C, on some damaged heaps of variable-length strings (found by this
    fuzzing): the metadata read runs in a forked child that is stopped after METADATA_TIMEOUT_S."""
    import mindvis.io.bdata as bdata
    from god_factory import build_god_raw

    paths = build_god_raw().write(tmp_path)

    def stalls(path):
        time.sleep(120)  # what HDF5 does on such a file, for ever

    monkeypatch.setattr(bdata, "_read_metadata", stalls)  # the forked child runs this copy
    monkeypatch.setattr(bdata, "METADATA_TIMEOUT_S", 1.0)
    with pytest.raises(InputDataError, match=r"Subject1\.h5: reading its metadata did not finish in 1 s"):
        bdata.read_bdata(paths.bdata)


def test_member_names_with_control_characters_stay_on_one_line(tmp_path):
    """Found by the benchmark: a damaged zip directory gave a member name with a newline, and the
    error listing the members ran over two lines."""
    import numpy as np

    from mindvis.evaluation import load_samples

    path = tmp_path / "samples.npz"
    np.savez(path, samples=np.zeros((2, 1, 4, 4, 3), np.uint8), **{"gr\nound\r_truth": np.zeros(3)})
    with pytest.raises(InputDataError) as err:
        load_samples(path)
    assert "\n" not in str(err.value) and "\r" not in str(err.value)
    assert "gr\\nound\\r_truth" in str(err.value)


def test_bdata_values_beyond_float32_are_dropped_not_written_as_inf(tmp_path):
    """Found by the benchmark: a voxel value of 1e39 (finite in the file's float64) became Inf in
    the float32 npz, so preprocess-god wrote an output its own loader refuses."""
    import numpy as np

    from god_factory import build_god_raw
    from mindvis.data.god import load_god_npz
    from mindvis.preprocess.god import GodPreprocessConfig, preprocess_god_subject

    raw = build_god_raw()
    voxel = int(raw.vc_columns()[0])
    raw.dataset[3, voxel] = 1e39  # > float32 max (3.4e38)
    paths = raw.write(tmp_path / "in")
    out = tmp_path / "sbj_1.npz"
    summary = preprocess_god_subject(paths.bdata, paths.train_list, paths.test_list, out, 1)
    assert summary["dropped_voxels_nonfinite"] == 1
    data = load_god_npz(out)  # finite everywhere, one voxel fewer than the ROI
    assert data.train_fmri.shape[1] == raw.vc_columns().size - 1
    with pytest.raises(InputDataError, match=r"1 voxel\(s\) hold NaN/Inf \(or values beyond float32\)"):
        preprocess_god_subject(paths.bdata, paths.train_list, paths.test_list, tmp_path / "x.npz", 1,
                               GodPreprocessConfig(bad_voxels="error"))
