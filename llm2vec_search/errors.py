"""User-facing errors: raised deep in the library, turned into one clean line at the CLI."""

from __future__ import annotations


class L2VError(Exception):
    """An error the user can fix (bad input, missing file, offline hub...).

    The CLI prints ``error: <message>`` and exits with ``exit_code``; no traceback.
    """

    exit_code = 1


class UsageError(L2VError):
    """Invalid arguments or input data."""

    exit_code = 2


class ModelError(L2VError):
    """A model cannot be resolved, loaded or made bidirectional."""


class IndexStateError(L2VError):
    """An index is missing, corrupt, or does not match the encoder."""
