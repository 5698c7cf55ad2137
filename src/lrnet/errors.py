"""User-facing errors.

`LrnetError` is raised for problems caused by input the user controls (a bad file, a missing
dataset, a wrong flag). The CLI prints its message on one line and exits with status 2, without a
traceback; any other exception is a bug in lrnet and keeps its traceback.

`LrnetValueError` is the same for a bad *value* handed to a library function (a block size of 1,
say): the CLI treats it as a user error, API callers can keep catching `ValueError`.

`Terminated` is what the CLI raises in its main process when SIGTERM or SIGHUP arrives. It is a
`KeyboardInterrupt`, so every ``except KeyboardInterrupt`` / ``finally`` clean-up that runs on
Ctrl-C (stopping worker pools, removing temporaries, releasing locks) also runs on a kill.
"""

from __future__ import annotations

import signal

__all__ = ["LrnetError", "LrnetValueError", "Terminated", "one_line"]

# Everything a terminal may treat as a line break or a cursor move: C0 and C1 controls, DEL and the
# Unicode line/paragraph separators. Escaped as \n, \r, \t or \xNN / \uNNNN.
_ESCAPES = {c: repr(chr(c))[1:-1] for c in (*range(0x20), 0x7F, *range(0x80, 0xA0), 0x2028, 0x2029)}


def one_line(text: str) -> str:
    """`text` with every control character escaped, so that it prints as exactly one line."""
    return str(text).translate(_ESCAPES)


class LrnetError(Exception):
    """A user error with a one-line, actionable message (file name first, then what is wrong).

    ``str()`` escapes control characters (a newline in a file name, a multi-line message from a
    parser), so printing it always gives one line.
    """

    def __str__(self) -> str:
        return one_line(super().__str__())


class LrnetValueError(LrnetError, ValueError):
    """A value given by the user (through a flag, a config file or the API) is out of range."""


class Terminated(KeyboardInterrupt):
    """The process was asked to stop by a signal (SIGTERM, SIGHUP); `signum` says which."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum

    def __str__(self) -> str:
        return signal.Signals(self.signum).name
