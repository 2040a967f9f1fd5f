"""The base of every saved record, the one schema version and its check."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict

from harness.errors import InputError

SCHEMA_VERSION = 2
"""Version of what a run saves (manifest.json, cell.json, summary.json). 1: untyped dicts (cell.json had no
version); 2: written through harness.schema. Bump it when a saved field changes name, type or meaning, and
regenerate docs/schema/ (``python -m harness.schema.export``)."""


class Record(BaseModel):
    """A saved record: frozen, unknown keys refused (a misspelt key is an error, never a silent extra)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    def to_json_dict(self) -> dict[str, Any]:
        """The record as written: only the keys that were given (a key absent today stays absent), values as
        Python objects (NaN stays NaN, as json.dumps writes it)."""
        out = self.model_dump(mode="python", exclude_unset=True)
        if "schema_version" in type(self).model_fields:
            # Written always and first, even when the version was left at its default.
            out = {"schema_version": getattr(self, "schema_version"), **out}
        return out

    def evolve(self, **changes: Any):
        """A copy with ``changes`` applied and validated again (``model_copy(update=...)`` would not validate)."""
        return type(self).model_validate({**self.to_json_dict(), **changes})


class OpenRecord(Record):
    """A record owned by another stage whose inner keys are recorded as that stage gives them."""

    model_config = ConfigDict(frozen=True, extra="allow")


def check_schema_version(file: str, raw: Any, expected: int = SCHEMA_VERSION) -> None:
    """Refuse a file written under another schema version with one line naming the file and both versions
    (exit 2): a run directory of an older harness is not read with today's meaning of its keys."""
    if not isinstance(raw, dict):
        raise InputError(file, "(top level)", f"expected a JSON object, got {type(raw).__name__}")
    found = raw.get("schema_version")
    if found == expected and type(found) is int:
        return
    what = "missing" if "schema_version" not in raw else repr(found)
    hint = ("written by an older stabprobe: rerun it with this version"
            if not isinstance(found, int) or found < expected else "written by a newer stabprobe")
    raise InputError(file, "schema_version", f"found {what}, expected {expected} ({hint})")
