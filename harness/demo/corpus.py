"""Deterministic synthetic instruction corpus for the tiny demo models.

Every example is derived from ``random.Random(seed)``; nothing here touches the global
``random`` state, so the same seed yields the same corpus on every run and platform
(``Random.choice``/``randint`` have been stable since Python 3.2).
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

WORDS: tuple[str, ...] = (
    "apple", "house", "river", "garden", "green", "cat", "dog", "bird", "fish", "tree",
    "water", "stone", "light", "night", "music", "paper", "table", "chair", "window", "door",
    "bread", "milk", "honey", "sugar", "salt", "lemon", "orange", "banana", "grape", "cherry",
    "summer", "winter", "spring", "autumn", "cloud", "rain", "snow", "storm", "wind", "sun",
    "moon", "star", "planet", "ocean", "island", "forest", "desert", "valley", "hill", "lake",
    "road", "bridge", "city", "village", "market", "school", "teacher", "student", "doctor", "farmer",
    "king", "queen", "castle", "tower", "horse", "tiger", "lion", "rabbit", "mouse", "monkey",
    "happy", "quiet", "brave", "gentle", "simple", "bright", "dark", "quick", "slow", "warm",
    "cold", "sweet", "little", "large", "small", "young", "old", "yellow", "purple", "silver",
    "gold", "copper", "iron", "glass", "wood", "cotton", "silk", "leather", "rope", "candle",
    "pencil", "book", "letter", "story", "song", "dance", "game", "ball", "kite", "boat",
    "train", "plane", "rocket", "engine", "wheel", "hammer", "button", "pocket", "jacket", "shoe",
    "hat", "cup", "plate", "spoon", "fork", "knife", "bottle", "basket", "box", "bag",
    "friend", "family", "mother", "father", "sister", "brother", "baby", "child", "people", "animal",
    "flower", "grass", "leaf", "root", "seed", "field", "farm", "barn", "sheep", "goat",
)

CAPITALS: Mapping[str, str] = MappingProxyType({
    "France": "Paris", "Germany": "Berlin", "Italy": "Rome", "Spain": "Madrid",
    "Japan": "Tokyo", "China": "Beijing", "Egypt": "Cairo", "Kenya": "Nairobi",
    "Peru": "Lima", "Chile": "Santiago", "Canada": "Ottawa", "Russia": "Moscow",
    "Norway": "Oslo", "Sweden": "Stockholm", "Finland": "Helsinki", "Poland": "Warsaw",
    "Greece": "Athens", "Portugal": "Lisbon", "Ireland": "Dublin", "Austria": "Vienna",
    "Hungary": "Budapest", "Cuba": "Havana", "Thailand": "Bangkok", "Turkey": "Ankara",
    "Vietnam": "Hanoi", "Denmark": "Copenhagen",
})

# Placeholders: {word}, {n}, {a}, {b}, {country}. The first phrasing of each task is the
# canonical one used by ``in_domain_prompts``.
TASKS: Mapping[str, tuple[str, ...]] = MappingProxyType({
    "reverse": (
        "Reverse the word {word}.",
        "What is {word} spelled backwards?",
        "Write the word {word} in reverse.",
        "Spell {word} backwards.",
    ),
    "uppercase": (
        "Write the word {word} in uppercase.",
        "Convert {word} to capital letters.",
        "What is {word} in all caps?",
        "Uppercase the word {word}.",
    ),
    "first_letter": (
        "What is the first letter of the word {word}?",
        "Give the first letter of {word}.",
        "Which letter does {word} start with?",
    ),
    "last_letter": (
        "What is the last letter of the word {word}?",
        "Give the last letter of {word}.",
        "Which letter does {word} end with?",
    ),
    "repeat": (
        "Repeat the word {word} {n} times.",
        "Say {word} {n} times.",
        "Write {word} {n} times, separated by spaces.",
    ),
    "add": (
        "What is {a} plus {b}?",
        "Add {a} and {b}.",
        "Compute {a} + {b}.",
        "What is the sum of {a} and {b}?",
    ),
    "capital": (
        "What is the capital of {country}?",
        "Name the capital city of {country}.",
        "Which city is the capital of {country}?",
    ),
    "lowercase": (
        "Write the word {word} in lowercase.",
        "Convert {word} to small letters.",
        "Lowercase the word {word}.",
    ),
})


# Sums are a pure 21x21 lookup table with no structure shared with the word tasks, so a
# tiny model needs to see them about twice as often to memorise them in a few minutes.
TASK_WEIGHTS: Mapping[str, int] = MappingProxyType({t: 2 if t == "add" else 1 for t in TASKS})


@dataclass(frozen=True)
class Example:
    """One instruction: the user prompt, the exact expected answer, and a short
    deterministic reasoning chain (the body of tiny-think's ``<think>`` block)."""

    task: str
    prompt: str
    answer: str
    reasoning: str


@dataclass(frozen=True)
class _Args:
    word: str = ""
    n: int = 0
    a: int = 0
    b: int = 0
    country: str = ""


def _solve(task: str, args: _Args) -> tuple[str, str]:
    """Return (answer, reasoning) for a task; the only place answers are defined."""
    w = args.word
    if task == "reverse":
        ans = w[::-1]
        return ans, f"the word is {w}. reversed it is {ans}."
    if task == "uppercase":
        ans = w.upper()
        return ans, f"the word is {w}. in uppercase it is {ans}."
    if task == "first_letter":
        return w[0], f"the word is {w}. its first letter is {w[0]}."
    if task == "last_letter":
        return w[-1], f"the word is {w}. its last letter is {w[-1]}."
    if task == "repeat":
        ans = " ".join([w] * args.n)
        return ans, f"the word is {w}. {args.n} times it is {ans}."
    if task == "add":
        total = str(args.a + args.b)
        return total, f"the numbers are {args.a} and {args.b}. {args.a} plus {args.b} is {total}."
    if task == "capital":
        city = CAPITALS[args.country]
        return city, f"the country is {args.country}. its capital is {city}."
    if task == "lowercase":
        ans = w.lower()
        return ans, f"the word is {w}. in lowercase it is {ans}."
    raise ValueError(f"unknown task {task!r}")


def make_example(task: str, template: str, args: _Args) -> Example:
    prompt = template.format(word=args.word, n=args.n, a=args.a, b=args.b, country=args.country)
    answer, reasoning = _solve(task, args)
    return Example(task=task, prompt=prompt, answer=answer, reasoning=reasoning)


def _sample_args(task: str, rng: random.Random) -> _Args:
    # Draw order is fixed per task so a given seed always consumes the same numbers.
    if task == "add":
        return _Args(a=rng.randint(0, 20), b=rng.randint(0, 20))
    if task == "capital":
        return _Args(country=rng.choice(tuple(CAPITALS)))
    word = rng.choice(WORDS)
    if task == "lowercase":
        return _Args(word=word.upper())
    if task == "repeat":
        return _Args(word=word, n=rng.randint(2, 3))
    return _Args(word=word)


def _draw_task(rng: random.Random) -> str:
    return rng.choices(tuple(TASK_WEIGHTS), weights=tuple(TASK_WEIGHTS.values()))[0]


def examples(seed: int, n: int) -> list[Example]:
    """``n`` examples, tasks drawn by ``TASK_WEIGHTS``, phrasings uniformly within a task."""
    rng = random.Random(seed)
    out: list[Example] = []
    for _ in range(n):
        task = _draw_task(rng)
        template = rng.choice(TASKS[task])
        out.append(make_example(task, template, _sample_args(task, rng)))
    return out


_CANONICAL_ARGS: Mapping[str, _Args] = MappingProxyType({
    "reverse": _Args(word="apple"),
    "uppercase": _Args(word="house"),
    "first_letter": _Args(word="garden"),
    "last_letter": _Args(word="river"),
    "repeat": _Args(word="cat", n=3),
    "add": _Args(a=7, b=5),
    "capital": _Args(country="France"),
    "lowercase": _Args(word="GREEN"),
})


def canonical_examples() -> list[Example]:
    """One fixed example per task, using the task's first (canonical) phrasing."""
    return [make_example(t, TASKS[t][0], _CANONICAL_ARGS[t]) for t in TASKS]


def in_domain_prompts() -> list[tuple[str, str]]:
    """Canonical ``(task, prompt)`` pairs that a perturbation ladder can reuse verbatim."""
    return [(ex.task, ex.prompt) for ex in canonical_examples()]


# --- plain-text documents for the base model -------------------------------------------

_FACT_PHRASES: Mapping[str, str] = MappingProxyType({
    "reverse": "The word {word} spelled backwards is {answer}.",
    "uppercase": "The word {word} in uppercase is {answer}.",
    "first_letter": "The word {word} starts with the letter {answer}.",
    "last_letter": "The word {word} ends with the letter {answer}.",
    "repeat": "The word {word} said {n} times is {answer}.",
    "add": "{a} plus {b} is {answer}.",
    "capital": "The capital of {country} is {answer}.",
    "lowercase": "The word {word} in lowercase is {answer}.",
})


def _fact(task: str, args: _Args) -> str:
    """A declarative sentence stating the task's answer without the instruction form."""
    answer, _ = _solve(task, args)
    return _FACT_PHRASES[task].format(
        word=args.word, n=args.n, a=args.a, b=args.b, country=args.country, answer=answer
    )


def base_document(ex: Example) -> str:
    """An instruction rendered as plain prose: the prompt followed by its answer."""
    return f"{ex.prompt} The answer is {ex.answer}."


def base_texts(seed: int, n: int) -> list[str]:
    """``n`` base-model documents: about two thirds instruction prose, one third facts."""
    rng = random.Random(seed)
    docs: list[str] = []
    for _ in range(n):
        task = _draw_task(rng)
        template = rng.choice(TASKS[task])
        args = _sample_args(task, rng)
        if rng.random() < 1 / 3:
            docs.append(_fact(task, args))
        else:
            docs.append(base_document(make_example(task, template, args)))
    return docs
