"""MLflow tracking: one run per pipeline job, never at the cost of the job's work."""

from mindvis.tracking.job import JobTracker, tracker_for

__all__ = ["JobTracker", "tracker_for"]
