"""Published NSD subject-1 numbers, quoted beside ours in the report's NSD section (never measured here).

The one home of these figures; docs/reference.md section 8.3 gives the protocol they follow.

MindEye2 (Scotti et al. 2024), subject 1 trained on all 40 sessions, its "enhanced" reconstructions,
1000 shared test images: the saved output of the evaluation notebook `src/final_evaluations.ipynb`
of github.com/MedARC-AI/MindEyeV2 (as recorded in the project's NSD fact sheet, section 6).

Brain-Diffuser (Ozcelik & VanRullen 2023) is NOT quoted: its public repository
(github.com/ozcelikfu/brain-diffuser: README, scripts/evaluate_reconstruction.py) prints its
metrics but records no values, and no per-subject table of the paper could be read through the
tools available when this was written. A number is added here only with a source one can open.
"""

from __future__ import annotations

from dataclasses import dataclass

# Our metrics.json key for each column of the NSD table, in the papers' order.
NSD_COLUMNS = (
    ("nsd_pixcorr", "PixCorr"),
    ("nsd_ssim_gray", "SSIM"),
    ("nsd_two_way_alexnet_2", "AlexNet(2)"),
    ("nsd_two_way_alexnet_5", "AlexNet(5)"),
    ("nsd_two_way_inception", "Incep"),
    ("nsd_two_way_clip", "CLIP"),
    ("nsd_distance_effnet", "EffNet-B"),
    ("nsd_distance_swav", "SwAV"),
)


@dataclass(frozen=True)
class PublishedNsd:
    """One published row: values by our metrics.json key."""

    method: str
    subject: int
    setting: str
    values: dict[str, float]
    source: str


MINDEYE2_SUBJ01 = PublishedNsd(
    method="MindEye2",
    subject=1,
    setting="40 sessions, 1000 shared test images, enhanced reconstructions",
    values={
        "nsd_pixcorr": 0.374, "nsd_ssim_gray": 0.439, "nsd_two_way_alexnet_2": 0.979,
        "nsd_two_way_alexnet_5": 0.991, "nsd_two_way_inception": 0.960, "nsd_two_way_clip": 0.937,
        "nsd_distance_effnet": 0.607, "nsd_distance_swav": 0.336,
    },
    source="MedARC-AI/MindEyeV2, src/final_evaluations.ipynb (saved notebook output)",
)

PUBLISHED_NSD = (MINDEYE2_SUBJ01,)

NOT_QUOTED = (
    "Brain-Diffuser's subject-1 numbers are not quoted: its public repository records none (its evaluation "
    "script prints them), and no source for them could be opened here."
)
