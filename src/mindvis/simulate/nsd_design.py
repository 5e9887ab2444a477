"""The NSD experiment design, scaled down: the "73k" image space, each subject's "10k" images
(`subjectim`), the shared images (`sharedix`), the trial order (`masterordering`), runs, and the
tables derived from them (`responses.tsv`, `nsd_stim_info_merged.csv`). Layout and conventions:
docs/reference.md (NSD) and mindvis.simulate.nsd.

Scaled down from NSD (8 subjects x 10,000 images of 73,000; 1,000 shared; 40 sessions x 750 trials;
12 runs of 62/63 trials):
- the 73k space is the embedded stimulus set, its images in a seeded order (73k id = row);
- the shared images are the stimulus set's test images (`shared_images` of them, 0 = all);
- each subject sees `images_per_subject` images: the shared ones (columns 0.. of `subjectim`, the
  same for all 8 rows) plus its own, disjoint between subjects when the pool allows (as in NSD),
  otherwise seeded overlapping draws;
- every image is shown `repeats` times (NSD: 3), `other_repeats` for the non-shared ones (NSD: 3 too);
- `masterordering` is ONE order for all subjects (as in NSD): a seeded shuffle of all
  presentations, cut to `sessions x trials_per_session` trials, so a short design shows some
  images fewer times (like the subjects who did fewer than 40 sessions).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from mindvis.utils.errors import ConfigError

N_SUBJECTS = 8  # rows of subjectim, as in NSD, whichever subjects are simulated
REPEATS = 3  # presentations of a shared image in the full design (NSD: 3)
SLOTS_PER_STIM = 75 / 63  # NSD runs: 75 slots for 63 (odd runs) or 62 (even runs) stimulus trials
TRIAL_SECONDS = 4.0  # NSD: 3 s image + 1 s gap


@dataclass
class NsdDesign:
    """The shared design of all subjects. Ids as NSD stores them (1-based) unless named `_0`."""

    n_73k: int
    image_of_73k: np.ndarray  # (n_73k,) row of the 73k image in the stimulus set's train+test concatenation
    shared_73k: np.ndarray  # (n_shared,) 1-based 73k ids of the shared images (= sharedix, sorted)
    subjectim: np.ndarray  # (8, images_per_subject) 1-based 73k ids; [:, :n_shared] = shared_73k
    masterordering: np.ndarray  # (n_trials,) 1-based 10k index of each global trial
    trials_per_session: int
    run_lengths: list[int]  # stimulus trials of each run of a session (odd runs first get the extra one)

    @property
    def n_shared(self) -> int:
        return int(self.shared_73k.size)

    @property
    def n_trials(self) -> int:
        return int(self.masterordering.size)

    @property
    def n_sessions(self) -> int:
        return self.n_trials // self.trials_per_session

    def nsd_ids(self, subject: int) -> np.ndarray:
        """(n_trials,) 0-based 73k id of each global trial for `subject` (1-based):
        subjectim[s-1, masterordering[t]-1] - 1, the formula of the NSD data loaders."""
        return self.subjectim[subject - 1, self.masterordering - 1] - 1

    def session_of_trial(self) -> np.ndarray:
        return np.arange(self.n_trials) // self.trials_per_session + 1

    def run_and_trial(self) -> tuple[np.ndarray, np.ndarray]:
        """(n_trials,) 1-based RUN and TRIAL-within-run of each global trial."""
        run = np.concatenate([np.full(n, r + 1) for r, n in enumerate(self.run_lengths)])
        within = np.concatenate([np.arange(1, n + 1) for n in self.run_lengths])
        reps = self.n_sessions
        return np.tile(run, reps), np.tile(within, reps)


def run_lengths(trials_per_session: int, runs: int) -> list[int]:
    """Stimulus trials per run: equal shares, the remainder to odd runs first (NSD: 750 in 12 runs
    = 63 in runs 1, 3, ..., 11 and 62 in runs 2, 4, ..., 12)."""
    runs = max(1, min(runs, trials_per_session))
    base, extra = divmod(trials_per_session, runs)
    order = list(range(0, runs, 2)) + list(range(1, runs, 2))
    lengths = [base] * runs
    for r in order[:extra]:
        lengths[r] += 1
    return lengths


def make_design(
    n_train: int,
    n_test: int,
    *,
    shared_images: int,
    images_per_subject: int,
    other_repeats: int,
    sessions: int,
    trials_per_session: int,
    runs_per_session: int,
    seed: int,
) -> NsdDesign:
    """The design for a stimulus set of `n_train` + `n_test` images (train rows first).

    `shared_images` 0 = all test images; `trials_per_session` 0 = as many as the presentations
    allow (all of them, shared out over the sessions, rounded down)."""
    n_73k = n_train + n_test
    n_shared = shared_images or n_test
    if not 1 <= n_shared < n_73k:
        raise ConfigError(f"nsd simulate.shared_images={shared_images}: must be in 1..{n_73k - 1} (the stimulus set has {n_73k} images)")
    if not n_shared < images_per_subject <= n_73k:
        raise ConfigError(f"nsd simulate.images_per_subject={images_per_subject}: must exceed shared_images ({n_shared}) "
                          f"and be at most the {n_73k} stimulus images")
    if not 1 <= other_repeats <= REPEATS or sessions < 1 or trials_per_session < 0 or runs_per_session < 1:
        raise ConfigError("nsd simulate: other_repeats in 1..3, sessions >= 1, trials_per_session >= 0, runs_per_session >= 1")
    rng = np.random.default_rng([seed, 7300])

    # The 73k space: stimulus images in a seeded order. Shared = test images first (then training
    # images when more are wanted), so the shared test set holds images never used for training.
    image_of_73k = rng.permutation(n_73k)
    test_rows = np.arange(n_train, n_73k)
    if n_shared <= n_test:
        shared_rows = rng.choice(test_rows, size=n_shared, replace=False)
    else:
        shared_rows = np.concatenate([test_rows, rng.choice(n_train, size=n_shared - n_test, replace=False)])
    pos = np.empty(n_73k, dtype=np.int64)
    pos[image_of_73k] = np.arange(n_73k)
    shared_0 = np.sort(pos[shared_rows])
    pool = np.setdiff1d(np.arange(n_73k), shared_0)
    n_own = images_per_subject - n_shared
    if N_SUBJECTS * n_own <= pool.size:  # disjoint, as in NSD
        own = rng.permutation(pool)[: N_SUBJECTS * n_own].reshape(N_SUBJECTS, n_own)
    else:
        own = np.stack([rng.choice(pool, size=n_own, replace=False) for _ in range(N_SUBJECTS)])
    subjectim = np.concatenate([np.tile(shared_0, (N_SUBJECTS, 1)), own], axis=1) + 1

    counts = np.where(np.arange(images_per_subject) < n_shared, REPEATS, other_repeats)
    presentations = np.repeat(np.arange(1, images_per_subject + 1), counts)
    total = int(presentations.size)
    if trials_per_session == 0:
        trials_per_session = total // sessions
        if trials_per_session < 1:
            raise ConfigError(f"nsd simulate: {total} presentations cannot fill {sessions} sessions")
    n_trials = sessions * trials_per_session
    if n_trials > total:
        raise ConfigError(
            f"nsd simulate: {sessions} sessions x {trials_per_session} trials = {n_trials} trials, but "
            f"{images_per_subject} images ({n_shared} shared x {REPEATS}, others x {other_repeats}) give only "
            f"{total} presentations: raise images_per_subject or lower trials_per_session"
        )
    masterordering = rng.permutation(presentations)[:n_trials]
    return NsdDesign(n_73k, image_of_73k, shared_0 + 1, subjectim.astype(np.int64), masterordering.astype(np.int64),
                     trials_per_session, run_lengths(trials_per_session, runs_per_session))


# --------------------------------------------------------------------------- derived variables
def stimpattern(design: NsdDesign, rng: np.random.Generator) -> np.ndarray:
    """(sessions, runs, slots) uint8: 1 = stimulus trial, 0 = blank (NSD: 40 x 12 x 75; [unverified])."""
    longest = max(design.run_lengths)
    slots = max(math.ceil(longest * SLOTS_PER_STIM), longest + 2)  # room for the blank first and last slot
    out = np.zeros((design.n_sessions, len(design.run_lengths), slots), dtype=np.uint8)
    for s in range(design.n_sessions):
        for r, n in enumerate(design.run_lengths):
            out[s, r, np.sort(rng.choice(np.arange(1, slots - 1), size=n, replace=False))] = 1
    return out


def basiccnt(design: NsdDesign) -> np.ndarray:
    """(3, sessions): per session, images shown for the 1st, 2nd, 3rd time ([unverified] meaning)."""
    out = np.zeros((REPEATS, design.n_sessions), dtype=np.int64)
    seen: dict[int, int] = {}
    for t, k in enumerate(design.masterordering.tolist()):
        seen[k] = seen.get(k, 0) + 1
        out[seen[k] - 1, t // design.trials_per_session] += 1
    return out


def repeat_trials(design: NsdDesign, subject: int) -> np.ndarray:
    """(n_73k, 3) 1-based global trial of each presentation of each 73k image for `subject`, 0 if not shown."""
    out = np.zeros((design.n_73k, REPEATS), dtype=np.int64)
    nsd0 = design.nsd_ids(subject)
    count = np.zeros(design.n_73k, dtype=np.int64)
    for t, i in enumerate(nsd0.tolist()):
        out[i, count[i]] = t + 1
        count[i] += 1
    return out


# --------------------------------------------------------------------------- text tables
RESPONSE_COLUMNS = ("SUBJECT", "SESSION", "RUN", "TRIAL", "73KID", "10KID", "TIME", "ISOLD", "ISCORRECT", "RT",
                    "CHANGEMIND", "MEMORYRECENT", "MEMORYFIRST", "ISOLDCURRENT", "ISCORRECTCURRENT", "TOTAL1",
                    "TOTAL2", "BUTTON", "MISSINGDATA")


def _num(x: float) -> str:
    return "NaN" if not np.isfinite(x) else (str(int(x)) if float(x).is_integer() else f"{x:.6f}".rstrip("0"))


def responses_tsv(design: NsdDesign, subject: int, sessions: list[int], rng: np.random.Generator) -> str:
    """NSD's behav/responses.tsv for the given sessions (1-based), rows in trial order. The
    continuous-recognition answers (old/new button) are simulated: 80 % correct."""
    run, within = design.run_and_trial()
    session = design.session_of_trial()
    nsd0 = design.nsd_ids(subject)
    first: dict[int, int] = {}
    last: dict[int, int] = {}
    lines = ["\t".join(RESPONSE_COLUMNS)]
    day0 = 737000.0 + subject * 100  # MATLAB datenum-like day numbers
    keep = set(sessions)
    for t in range(design.n_trials):
        s = int(session[t])
        k = int(nsd0[t])
        is_old = k in first
        old_current = is_old and (last[k] - 1) // design.trials_per_session + 1 == s
        correct = rng.random() < 0.8
        button = (2 if is_old else 1) if correct else (1 if is_old else 2)
        rt = float(np.round(rng.gamma(8.0, 100.0), 1))
        recent = float(t + 1 - last[k]) if is_old else np.nan
        firstd = float(t + 1 - first[k]) if is_old else np.nan
        first.setdefault(k, t + 1)
        last[k] = t + 1
        if s not in keep:
            continue
        time = day0 + 7 * (s - 1) + (t % design.trials_per_session) * TRIAL_SECONDS / 86400.0
        row = (subject, s, int(run[t]), int(within[t]), k + 1, int(design.masterordering[t]), time, int(is_old),
               int(correct), rt, 0, recent, firstd, int(old_current), int(correct), 1, 0, button, 0)
        lines.append("\t".join(_num(v) if isinstance(v, float) else str(v) for v in row))
    return "\n".join(lines) + "\n"


def stim_info_csv(design: NsdDesign, coco_ids: np.ndarray, is_val: np.ndarray) -> str:
    """nsd_stim_info_merged.csv: an unnamed 0.. index column, then NSD's columns; subjectK = 1 if
    the image is in subject K's set, subjectK_repN = 1-based global trial of its N-th showing (0: none)."""
    shared = np.zeros(design.n_73k, dtype=bool)
    shared[design.shared_73k - 1] = True
    in_set = np.zeros((N_SUBJECTS, design.n_73k), dtype=np.int64)
    for s in range(N_SUBJECTS):
        in_set[s, design.subjectim[s] - 1] = 1
    reps = [repeat_trials(design, s + 1) for s in range(N_SUBJECTS)]
    header = ["", "cocoId", "cocoSplit", "cropBox", "loss", "nsdId", "flagged", "BOLD5000", "shared1000"]
    header += [f"subject{s + 1}" for s in range(N_SUBJECTS)]
    header += [f"subject{s + 1}_rep{r}" for s in range(N_SUBJECTS) for r in range(REPEATS)]
    lines = [",".join(header)]
    for i in range(design.n_73k):
        row = [str(i), str(int(coco_ids[i])), "val2017" if is_val[i] else "train2017", '"(0, 0, 0, 0)"', "0.0", str(i),
               "False", "False", str(bool(shared[i]))]
        row += [str(in_set[s, i]) for s in range(N_SUBJECTS)]
        row += [str(reps[s][i, r]) for s in range(N_SUBJECTS) for r in range(REPEATS)]
        lines.append(",".join(row))
    return "\n".join(lines) + "\n"
