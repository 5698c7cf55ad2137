"""User-facing errors.

`LrnetError` is raised for problems caused by input the user controls (a bad file, a missing
dataset, a wrong flag). The CLI prints its message on one line and exits with status 2, without a
traceback; any other exception is a bug in lrnet and keeps its traceback.
"""

from __future__ import annotations


class LrnetError(Exception):
    """A user error with a one-line, actionable message (file name first, then what is wrong)."""
