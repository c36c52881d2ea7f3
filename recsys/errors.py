"""The one family of errors that mean "the user asked for something that cannot be done as
asked": a config key, a missing input, a table or model that does not exist yet, a privacy
rule. The ``recsys`` command prints them as one line (exit 2, or 1 for a broken set-up);
every other exception is a bug and keeps its traceback.

Each class also derives from the built-in exception a caller would expect (``ValueError``,
``FileNotFoundError``, ``LookupError``, ``RuntimeError``), so ``except ValueError`` keeps
working for library users.
"""

from __future__ import annotations


class RecsysError(Exception):
    """Base of every user-facing error: the message says what is wrong and what to do."""

    exit_code = 2


class ConfigError(RecsysError, ValueError):
    """A configuration key is unknown, has the wrong type or an out-of-range value."""


class UsageError(RecsysError, ValueError):
    """A command was called with missing or contradictory arguments."""


class MissingInputError(RecsysError, FileNotFoundError):
    """An input folder or file (landing files, a dataset to import) does not exist."""


class MissingTableError(RecsysError, FileNotFoundError):
    """A Delta table a stage reads has not been written yet."""


class DataError(RecsysError, ValueError):
    """The data cannot support the stage (an empty table, no rows of a split)."""


class NoModelError(RecsysError, LookupError):
    """No model is registered under the configured name, alias or version."""


class PrivacyError(RecsysError, ValueError):
    """The pseudonymisation key is missing or not allowed in this environment."""


class SetupError(RecsysError, RuntimeError):
    """The environment is broken (Java, a jar or a package missing); the message says how to fix it."""

    exit_code = 1
