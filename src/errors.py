"""The project's own failures, and how the entrypoint answers each (torch-free: the entrypoint imports it
before anything heavy).

- ConfigError: the user's config or input data is wrong. One sentence, no traceback, exit 2.
- TrainingDiverged: the loss or gradient norm became NaN or infinite. One sentence (metrics.json says so
  too), exit 1.
- Anything else is a bug or an environment problem: the traceback is shown.
Inside a multirun (a sweep), every failure becomes JobFailed, which the sweeper records as the trial's
failure reason, and the sweep goes on.
"""

from __future__ import annotations

import functools
import logging
import sys
from collections.abc import Callable
from typing import Any

log = logging.getLogger("src.train")


class ConfigError(ValueError):
    """A mistake in the user's config or input data; its message is shown alone, without a traceback."""


class TrainingDiverged(RuntimeError):
    """The loss or gradient norm became NaN or infinite."""


class JobFailed(RuntimeError):
    """A multirun job failed; the sweeper records the message as the trial's failure reason."""


def _in_multirun() -> bool:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def failure_policy(cleanup: Callable[[], None]) -> Callable:
    """Wrap a Hydra task function (as lightning-hydra-template's `task_wrapper` does) so that its failures are
    answered by class, as the module docstring says; `cleanup` runs after every job, failed or not."""

    def decorate(task: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(task)
        def wrapped(*args: Any, **kwargs: Any) -> Any:
            failure = None
            try:
                return task(*args, **kwargs)
            except ConfigError as error:
                if not _in_multirun():
                    log.error("Config error: %s", error)
                    sys.exit(2)
                failure = f"ConfigError: {error}"
            except TrainingDiverged as error:
                log.error("TrainingDiverged: %s", error)
                if not _in_multirun():
                    sys.exit(1)
                failure = f"TrainingDiverged: {error}"
            except Exception as error:
                if not _in_multirun():
                    log.error("%s: %s", type(error).__name__, error)
                    raise
                log.exception("Job failed")  # full traceback in this job's train.log
                failure = f"{type(error).__name__}: {error}"
            finally:
                cleanup()
            # Raised outside the except blocks, so the failed job's frames (and its model) are not kept alive.
            raise JobFailed(failure)

        return wrapped

    return decorate
