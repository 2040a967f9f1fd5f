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
EXIT_UNMEASURABLE = 5  # gate: a model x variant whose decode is nondeterministic or whose noise floor is unmeasurable


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


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread: handled like Ctrl-C (the run ends ``interrupted``), exit 143."""


class EnvironmentProblem(Exception):
    """The environment cannot do what was asked (no hub, no GPU); exit code 4."""


def error_line(exc: BaseException, limit: int = 600) -> str:
    """``Type: message`` on one line: a library's multi-line message is joined, not cut at its first line break."""
    text = " ".join(f"{type(exc).__name__}: {exc}".split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


class FieldError(ValueError):
    """A cross-field error raised by a pydantic model validator, pointing at the field the user should change."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


# Short, actionable wording for pydantic's error types; anything else keeps pydantic's message.
_TYPE_MESSAGES = {
    "extra_forbidden": "unknown key",
    "missing": "missing (required)",
    "string_type": "expected a string",
    "int_type": "expected an integer",
    "bool_type": "expected true or false",
    "list_type": "expected a list",
    "tuple_type": "expected a list",
    "dict_type": "expected a mapping",
    "model_type": "expected a mapping",
    "model_attributes_type": "expected a mapping",
}


def pydantic_error_to_input_error(file: str, exc, prefix: str = "") -> InputError:
    """The first error of a pydantic ValidationError as ``<file>: <field>: <message>``, the field as the user wrote it.

    The one translator of the project (registry, ladders, prompt files, gate configs).
    """
    err = exc.errors()[0]
    loc = prefix
    for part in err["loc"]:
        loc += f"[{part}]" if isinstance(part, int) else (f".{part}" if loc else str(part))
    kind = err["type"]
    if kind == "value_error":
        cause = err.get("ctx", {}).get("error")
        msg = str(cause if cause is not None else err["msg"])
        if isinstance(cause, FieldError):
            loc += f".{cause.field}" if loc else cause.field
    else:
        msg = _TYPE_MESSAGES.get(kind, err["msg"])
    if kind not in ("missing", "extra_forbidden") and "input" in err and not isinstance(err["input"], (dict, list, tuple)):
        shown = repr(err["input"])
        if shown not in msg:
            msg += f" (got {shown if len(shown) <= 60 else shown[:57] + '...'})"
    return InputError(file, loc or "(top level)", msg)
