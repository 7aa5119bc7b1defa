"""The user-facing error types that CLIs print as one line (never a traceback)."""
from __future__ import annotations

from spiraljax.config import ConfigError
from spiraljax.data.base import DataError
from spiraljax.eval.suites import SuiteError
from spiraljax.train.checkpoint import CheckpointError
from spiraljax.train.lock import LockError
from spiraljax.train.loop import RunError

USER_ERRORS: tuple[type[Exception], ...] = (ConfigError, DataError, CheckpointError, LockError, RunError,
                                            SuiteError, FileNotFoundError, KeyError)
