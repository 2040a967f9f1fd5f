"""Error types that map to the CLI's exit codes.

A user error (bad file, bad flag) must print one line naming the file and the
field, exit 2, and leave nothing behind; anything else is a bug and keeps its
traceback.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_FAILED_CHECK = 1  # gate / compare verdicts
EXIT_BAD_INPUT = 2
EXIT_MODEL_FAILED = 3
EXIT_ENVIRONMENT = 4  # e.g. the hub cannot be reached for `registry pin`


class InputError(Exception):
    """Bad user input: reported as ``<file>: <field>: <message>``, exit code 2."""

    def __init__(self, file: str, field: str, message: str) -> None:
        self.file = str(file)
        self.field = field
        self.message = message
        super().__init__(self.one_line())

    def one_line(self) -> str:
        parts = [p for p in (self.file, self.field) if p]
        text = " ".join(self.message.split())  # never more than one line
        return ": ".join([*parts, text])


class EnvironmentProblem(Exception):
    """The environment cannot do what was asked (no hub, no GPU); exit code 4."""


def error_line(exc: BaseException, limit: int = 600) -> str:
    """``Type: message`` on one line: a library's multi-line message is joined, not cut at its first line break."""
    text = " ".join(f"{type(exc).__name__}: {exc}".split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def pydantic_error_to_input_error(file: str, exc, prefix: str = "") -> InputError:
    """First error of a pydantic ValidationError as a one-line InputError."""
    err = exc.errors()[0]
    loc = prefix
    for part in err["loc"]:
        loc += f"[{part}]" if isinstance(part, int) else (f".{part}" if loc else str(part))
    msg = err["msg"]
    if err["type"] == "extra_forbidden":
        msg = "unknown key"
    elif "input" in err and err["type"] not in ("missing",):
        msg = f"{msg} (got {err['input']!r})"
    return InputError(file, loc or "(top level)", msg)
