"""The user-facing error types: the CLIs print them as one line naming the culprit (never a traceback).

This module imports nothing else from spiraljax, so a CLI's error path loads no heavy dependency.
"""

from __future__ import annotations


class UserError(Exception):
    """Base of every one-line, user-facing error (bad input, not a bug)."""


class ConfigError(UserError, ValueError):
    """A configuration problem: unknown key, wrong type, impossible value, missing or invalid file."""


class DataError(UserError, ValueError):
    """A data problem: missing, empty or undecodable corpus, unencodable prompt."""


class CheckpointError(UserError, RuntimeError):
    """No usable checkpoint (missing, corrupt or not matching the model)."""


class LockError(UserError, RuntimeError):
    """The run directory is held by another live process."""


class RunError(UserError, RuntimeError):
    """A problem with the run directory (nothing to resume, refused resume, already holds checkpoints)."""


class SuiteError(UserError, ValueError):
    """An evaluation suite that does not fit the run, or a bad ``--opt``."""


USER_ERRORS: tuple[type[Exception], ...] = (UserError, FileNotFoundError, KeyError)
