"""The Snakemake DAG on the micro config: outputs, MLflow runs, rerun-only-downstream.

One module-scoped run of the whole micro DAG (tests/data/micro.yaml, plus tests/data/nsd_micro.yaml:
one simulated NSD subject, issue 16); the later tests only dry-run against it (or change a file and
dry-run), so the module costs one DAG run.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import yaml
from mlflow.tracking import MlflowClient

from mindvis.data.god import load_god_npz
from workflow_runner import REPO_ROOT, copy_workflow, planned_jobs, snakemake

pytestmark = [pytest.mark.integration, pytest.mark.slow]

GOD_NPZ = "data/Kamitani/npz"
SUBJECTS = {"god": ("1", "2"), "bold5000": ("1", "4"), "nsd": ("1",)}
NSD_MICRO = Path(__file__).resolve().parent / "data" / "nsd_micro.yaml"
NSD_ON = ("nsd_micro.yaml",)  # every run and plan of this module has the NSD subject on


def _per_subject(rule, datasets=tuple(SUBJECTS)):
    return {(rule, frozenset({("dataset", d), ("subject", s)})) for d in datasets for s in SUBJECTS[d]}


REPORT = {("report", frozenset())}
SAMPLER_TABLE = {("compare_samplers", frozenset())}  # on god/1 (micro config)
_SAMPLING = _per_subject("generate") | _per_subject("generate_controls")  # the model's samples and its controls
_STAGE_B_ALL = _per_subject("finetune_ldm") | _SAMPLING | _per_subject("evaluate") | SAMPLER_TABLE | REPORT
_STAGE_A_ALL = {("pretrain_mbm", frozenset())} | _per_subject("finetune_mbm") | _STAGE_B_ALL


@pytest.fixture(scope="module")
def done_workdir(tmp_path_factory):
    workdir = copy_workflow(tmp_path_factory.mktemp("dag"))
    shutil.copy2(NSD_MICRO, workdir / NSD_ON[0])
    start = time.perf_counter()
    proc = snakemake(workdir, "--cores", "2", configfiles=NSD_ON)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    workdir.joinpath("dag_seconds.txt").write_text(f"{time.perf_counter() - start:.1f}")
    return workdir


def _plan(workdir, *args, configfiles=()):
    return planned_jobs(workdir, *args, configfiles=NSD_ON + configfiles)


def _touch_later(path):
    later = time.time() + 5
    os.utime(path, (later, later))


def test_god_outputs_have_mindvis_layout(done_workdir):
    npz_dir = done_workdir / GOD_NPZ
    for subject in (1, 2):
        data = load_god_npz(npz_dir / f"sbj_{subject}.npz")
        n_images = data.test_fmri.shape[0]
        # micro config: 10 classes x 3 training images, x 2 test images, 3 repeats each
        assert data.train_fmri.shape[0] == 30
        assert n_images == 20
        assert data.test_fmri_trials.shape[0] == 3 * n_images
        np.testing.assert_allclose(
            data.test_fmri, data.test_fmri_trials.reshape(n_images, 3, -1).mean(axis=1), rtol=1e-5, atol=1e-5
        )
        assert data.roi_masks["VC"].all()
        assert set(data.roi_masks) >= {"V1", "V2", "V3", "V4", "LOC", "FFA", "PPA", "LVC", "HVC", "VC"}
    with np.load(npz_dir / "images_256.npz") as images:
        assert images["train_images"].shape == (30, 32, 32, 3)
        assert images["test_images"].dtype == np.uint8
    assert len((npz_dir / "imagenet_training_label.csv").read_text().splitlines()) == 30


def test_bold5000_outputs_exist_for_each_subject(done_workdir):
    base = done_workdir / "data/BOLD5000"
    for subject in (1, 4):
        assert (base / f"npz/CSI{subject}.npz").is_file()
        npy = sorted((base / "BOLD5000_GLMsingle_ROI_betas/py").glob(f"CSI{subject}_*allses_*.npy"))
        assert len(npy) == 10


def test_hcp_output_has_visual_areas_and_all_runs(done_workdir):
    with np.load(done_workdir / "data/HCP/npz/sim01/HCP_visual_voxel.npz") as npz:
        assert [npz[a].shape[1] for a in ("V1", "V2", "V3", "V4")] == [1618, 1220, 684, 661]
        for area in ("V1", "V2", "V3", "V4"):
            assert npz[area].shape[0] == 2 * 40  # two runs of 40 frames, concatenated
            assert np.isfinite(npz[area]).all()


def test_stage_a_checkpoints_load_safely(done_workdir):
    from mindvis.checkpoints.mindvis_encoder import load_mbm_checkpoint

    pretrained = load_mbm_checkpoint(done_workdir / "results/stage_a/pretrain/fmri_encoder.pth")
    for path in ("god/1", "god/2", "bold5000/1", "bold5000/4", "nsd/1"):
        tuned = load_mbm_checkpoint(done_workdir / f"results/stage_a/{path}/fmri_encoder.pth")
        # A2 keeps A1's token count (token_policy: checkpoint) and its architecture
        assert tuned.n_tokens == pretrained.n_tokens
        assert tuned.arch == pretrained.arch
        assert not (done_workdir / f"results/stage_a/{path}/fmri_encoder.pth.resume.pt").exists()


def test_one_finished_mlflow_run_per_job_with_tags(done_workdir):
    client = MlflowClient(tracking_uri=f"sqlite:///{done_workdir}/results/mlflow.db")
    exp = client.get_experiment_by_name("mindvis")
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    names = sorted(r.info.run_name for r in runs)
    assert names.count("make_stimuli") == 1
    for subject in (1, 2):
        assert f"simulate_god[dataset=god,subject={subject}]" in names
        assert f"preprocess_god[dataset=god,subject={subject}]" in names
    assert len(names) == len(set(names)), "a job logged twice"
    for run in runs:
        assert run.info.status == "FINISHED"
        assert run.data.tags["mindvis.rule"] == run.info.run_name.split("[")[0]
        assert "mindvis.version" in run.data.tags
    prep = next(r for r in runs if r.info.run_name == "preprocess_god[dataset=god,subject=1]")
    assert prep.data.tags["dataset"] == "god" and prep.data.tags["subject"] == "1"
    assert prep.data.params["roi"] == "VC"
    artifacts = {a.path for a in client.list_artifacts(prep.info.run_id)}
    assert "config.yaml" in artifacts and "summary.json" in artifacts


def test_completed_dag_has_nothing_to_do(done_workdir):
    assert _plan(done_workdir) == set()


def test_changed_raw_subject_file_reruns_only_that_subject(done_workdir):
    raw = done_workdir / "data/raw/god/Subject2.h5"
    original = raw.read_bytes()
    stat = raw.stat()
    with h5py.File(raw, "r+") as fh:  # a new acquisition of the same subject: one value differs
        fh["dataset"][0, 0] += 1.0
    _touch_later(raw)
    try:
        # pre-training reads the GOD training fMRI of every subject, so it and every
        # fine-tuning job follow; nothing of subject 1's own preprocessing does.
        assert _plan(done_workdir) == {("preprocess_god", frozenset({("subject", "2")}))} | _STAGE_A_ALL
    finally:
        raw.write_bytes(original)
        os.utime(raw, (stat.st_atime, stat.st_mtime))


def test_changed_hcp_run_reruns_its_subject_and_pretraining(done_workdir):
    run = next((done_workdir / "data/raw/hcp/sim01").rglob("*REST1_LR*.dtseries.nii"))
    original = run.read_bytes()
    stat = run.stat()
    run.write_bytes(original[:-4] + bytes(4))  # the last sample of the data block differs
    _touch_later(run)
    try:
        assert _plan(done_workdir) == {("preprocess_hcp", frozenset({("subject", "sim01")}))} | _STAGE_A_ALL
    finally:
        run.write_bytes(original)
        os.utime(run, (stat.st_atime, stat.st_mtime))


def test_touched_but_unchanged_file_reruns_nothing(done_workdir):
    # Snakemake compares checksums of small inputs whose mtime changed.
    raw = done_workdir / "data/raw/god/Subject1.h5"
    stat = raw.stat()
    _touch_later(raw)
    try:
        assert _plan(done_workdir) == set()
    finally:
        os.utime(raw, (stat.st_atime, stat.st_mtime))


def test_changed_preprocess_param_reruns_only_preprocessing(done_workdir):
    (done_workdir / "change.yaml").write_text("god:\n  preprocess:\n    bad_voxels: error\n")
    jobs = _plan(done_workdir, configfiles=("change.yaml",))
    assert jobs == {
        ("preprocess_god", frozenset({("subject", "1")})),
        ("preprocess_god", frozenset({("subject", "2")})),
    } | _STAGE_A_ALL


def test_changed_image_size_reruns_only_the_image_job_and_god_stage_b(done_workdir):
    # images_256.npz feeds GOD's stage B pairs; the prior and the judge learn stimuli.npz instead.
    (done_workdir / "change_images.yaml").write_text("god:\n  images:\n    size: 24\n")
    jobs = _plan(done_workdir, configfiles=("change_images.yaml",))
    god_b = {job for job in _per_subject("finetune_ldm") | _SAMPLING | _per_subject("evaluate")
             if ("dataset", "god") in job[1]}
    assert jobs == {("preprocess_god_images", frozenset())} | god_b | SAMPLER_TABLE | REPORT


def test_changed_simulation_param_reruns_that_chain_only(done_workdir):
    (done_workdir / "change_sim.yaml").write_text("bold5000:\n  simulate:\n    snr: 0.7\n")
    jobs = _plan(done_workdir, configfiles=("change_sim.yaml",))
    chain = {"finetune_mbm", "finetune_ldm", "generate", "generate_controls", "evaluate"}
    assert {rule for rule, _ in jobs} == {"simulate_bold5000", "preprocess_bold5000", "report"} | chain
    for rule in chain:  # GOD's models and the sampler table (on god/1) are untouched
        assert {wc for r, wc in jobs if r == rule} == {
            frozenset({("dataset", "bold5000"), ("subject", s)}) for s in ("1", "4")
        }
    assert len(jobs) == 15


def test_changed_finetune_param_reruns_only_finetuning(done_workdir):
    (done_workdir / "change_a2.yaml").write_text("stage_a:\n  finetune:\n    lr: 1.0e-4\n")
    assert _plan(done_workdir, configfiles=("change_a2.yaml",)) == _STAGE_A_ALL - {("pretrain_mbm", frozenset())}


def test_changed_generate_param_reruns_sampling_and_scoring_only(done_workdir):
    (done_workdir / "change_gen.yaml").write_text("stage_b:\n  generate:\n    steps: 3\n")
    jobs = _plan(done_workdir, configfiles=("change_gen.yaml",))
    assert jobs == _SAMPLING | _per_subject("evaluate") | REPORT


def test_changed_metric_param_reruns_scoring_only(done_workdir):
    (done_workdir / "change_eval.yaml").write_text("evaluate:\n  n_way: 3\n")
    assert _plan(done_workdir, configfiles=("change_eval.yaml",)) == _per_subject("evaluate") | REPORT


def test_changed_judge_param_rescores_without_regenerating(done_workdir):
    (done_workdir / "change_judge.yaml").write_text("judge:\n  epochs: 2\n")
    jobs = _plan(done_workdir, configfiles=("change_judge.yaml",))
    assert jobs == {("train_judge", frozenset())} | _per_subject("evaluate") | SAMPLER_TABLE | REPORT


def test_changed_prior_param_retrains_the_prior_and_stage_b(done_workdir):
    (done_workdir / "change_prior.yaml").write_text("stage_b:\n  label2img:\n    lr: 5.0e-4\n")
    jobs = _plan(done_workdir, configfiles=("change_prior.yaml",))
    assert jobs == {("train_label2img", frozenset())} | _STAGE_B_ALL


def test_stage_b_outputs_load_and_have_the_test_set_shape(done_workdir):
    from mindvis.checkpoints.mindvis_ldm import load_finetuned

    for dataset, subject in (("god", "1"), ("bold5000", "4")):
        loaded = load_finetuned(done_workdir / f"results/stage_b/{dataset}/{subject}/finetuned.pt")
        assert loaded.model.spec.vq.resolution == 32
        with np.load(done_workdir / f"results/samples/{dataset}/{subject}/samples.npz") as z:
            samples, gt = z["samples"], z["ground_truth"]
        # micro config: K = 2 samples of every test item, at the model's 32 px
        assert samples.dtype == np.uint8 and samples.shape[1:] == (2, 32, 32, 3)
        assert gt.shape == (samples.shape[0], 32, 32, 3)
        if dataset == "god":
            assert samples.shape[0] == 20  # 10 classes x 2 test images
    assert not list((done_workdir / "results/stage_b").rglob("*.resume.pt"))


def test_metrics_carry_definitions_and_chance(done_workdir):
    metrics = json.loads((done_workdir / "results/metrics/god/2/metrics.json").read_text())
    flat = json.dumps(metrics)
    assert "definition" in flat and "chance" in flat
    nway = [v for v in _records(metrics) if "way" in v.get("label", "").lower()]
    assert nway, "no n-way metric in metrics.json"
    assert all(0.0 <= v["value"] <= 1.0 for v in nway)


def test_metrics_carry_controls_and_intervals(done_workdir):
    metrics = json.loads((done_workdir / "results/metrics/bold5000/1/metrics.json").read_text())
    assert all(rec["ci95"][0] <= rec["ci95"][1] for rec in metrics["metrics"].values())
    assert "p_value" in metrics["metrics"]["identification_pcc"]
    assert set(metrics["baselines"]) == {"shuffled_fmri", "prior_only", "train_retrieval", "nearest_train_copy",
                                         "chance"}
    assert set(metrics["baselines"]["shuffled_fmri"]) == set(metrics["metrics"])


def _records(node):
    """Every metric record ({'value', 'label', ...}) anywhere in a metrics.json tree."""
    if isinstance(node, dict):
        if "value" in node and "label" in node:
            yield node
        for child in node.values():
            yield from _records(child)
    elif isinstance(node, list):
        for child in node:
            yield from _records(child)


def test_report_is_self_contained_with_table_grids_and_samplers(done_workdir):
    from html.parser import HTMLParser

    class Collect(HTMLParser):
        def __init__(self):
            super().__init__()
            self.tags, self.urls, self.rows = [], [], 0

        def handle_starttag(self, tag, attrs):
            self.tags.append(tag)
            attrs = dict(attrs)
            if tag == "tr":
                self.rows += 1
            for key in ("src", "href"):
                if attrs.get(key):
                    self.urls.append(attrs[key])

    page = Collect()
    text = (done_workdir / "results/report.html").read_text()
    page.feed(text)
    assert "table" in page.tags
    images = [u for u in page.urls if u.startswith("data:image/png;base64,")]
    assert len(images) >= 5 + 1  # one grid per dataset/subject + the sampler plot
    assert not [u for u in page.urls if u.startswith(("http:", "https:", "//"))], "external URL in the report"
    for label in ("GOD", "BOLD5000", "NSD"):  # each dataset's rows (the page writes the names in capitals)
        assert f"{label} · " in text or f"{label} &middot; " in text, label
    assert 'id="samplers"' in text and "ddim" in text and "dpmpp" in text


def test_snakemake_report_has_the_captioned_outputs(done_workdir):
    proc = snakemake(done_workdir, "--report", "snakemake_report.zip", configfiles=NSD_ON)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    import zipfile

    with zipfile.ZipFile(done_workdir / "snakemake_report.zip") as zf:
        names = zf.namelist()
    assert any(n.endswith("report.html") for n in names)
    assert sum(n.endswith("grid.png") for n in names) == 5  # god 1, 2; bold5000 1, 4; nsd 1


def test_added_subject_runs_only_its_jobs_and_the_report(done_workdir):
    # A new BOLD5000 subject: its own chain, then the report; no other model is retrained
    # (pre-training reads HCP and GOD only).
    (done_workdir / "add_subject.yaml").write_text("bold5000:\n  subjects: [1, 4, 2]\n")
    jobs = _plan(done_workdir, configfiles=("add_subject.yaml",))
    new = frozenset({("dataset", "bold5000"), ("subject", "2")})
    assert jobs == {
        ("simulate_bold5000", frozenset({("subject", "2")})),
        ("preprocess_bold5000", frozenset({("subject", "2")})),
        ("finetune_mbm", new),
        ("finetune_ldm", new),
        ("generate", new),
        ("generate_controls", new),
        ("evaluate", new),
    } | REPORT


def test_touched_file_above_the_checksum_limit_reruns(done_workdir):
    # Snakemake checksums only inputs below --max-checksum-file-size (default 1 MB): a
    # touched LARGE file looks changed, as the README says. Emulated with a 1 KB limit.
    raw = done_workdir / "data/raw/god/Subject1.h5"
    stat = raw.stat()
    _touch_later(raw)
    try:
        jobs = _plan(done_workdir, "--max-checksum-file-size", "1KB")
        assert ("preprocess_god", frozenset({("subject", "1")})) in jobs
        assert _plan(done_workdir, "--max-checksum-file-size", "1GB") == set()
    finally:
        os.utime(raw, (stat.st_atime, stat.st_mtime))


# ------------------------------------------------------------------ the NSD chain (issue 16)
NSD_CHAIN = {"simulate_nsd", "preprocess_nsd", "finetune_mbm", "finetune_ldm", "generate", "generate_controls",
             "evaluate"}


def test_embedded_default_has_nsd_off():
    config = yaml.safe_load((REPO_ROOT / "config" / "config.yaml").read_text())
    assert config["nsd"]["subjects"] == []
    real = yaml.safe_load((REPO_ROOT / "config" / "nsd.yaml").read_text())
    assert real["nsd"]["source"] == "release" and real["nsd"]["subjects"] == [1, 2, 5, 7]
    assert real["nsd"]["preprocess"]["roi"] == "nsdgeneral" and real["nsd"]["preprocess"]["zscore"] == "session"


def test_nsd_chain_ran_with_plain_subject_tags(done_workdir):
    client = MlflowClient(tracking_uri=f"sqlite:///{done_workdir}/results/mlflow.db")
    runs = client.search_runs([client.get_experiment_by_name("mindvis").experiment_id], max_results=1000)
    nsd = [r for r in runs if r.data.tags.get("dataset") == "nsd"]
    assert NSD_CHAIN <= {r.data.tags["mindvis.rule"] for r in nsd}
    for run in nsd:  # the DAG's subject wildcard, as GOD and BOLD5000 (finetune_ldm names it from its npz)
        if run.data.tags["mindvis.rule"] in {"preprocess_nsd", "generate", "generate_controls", "evaluate"}:
            assert run.data.tags["subject"] == "1", run.info.run_name


def test_nsd_preprocessed_subject_has_nsd_keys_and_pixel_images(done_workdir):
    with np.load(done_workdir / "data" / "NSD" / "npz" / "subj01.npz") as z:
        assert {"arr_0", "arr_2", "arr_3", "test_nsd_id", "test_repeats", "test_images_pixel"} <= set(z.files)
        assert z["test_images_pixel"].shape[1:] == (425, 425, 3)
        n_test = z["arr_2"].shape[0]
    samples = np.load(done_workdir / "results" / "samples" / "nsd" / "1" / "samples.npz")
    assert samples["ground_truth"].shape[0] == n_test


def test_nsd_metrics_follow_the_field_protocol(done_workdir):
    doc = json.loads((done_workdir / "results" / "metrics" / "nsd" / "1" / "metrics.json").read_text())
    assert doc["format"] == "mindvis-metrics/2" and doc["dataset"] == "nsd" and doc["subject"] == "1"
    pix = doc["metrics"]["nsd_pixcorr"]
    assert pix["pixel_size"] == 425 and np.isfinite(pix["value"])
    assert doc["metrics"]["nsd_ssim_gray"]["pixel_size"] == 425
    # No pretrained network is configured in the suite: each is listed as skipped, never downloaded.
    for name in ("nsd_two_way_alexnet_2", "nsd_two_way_inception", "nsd_two_way_clip", "nsd_distance_effnet",
                 "nsd_distance_swav"):
        assert name in doc["skipped"]


def test_report_has_the_nsd_section_with_quoted_rows(done_workdir):
    html = (done_workdir / "results" / "report.html").read_text()
    section = html[html.index("NSD: the field's protocol"):]
    assert "NSD · subject 1 (mindvis)" in section and "MindEye2 · subject 1" in section
    assert "quoted, not measured here" in section
