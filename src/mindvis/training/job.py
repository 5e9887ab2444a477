"""The shell every training command (A1, A2, stage B) shares: join DDP, track on rank 0, exit 143 on SIGTERM.

Under torchrun each process runs the command; only rank 0 opens an MLflow run
and logs the summary, so a job stays one run whatever its process count.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mindvis.config import load_section
from mindvis.tracking import tracker_for
from mindvis.training import distributed as ddp
from mindvis.training.engine import TrainingInterrupted

log = logging.getLogger(__name__)

EXIT_INTERRUPTED = 143  # 128 + SIGTERM: schedulers and Snakemake read it as "killed", the resume file is kept


def run_training_job(args, cfg, train: Callable[[Any, Any], dict[str, Any]], *, out: Path, artifact: str,
                     dataset: str, subject: str | None = None,
                     describe: Callable[[dict[str, Any]], str] | None = None) -> int:
    """Run `train(env, tracker) -> summary` as one tracked job; return the process exit code."""
    env, _ = ddp.join_processes(cfg.device)  # joins the process group under torchrun (WORLD_SIZE > 1)
    if not env.is_main:
        args.no_tracking = True
    try:
        with tracker_for(args, cfg, dataset=dataset, subject=subject) as tracker:
            try:
                summary = train(env, tracker)
            except TrainingInterrupted as exc:
                log.warning("%s", exc)
                tracker.mark_interrupted(exc.step)
                return EXIT_INTERRUPTED
            if env.is_main:
                tracker.log_dict(summary, "summary.json")
                tracker.log_file_reference(out, artifact)
    finally:
        ddp.shutdown()
    if env.is_main and describe is not None:
        log.info("%s", describe(summary))
    return 0


def add_out_argument(parser, example: str) -> None:
    """Every training command's --out: the checkpoint it writes, the resume file beside it."""
    parser.add_argument("--out", type=Path, required=True,
                        help=f"output checkpoint, e.g. <dir>/{example} (resume state: <out>.resume.pt)")


def run_command(args, config_class: type, train: Callable[[Any, Any, Any], dict[str, Any]], **job: Any) -> int:
    """A training command's `run`: its config section (--config, --set) loaded into `config_class`,
    then `train(cfg, env, tracker) -> summary` as one job (`run_training_job`'s keywords in `job`)."""
    cfg = load_section(config_class, args.config, args.overrides)
    return run_training_job(args, cfg, lambda env, tracker: train(cfg, env, tracker), **job)
