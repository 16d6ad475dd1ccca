"""The rig's error type: every user-facing failure is a :class:`RigError`.

The CLI prints ``rig: error: <message>`` (one line, no traceback) and exits
with :attr:`RigError.exit_code`.  Messages name the file or thing at fault and,
where there is one, what to do next.
"""

from __future__ import annotations


class RigError(Exception):
    exit_code = 2

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.hint = hint

    def __str__(self) -> str:
        msg = super().__str__()
        return f"{msg} ({self.hint})" if self.hint else msg
