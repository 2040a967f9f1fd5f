"""The ``filler`` rung: words or a clause added that carry no task content.

- ``filler_word``: a spoken filler ("um", "you know", ...) between two free
  words (HELM's filler words);
- ``politeness_wrapper``: "Please explain ..." for a prompt that opens with an
  imperative verb, a greeting before the prompt, or thanks after a prompt
  that ends its last sentence;
- ``imperative_to_question``: "Explain X." -> "Can you explain X?" for a
  one-sentence prompt that opens with an imperative verb;
- ``tautology_suffix``: StressTest's distractor, a clause that is true of
  everything ("and true is true") after the prompt;
- ``random_suffix``: CheckList's distractor, a random handle ("@qzvkxmwb")
  after the prompt (letters only: the prompt's numbers stay its only numbers).

A prompt that ends with an answer cue ("Answer:" alone on its last line) gets
its distractor after its last line of content, never in the answer slot or
inside an option.

The prompt's own characters are kept: every edit inserts text, except that
the two imperative edits lowercase the first letter of the verb and
``imperative_to_question`` turns the final "." or "!" into "?".
"""

from __future__ import annotations

import random
import re
import string

from harness.ladder.structure import parse_structure
from harness.ladder.textspans import EditKind, NotApplicable, first_change, free_spaces, free_words, is_mark, pick, replace_span

FILLERS: tuple[str, ...] = ("um", "uh", "like", "you know", "basically", "actually", "I mean", "so")
IMPERATIVES: frozenset[str] = frozenset(
    "analyse analyze calculate classify compare convert count create define describe design draft estimate explain "
    "find generate give help identify list make name outline plan provide recommend repeat rewrite reverse show "
    "solve sort spell suggest summarise summarize tell translate write".split()
)
"""Verbs that open an instruction; a prompt that opens with one of them is an imperative."""
QUESTION_OPENERS: tuple[str, ...] = ("Can you", "Could you", "Would you", "Will you")
POLITE_PREFIXES: tuple[str, ...] = ("Please", "Kindly")
GREETINGS: tuple[str, ...] = ("Hi! ", "Hello! ", "Hi there. ")
THANKS: tuple[str, ...] = (" Thank you!", " Thanks in advance.", " Thanks.")
TAUTOLOGIES: tuple[str, ...] = ("true is true", "false is not true", "up is not down")
RANDOM_SUFFIX_LETTERS = 8


def _visible_end(text: str) -> int:
    return len(text.rstrip())


def _imperative(text: str) -> re.Match | None:
    """The opening verb when the prompt starts (no leading space) with a Capitalized or lowercase imperative."""
    words = free_words(text)
    if not words or words[0].start != 0:
        return None
    w = words[0].text
    if w.lower() not in IMPERATIVES or not (w.islower() or (w[0].isupper() and w[1:].islower())):
        return None
    return re.match(re.escape(w), text)


def _lower_first(text: str) -> str:
    return text[0].lower() + text[1:]


def _field_names(text: str) -> list[tuple[int, int]]:
    s = parse_structure(text)
    starts = [0]
    for line in s.lines:
        starts.append(starts[-1] + len(line) + 1)
    return [(starts[f.line], starts[f.line] + len(f.name)) for f in s.fields]


def filler_word(text: str, rng: random.Random) -> str:
    """A spoken filler inserted between two words ("Explain why um the sky ..."), never inside a field name."""
    names = _field_names(text)
    spots = [i for i in free_spaces(text) if not any(a <= i < b for a, b in names)]
    at = pick(rng, spots, "no space between two words outside URLs, numbers, code, quotes and field names")
    return replace_span(text, at, at + 1, f" {pick(rng, FILLERS)} ")


def politeness_wrapper(text: str, rng: random.Random) -> str:
    """"Please"/"Kindly" before an imperative, a greeting before the prompt, or thanks after its last sentence."""
    if not text.strip():
        raise NotApplicable("no visible character")
    options: list[str] = []
    if _imperative(text):
        options += [f"{p} {_lower_first(text)}" for p in POLITE_PREFIXES]
    if not text[0].isspace() and not is_mark(text[0]):
        # Before a first field ("Question: ...") the greeting takes a line of its own, so the field stays one.
        own_line = any(f.line == 0 for f in parse_structure(text).fields)
        options += [(g.rstrip() + "\n" if own_line else g) + text for g in GREETINGS]
    end = _visible_end(text)
    if text[end - 1] in ".!?":
        options += [text[:end] + t + text[end:] for t in THANKS]
    return pick(rng, options, "starts with whitespace or a combining mark and does not end with . ! or ?")


def imperative_to_question(text: str, rng: random.Random) -> str:
    """"Explain X." -> "Could you explain X?" (one sentence, one line, opened by an imperative verb)."""
    if not _imperative(text):
        raise NotApplicable("does not open with an imperative verb (explain, write, list, ...)")
    end = _visible_end(text)
    body = text[:end]
    if "\n" in body or re.search(r"[.!?][\"')\]]*\s", body):
        raise NotApplicable("more than one sentence or line")
    if body[-1] in "?:;,":
        raise NotApplicable(f"ends with {body[-1]!r}, not a plain instruction")
    core = body[:-1] if body[-1] in ".!" else body
    return f"{pick(rng, QUESTION_OPENERS)} {_lower_first(core)}?" + text[end:]


def _suffix_at(text: str) -> int:
    """Where a distractor goes: after the prompt's last visible character, or, when the prompt ends with
    an answer cue ("Answer:" on its own line), after the last line of content before the cue and its options.
    """
    end = _visible_end(text)
    if not end:
        raise NotApplicable("no visible character")
    s = parse_structure(text)
    last = max(i for i, line in enumerate(s.lines) if line.strip())
    if not any(f.line == last and not f.value for f in s.fields):
        return end
    skip = {f.line for f in s.fields if not f.value} | {i for lst in s.lists for i in lst.lines}
    content = [i for i in range(last) if s.lines[i].strip() and i not in skip]
    if not content:
        raise NotApplicable("nothing but an answer cue and options: no text for a distractor to follow")
    i = content[-1]
    return sum(len(line) + 1 for line in s.lines[:i]) + len(s.lines[i].rstrip())


def _suffixed(text: str, clause: str, sentence: str) -> str:
    at = _suffix_at(text)
    ends_sentence = text[at - 1] in ".!?"
    return text[:at] + " " + (sentence if ends_sentence else clause) + text[at:]


def tautology_suffix(text: str, rng: random.Random) -> str:
    """StressTest's distractor: "and true is true" after the prompt (its own sentence after a final . ! ?)."""
    t = pick(rng, TAUTOLOGIES)
    return _suffixed(text, f"and {t}", f"And {t}.")


def random_suffix(text: str, rng: random.Random) -> str:
    """CheckList's distractor: a random handle of eight lowercase letters after the prompt."""
    handle = "@" + "".join(rng.choice(string.ascii_lowercase) for _ in range(RANDOM_SUFFIX_LETTERS))
    return _suffixed(text, handle, handle)


FILLER_KINDS: tuple[EditKind, ...] = (
    EditKind("filler", "filler_word", filler_word, first_change),
    EditKind("filler", "politeness_wrapper", politeness_wrapper, first_change),
    EditKind("filler", "imperative_to_question", imperative_to_question, first_change),
    EditKind("filler", "tautology_suffix", tautology_suffix, first_change),
    EditKind("filler", "random_suffix", random_suffix, first_change),
)
