"""Errors a user can act on.

Anything raised as a `FacelabError` is shown as one line (no traceback unless `--debug`)
and ends the command with its exit code: 1 for failures, 2 for usage errors.
"""


class FacelabError(Exception):
    exit_code = 1


class UsageError(FacelabError):
    exit_code = 2
