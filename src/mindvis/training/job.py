"""The shell every training command (A1, A2, stage B) shares: join DDP, track on rank 0, exit 143 on SIGTERM.

Under torchrun each process runs the command; only rank 0 opens an MLflow run
and logs the summary, so a job stays one run whatever its process count.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

EXIT_INTERRUPTED = 143  # 128 + SIGTERM: schedulers and Snakemake read it as "killed", the resume file is kept


def run_training_job(args, cfg, train: Callable[[Any, Any], dict[str, Any]], *, out: Path, artifact: str,
                     dataset: str, subject: str | None = None,
                     describe: Callable[[dict[str, Any]], str] | None = None) -> int:
    """Run `train(env, tracker) -> summary` as one tracked job; return the process exit code."""
    from mindvis.tracking import tracker_for
    from mindvis.training import distributed as ddp
    from mindvis.training.ldm_trainer import join_processes
    from mindvis.training.mbm_trainer import TrainingInterrupted

    env, _ = join_processes(cfg.device)  # joins the process group under torchrun (WORLD_SIZE > 1)
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
