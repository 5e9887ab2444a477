"""The NSD chain in the Snakemake DAG (issue 16), on tests/data/nsd_micro.yaml over the micro config:
simulate-nsd (one job) -> preprocess-nsd (per subject) -> stage A2 -> stage B -> generate -> evaluate
-> the report's NSD section. One DAG run for the module; the embedded default keeps NSD off.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from workflow_runner import REPO_ROOT, copy_workflow, planned_jobs, snakemake

pytestmark = [pytest.mark.integration, pytest.mark.slow]

NSD_MICRO = Path(__file__).resolve().parent / "data" / "nsd_micro.yaml"
CHAIN = {"simulate_nsd", "preprocess_nsd", "finetune_mbm", "finetune_ldm", "generate", "evaluate", "report"}


@pytest.fixture(scope="module")
def nsd_workdir(tmp_path_factory):
    workdir = copy_workflow(tmp_path_factory.mktemp("dag_nsd"))
    shutil.copy2(NSD_MICRO, workdir / "nsd_micro.yaml")
    jobs = planned_jobs(workdir, configfiles=("nsd_micro.yaml",))
    assert CHAIN <= {rule for rule, _ in jobs}
    assert ("finetune_ldm", frozenset({("dataset", "nsd"), ("subject", "1")})) in jobs
    assert not {rule for rule, _ in jobs} & {"simulate_god", "preprocess_god", "simulate_bold5000"}
    proc = snakemake(workdir, "--cores", "2", configfiles=("nsd_micro.yaml",))
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    return workdir


def test_embedded_default_has_nsd_off():
    config = yaml.safe_load((REPO_ROOT / "config" / "config.yaml").read_text())
    assert config["nsd"]["subjects"] == []
    real = yaml.safe_load((REPO_ROOT / "config" / "nsd.yaml").read_text())
    assert real["nsd"]["source"] == "release" and real["nsd"]["subjects"] == [1, 2, 5, 7]
    assert real["nsd"]["preprocess"]["roi"] == "nsdgeneral" and real["nsd"]["preprocess"]["zscore"] == "session"


def test_preprocessed_subject_has_nsd_keys_and_pixel_images(nsd_workdir):
    with np.load(nsd_workdir / "data" / "NSD" / "npz" / "subj01.npz") as z:
        assert {"arr_0", "arr_2", "arr_3", "test_nsd_id", "test_repeats", "test_images_pixel"} <= set(z.files)
        assert z["test_images_pixel"].shape[1:] == (425, 425, 3)
        n_test = z["arr_2"].shape[0]
    samples = np.load(nsd_workdir / "results" / "samples" / "nsd" / "1" / "samples.npz")
    assert samples["ground_truth"].shape[0] == n_test


def test_nsd_metrics_follow_the_field_protocol(nsd_workdir):
    doc = json.loads((nsd_workdir / "results" / "metrics" / "nsd" / "1" / "metrics.json").read_text())
    assert doc["format"] == "mindvis-metrics/2" and doc["dataset"] == "nsd" and doc["subject"] == "1"
    pix = doc["metrics"]["nsd_pixcorr"]
    assert pix["pixel_size"] == 425 and np.isfinite(pix["value"])
    assert doc["metrics"]["nsd_ssim_gray"]["pixel_size"] == 425
    # No pretrained network is configured in the suite: each is listed as skipped, never downloaded.
    for name in ("nsd_two_way_alexnet_2", "nsd_two_way_inception", "nsd_two_way_clip", "nsd_distance_effnet",
                 "nsd_distance_swav"):
        assert name in doc["skipped"]


def test_report_has_the_nsd_section_with_quoted_rows(nsd_workdir):
    html = (nsd_workdir / "results" / "report.html").read_text()
    section = html[html.index("NSD: the field's protocol"):]
    assert "NSD · subject 1 (mindvis)" in section and "MindEye2 · subject 1" in section
    assert "quoted, not measured here" in section
