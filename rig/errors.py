"""The rig's error type: every user-facing failure is a :class:`RigError`.

The CLI prints ``rig: error: <message>`` (one line, no traceback: line breaks in a message are escaped) and exits
with :attr:`RigError.exit_code`.  Messages name the file or thing at fault and,
where there is one, what to do next.
"""

from __future__ import annotations

#: characters that end a line for str.splitlines (and for a terminal or a log reader): escaped in messages
_LINE_BREAKS = str.maketrans({c: repr(c)[1:-1] for c in "\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029"})


class RigError(Exception):
    exit_code = 2

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.hint = hint

    def __str__(self) -> str:
        """One line, whatever the message quotes (a user's input, a tool's stderr): line breaks are escaped."""
        msg = super().__str__()
        return (f"{msg} ({self.hint})" if self.hint else msg).translate(_LINE_BREAKS)
