"""The job states, in one place: the runner, the storage layer, the API and the CLI import them.

The dashboard's scripts keep a copy of ``FINAL_STATES`` (service/dashboard/static/app.js,
``FINAL``); tests/service/test_lifecycle.py asserts the two agree.
"""

from __future__ import annotations

from enum import StrEnum


class JobState(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    FINALIZING = "finalizing"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    def is_finished(self) -> bool:
        return self in FINAL_STATES


#: The states a job never leaves.
FINAL_STATES: tuple[JobState, ...] = (JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED)
