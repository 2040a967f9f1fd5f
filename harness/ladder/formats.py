"""The ``format`` rung: FormatSpread's grammar of meaning-preserving formats, one choice changed per pair.

A structured prompt (``structure.parse_structure``) has five format choices;
each edit changes exactly one of them for the whole prompt and keeps the rest:

- ``format_separator``: what joins a field name to its value (``": "`` ->
  ``" || "``); needs two fields or more that all use one separator;
- ``format_spacing``: what comes between fields (``"\\n"`` -> ``"\\n\\n"``);
- ``format_field_casing``: the case of every field name (as written, Title,
  UPPER, lower);
- ``format_item_wrapper``: how list labels are wrapped (``A.`` -> ``(A)``);
- ``format_enumeration``: the enumeration style (``1.`` -> ``a.`` -> ``iv.``).

Validity rules, so no pair is nonsense: a field without a value keeps
no trailing whitespace; fields are joined on one line only when every field
in the joint is a one-line field (never after a list or prose line); the
separator and the spacing never share a visible character; a list is never
turned into bullets (its labels may be what the answer names), a letter
style is used for at most 26 items, and labels are renamed only when the
prompt mentions none of them outside the list.
"""

from __future__ import annotations

import random
import re

from harness.ladder.structure import STYLES, WRAPPERS, ItemList, Structure, enumerator, item_line, parse_structure
from harness.ladder.textspans import EditKind, NotApplicable, pick

SEPARATORS: tuple[str, ...] = (": ", ":", " : ", ":  ", ":\t", ":\n", " :: ", " - ", " -- ", " | ", " || ", " = ", " => ",
                               " ::: ", " >> ")
"""Field separators; the parser reads the ones with a colon (what prompts in the wild use) as fields."""
SPACINGS: tuple[str, ...] = ("\n", "\n\n", "\n\n\n", "\n \n", " ", "  ", "\t", " | ", " || ", "; ", ", ", " // ",
                             " -- ", "\n---\n", "\n\n---\n\n", " ; ")
"""What comes between two fields; the ones without a newline put the fields on one line."""
CASINGS: tuple[str, ...] = ("title", "upper", "lower", "first")


def _fields(s: Structure, need: int = 2):
    if len(s.fields) < need:
        raise NotApplicable(f"fewer than {need} fields (lines 'Name: value')")
    return s.fields


def _canonical_sep(s: Structure) -> str:
    fields = _fields(s)
    with_value = [f.sep for f in fields if f.value]
    canon = with_value[0] if with_value else fields[0].sep
    for f in fields:
        if not (f.sep == canon or (not f.value and f.sep.rstrip() == canon.rstrip())):
            raise NotApplicable("the fields use different separators")
    return canon


def _visible(s: str) -> set[str]:
    return {c for c in s if not c.isspace()}


def _spacings(s: Structure) -> tuple[list[int], str]:
    """Lines of the fields after the first, and the one spacing before all of them (blank lines included)."""
    fields = _fields(s)
    starts, gaps = [], set()
    for f in fields[1:]:
        prev = f.line - 1
        while prev >= 0 and not s.lines[prev].strip():
            prev -= 1
        if prev < 0:
            continue
        starts.append(f.line)
        gaps.add("\n" + "\n".join(s.lines[prev + 1 : f.line]) + ("\n" if f.line - prev > 1 else ""))
    if len(gaps) != 1:
        raise NotApplicable("the fields are not spaced alike" if gaps else "no second field after the first")
    return starts, gaps.pop()


def _join(lines: list[str], breaks: dict[int, str]) -> str:
    """Lines joined by "\\n", except that line ``i`` in ``breaks`` is preceded by its own spacing."""
    out = lines[0]
    for i in range(1, len(lines)):
        out += breaks.get(i, "\n") + lines[i]
    return out


def _field_line(name: str, sep: str, value: str) -> str:
    return name + (sep + value if value else sep.rstrip())


def format_separator(text: str, rng: random.Random) -> str:
    """Every field's separator replaced by another one (``Question: x`` -> ``Question || x``)."""
    s = parse_structure(text)
    canon = _canonical_sep(s)
    try:
        _, spacing = _spacings(s)
    except NotApplicable:
        spacing = "\n"
    # ":\n" puts a value on a line of its own: only when the fields are on lines of their own
    choices = [sep for sep in SEPARATORS if sep != canon and not (_visible(sep) & _visible(spacing))
               and ("\n" not in sep or "\n" in spacing)]

    def with_sep(sep: str) -> str:
        lines = list(s.lines)
        for f in s.fields:
            lines[f.line] = _field_line(f.name, sep, f.value)
        return "\n".join(lines)

    return _pick_changed(rng, text, [with_sep(sep) for sep in choices], "no other separator is valid here")


def _pick_changed(rng: random.Random, text: str, outputs: list[str], why: str) -> str:
    # A choice can leave the text as it was (a valueless field drops the separator's trailing space).
    return pick(rng, list(dict.fromkeys(o for o in outputs if o != text)), why)


def format_spacing(text: str, rng: random.Random) -> str:
    """What separates the fields replaced (``"\\n"`` -> ``"\\n\\n"``, or one line when every field is one line)."""
    s = parse_structure(text)
    canon = _canonical_sep(s)
    starts, current = _spacings(s)
    one_line_ok = all(_is_field_line(s, i - 1) for i in starts) and "\n" not in canon
    choices = [sp for sp in SPACINGS if sp != current and not (_visible(sp) & _visible(canon))
               and ("\n" in sp or one_line_ok)]
    drop: set[int] = set()
    for start in starts:
        prev = start - 1
        while not s.lines[prev].strip():
            drop.add(prev)
            prev -= 1

    def with_spacing(new: str) -> str:
        out_lines: list[str] = []
        breaks: dict[int, str] = {}
        for i, line in enumerate(s.lines):
            if i in drop:
                continue
            if i in starts:
                breaks[len(out_lines)] = new
            out_lines.append(line)
        return _join(out_lines, breaks)

    return _pick_changed(rng, text, [with_spacing(sp) for sp in choices], "no other spacing is valid here")


def _is_field_line(s: Structure, i: int) -> bool:
    return any(f.line == i and f.value for f in s.fields)


def _recased(name: str, casing: str) -> str:
    if casing == "title":
        return " ".join(w[:1].upper() + w[1:].lower() for w in name.split(" "))
    if casing == "upper":
        return name.upper()
    if casing == "lower":
        return name.lower()
    return name[:1].upper() + name[1:].lower()


def format_field_casing(text: str, rng: random.Random) -> str:
    """Every field name in one other casing (``Question`` -> ``QUESTION``)."""
    s = parse_structure(text)
    fields = _fields(s)
    names = [f.name for f in fields]
    choices = [c for c in CASINGS if [_recased(n, c) for n in names] != names]
    casing = pick(rng, choices, "no other casing changes the field names")
    lines = list(s.lines)
    for f in fields:
        lines[f.line] = _recased(f.name, casing) + f.sep + f.value
    return "\n".join(lines)


def _labelled_lists(s: Structure) -> list[ItemList]:
    lists = [lst for lst in s.lists if lst.style != "bullet"]
    if not lists:
        raise NotApplicable("no enumerated list (1. / A) / (i) ...) of two items or more")
    return lists


def _relabel(s: Structure, lists: list[ItemList], style: str | None, wrapper: str | None) -> str:
    lines = list(s.lines)
    for lst in lists:
        for i, item in enumerate(lst.items):
            new_style = style or lst.style
            label = enumerator(new_style, i) if new_style != "bullet" else item.label
            lines[item.line] = item_line(item, label, wrapper or lst.wrapper)
    return "\n".join(lines)


def format_item_wrapper(text: str, rng: random.Random) -> str:
    """Every list label wrapped another way (``A.`` -> ``(A)``); the labels themselves stay."""
    s = parse_structure(text)
    lists = _labelled_lists(s)
    used = {lst.wrapper for lst in lists}
    wrapper = pick(rng, [w for w in WRAPPERS if w not in used], "no other wrapper")
    return _relabel(s, lists, None, wrapper)


def labels_mentioned(s: Structure, lists: list[ItemList]) -> set[str]:
    """Labels of the lists that also stand alone outside them ("Answer B"), articles aside ("A farmer")."""
    in_list = {i for lst in lists for i in lst.lines}
    outside = "\n".join(line for i, line in enumerate(s.lines) if i not in in_list)
    found = set()
    for label in {it.label for lst in lists for it in lst.items}:
        for m in re.finditer(rf"(?<![\w'\u2019]){re.escape(label)}(?![\w'\u2019])", outside):
            article = label in "aAiI" and re.match(r" [a-z]", outside[m.end() : m.end() + 2])
            if not article:
                found.add(label)
    return found


def format_enumeration(text: str, rng: random.Random) -> str:
    """Every list enumerated in another style (``1. 2. 3.`` -> ``a. b. c.``), wrappers kept."""
    s = parse_structure(text)
    lists = _labelled_lists(s)
    mentioned = labels_mentioned(s, lists)
    if mentioned:
        raise NotApplicable(f"the prompt mentions the label(s) {', '.join(sorted(mentioned))} outside the list")
    used = {lst.style for lst in lists}
    longest = max(len(lst.items) for lst in lists)
    style = pick(rng, [st for st in STYLES if st not in used and (longest <= 26 or st not in ("upper", "lower"))],
                 "no other enumeration style")
    return _relabel(s, lists, style, None)


def format_choices(text: str) -> dict[str, str]:
    """The format choices a prompt shows (for a pair's note): separator, spacing, casing, wrapper, style."""
    s = parse_structure(text)
    out: dict[str, str] = {}
    for name, get in (("separator", lambda: _canonical_sep(s)), ("spacing", lambda: _spacings(s)[1])):
        try:
            out[name] = repr(get())
        except NotApplicable:
            pass
    if s.fields:
        out["field names"] = "/".join(f.name for f in s.fields)
    labelled = [lst for lst in s.lists if lst.style != "bullet"]
    if labelled:
        out["item wrapper"] = repr(labelled[0].wrapper)
        out["enumeration"] = labelled[0].style
    return out


def _between(b: str, before: str, after: str) -> str | None:
    m = re.search(re.escape(before) + r"(.{0,16}?)" + re.escape(after), b, re.S)
    return m.group(1) if m else None


def describe_separator(a: str, b: str) -> str:
    s = parse_structure(a)
    f = next((f for f in s.fields if f.value), None)
    new = _between(b, f.name, f.value) if f else None
    return "" if f is None or new is None else f"separator {f.sep!r} -> {new!r}"


def describe_spacing(a: str, b: str) -> str:
    s = parse_structure(a)
    starts, current = _spacings(s)
    prev = max(i for i in range(starts[0]) if s.lines[i].strip())
    new = _between(b, s.lines[prev], s.lines[starts[0]])
    return "" if new is None else f"spacing {current!r} -> {new!r}"


def describe_format(a: str, b: str) -> str:
    before, after = format_choices(a), format_choices(b)
    changed = [f"{k} {before.get(k, '-')} -> {after.get(k, '-')}" for k in dict.fromkeys([*before, *after])
               if before.get(k) != after.get(k)]
    return "; ".join(changed)


FORMAT_KINDS: tuple[EditKind, ...] = (
    EditKind("format", "format_separator", format_separator, describe_separator),
    EditKind("format", "format_spacing", format_spacing, describe_spacing),
    EditKind("format", "format_field_casing", format_field_casing, describe_format),
    EditKind("format", "format_item_wrapper", format_item_wrapper, describe_format),
    EditKind("format", "format_enumeration", format_enumeration, describe_format),
)
