"""Writes ladders/tasks.yaml (and the small ladders/tasks-small.yaml): base prompts with checkable answers.

Everything here was written in-project (no dataset): templates and word lists below, numbers drawn from a fixed
seed, so `python ladders/make_tasks.py` rewrites the same files. Six kinds (the prompt's `topic`): arithmetic,
factual, choice (labelled options under `Options:`, so option_order and the format rung apply), extraction,
classification and format-following instructions. Each prompt carries a curated paraphrase and, where a small
change of the task has a known answer, a curated semantic_small with its own answer; every other rung is generated
by the ladder builder. The mix is tuned so SmolLM2-135M-Instruct gets roughly half right (README "Task ladder").
"""

from __future__ import annotations

import random
import re
import sys
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
SEED = 20261205

CAPITALS = [("France", "Paris"), ("Japan", "Tokyo"), ("Italy", "Rome"), ("Spain", "Madrid"), ("Germany", "Berlin"),
            ("Egypt", "Cairo"), ("Russia", "Moscow"), ("Greece", "Athens"), ("Portugal", "Lisbon"),
            ("Ireland", "Dublin"), ("Norway", "Oslo"), ("Austria", "Vienna"), ("Poland", "Warsaw"),
            ("Kenya", "Nairobi"), ("Peru", "Lima"), ("Cuba", "Havana"), ("Thailand", "Bangkok"),
            ("Sweden", "Stockholm"), ("Canada", "Ottawa"), ("Australia", "Canberra"), ("Turkey", "Ankara"),
            ("Chile", "Santiago"), ("Hungary", "Budapest"), ("Finland", "Helsinki")]
FACTS = [  # (question, answer regex, paraphrase)
    ("How many legs does a spider have?", r"\b(8|eight)\b", "A spider has how many legs?"),
    ("How many days are there in a week?", r"\b(7|seven)\b", "A week has how many days?"),
    ("How many sides does a triangle have?", r"\b(3|three)\b", "A triangle has how many sides?"),
    ("How many months are there in a year?", r"\b(12|twelve)\b", "A year has how many months?"),
    ("What is the largest planet in the solar system?", r"(?i)\bjupiter\b", "Which planet in the solar system is the largest?"),
    ("What is the closest star to the Earth?", r"(?i)\bsun\b", "Which star is nearest to the Earth?"),
    ("What gas do plants take in from the air to make food?", r"(?i)carbon dioxide|\bCO2\b", "Which gas from the air do plants use to make food?"),
    ("What is frozen water called?", r"(?i)\bice\b", "What do we call water that has frozen?"),
    ("What is the chemical symbol for gold?", r"\bAu\b", "Which chemical symbol stands for gold?"),
    ("What is the chemical symbol for sodium?", r"\bNa\b", "Which chemical symbol stands for sodium?"),
    ("Which ocean is the largest on Earth?", r"(?i)\bpacific\b", "What is the largest ocean on Earth?"),
    ("How many hours are there in a day?", r"\b(24|twenty-four)\b", "A day has how many hours?"),
    ("How many minutes are there in an hour?", r"\b(60|sixty)\b", "An hour has how many minutes?"),
    ("What is the boiling point of water at sea level in degrees Celsius?", r"\b100\b", "At sea level, water boils at how many degrees Celsius?"),
    ("Who wrote the play Romeo and Juliet?", r"(?i)shakespeare", "Which writer wrote Romeo and Juliet?"),
    ("Which planet is known as the Red Planet?", r"(?i)\bmars\b", "What planet do people call the Red Planet?"),
    ("What is the tallest animal in the world?", r"(?i)giraffe", "Which animal is the tallest in the world?"),
    ("What do bees make?", r"(?i)\bhoney\b", "What food do bees produce?"),
    ("How many continents are there on Earth?", r"\b(7|seven)\b", "The Earth has how many continents?"),
    ("What is the freezing point of water in degrees Celsius?", r"\b0\b|\bzero\b", "At how many degrees Celsius does water freeze?"),
    ("Which organ pumps blood through the human body?", r"(?i)\bheart\b", "What organ pumps blood around the body?"),
    ("How many strings does a standard violin have?", r"\b(4|four)\b", "A standard violin has how many strings?"),
]
CATEGORIES = {
    "fruit": ["apple", "banana", "cherry", "mango", "pear", "plum", "grape", "peach"],
    "animal": ["horse", "tiger", "rabbit", "eagle", "whale", "sheep", "camel", "otter"],
    "vehicle": ["bicycle", "truck", "train", "boat", "bus", "tractor", "scooter", "van"],
    "musical instrument": ["piano", "violin", "guitar", "flute", "drum", "trumpet", "harp", "cello"],
    "tool": ["hammer", "wrench", "saw", "drill", "shovel", "chisel", "pliers", "ladder"],
    "colour": ["red", "blue", "green", "yellow", "purple", "orange", "brown", "pink"],
    "piece of clothing": ["shirt", "jacket", "sock", "scarf", "glove", "skirt", "sweater", "coat"],
    "metal": ["iron", "copper", "silver", "zinc", "nickel", "tin", "lead", "aluminium"],
}
NAMES = ["Maria Lopez", "Tom Baker", "Aiko Tanaka", "Liam Walsh", "Sara Nilsson", "Omar Haddad", "Nina Petrova",
         "Jonas Berg", "Priya Shah", "Lucas Moreau", "Emma Novak", "Diego Ramos", "Hana Kim", "Felix Wagner",
         "Zoe Carter", "Ivan Horvat", "Leila Amini", "Paul Dubois"]
CITIES = ["Valencia", "Leeds", "Osaka", "Cork", "Uppsala", "Beirut", "Kazan", "Bergen", "Pune", "Lyon", "Brno",
          "Quito", "Busan", "Graz", "Denver", "Split", "Shiraz", "Nantes"]
JOBS = ["teacher", "baker", "nurse", "pilot", "farmer", "painter", "chemist", "carpenter", "librarian"]
POSITIVE = ["The soup was warm and full of flavour, and the staff were kind.", "I loved this phone; the battery lasts all week.",
            "A wonderful film with a moving story and great actors.", "The hotel room was clean, quiet and comfortable.",
            "Fast delivery, and the shoes fit perfectly.", "This book was a joy to read from start to finish.",
            "The teacher explained everything clearly and patiently.", "Great value: the blender works better than expected.",
            "Our guide was friendly and the tour was fantastic.", "The new update made the app faster and easier to use.",
            "Delicious pizza and a lovely view of the harbour.", "The concert was brilliant and the sound was perfect."]
NEGATIVE = ["The soup was cold and tasteless, and the waiter was rude.", "The phone broke after two days and support never replied.",
            "A boring film with a silly plot and wooden acting.", "The hotel room was dirty and the bed was broken.",
            "The package arrived late and the shoes were the wrong size.", "This book was dull and I gave up halfway.",
            "The lesson was confusing and far too rushed.", "Poor value: the blender stopped working within a week.",
            "Our guide was late and the tour was a waste of money.", "The update made the app slow and it keeps crashing.",
            "Burnt pizza and a long wait for a table.", "The concert started an hour late and the sound was awful."]
TOPICS = [("The striker scored twice in the final minutes of the match.", "sports"),
          ("The goalkeeper saved a penalty in the cup game.", "sports"), ("She won the marathon in record time.", "sports"),
          ("The team signed a new coach for next season.", "sports"), ("The tennis final went to five sets.", "sports"),
          ("Parliament voted on the new tax bill today.", "politics"), ("The minister resigned after the election.", "politics"),
          ("The president met foreign leaders at the summit.", "politics"), ("Voters chose a new mayor on Sunday.", "politics"),
          ("The senate rejected the proposed law.", "politics"), ("Heavy rain and strong winds are expected tomorrow.", "weather"),
          ("It will be sunny and warm all weekend.", "weather"), ("Snow is forecast for the mountains tonight.", "weather"),
          ("A thick fog covered the city this morning.", "weather"), ("Temperatures will drop below freezing overnight.", "weather"),
          ("Add the flour and stir until the dough is smooth.", "cooking"), ("Fry the onions slowly until they turn golden.", "cooking"),
          ("Bake the cake for forty minutes in a hot oven.", "cooking"), ("Season the soup with salt and pepper.", "cooking"),
          ("Chop the carrots and boil them for ten minutes.", "cooking")]
WORDS = ["garden", "window", "pencil", "rocket", "silver", "basket", "candle", "jungle", "marble", "orange", "planet",
         "tunnel", "violet", "wallet", "dragon", "kitten"]


def num(n: int) -> str:
    """The number ``n`` anywhere in the answer, standing alone: the model restates the operands first ("12 + 17 =
    29"), so the `number` check (the first number) would read an operand."""
    return rf"(?<![\d.]){n}(?![\d.])"


def prompt(pid, topic, text, answer, check, paraphrase, semantic=None):
    curated = {"paraphrase": [paraphrase]}
    if semantic is not None:
        stext, sanswer, kind = semantic
        curated["semantic_small"] = [{"text": stext, "edit_kind": kind, "answer": sanswer}]
    return {"id": pid, "topic": topic, "text": text, "answer": answer, "check": check, "curated": curated}


def arithmetic(rng):
    out = []
    for i in range(14):
        a, b = rng.randint(11, 79), rng.randint(11, 19)
        out.append(prompt(f"add-{i}", "arithmetic", f"What is {a} plus {b}?", num(a + b), "regex",
                          f"Add {a} and {b}. What do you get?", (f"What is {a} plus {b + 1}?", num(a + b + 1), "operand_changed")))
    for i in range(10):
        a, b = rng.randint(30, 99), rng.randint(2, 9)
        out.append(prompt(f"sub-{i}", "arithmetic", f"What is {a} minus {b}?", num(a - b), "regex",
                          f"Subtract {b} from {a}. What is the result?", (f"What is {a} minus {b + 1}?", num(a - b - 1), "operand_changed")))
    for i in range(10):
        a, b = rng.randint(2, 9), rng.randint(2, 9)
        out.append(prompt(f"mul-{i}", "arithmetic", f"What is {a} times {b}?", num(a * b), "regex",
                          f"Multiply {a} by {b}. What is the product?", (f"What is {a} times {b + 1}?", num(a * (b + 1)), "operand_changed")))
    things = ["apples", "books", "stamps", "marbles", "coins", "shells"]
    for i in range(8):
        name = NAMES[i].split()[0]
        a, b, thing = rng.randint(3, 15), rng.randint(2, 9), things[i % len(things)]
        out.append(prompt(f"story-{i}", "arithmetic",
                          f"{name} has {a} {thing} and gets {b} more. How many {thing} does {name} have now?", num(a + b), "regex",
                          f"{name} starts with {a} {thing} and then receives {b} more. How many {thing} are there in total?",
                          (f"{name} has {a} {thing} and gets {b + 2} more. How many {thing} does {name} have now?",
                           num(a + b + 2), "operand_changed")))
    return out


def factual(rng):
    out = []
    for i, (country, city) in enumerate(CAPITALS):
        other = CAPITALS[(i + 7) % len(CAPITALS)]
        out.append(prompt(f"capital-{country.lower()}", "factual", f"What is the capital of {country}?", rf"\b{city}\b", "regex",
                          f"Which city is the capital of {country}?",
                          (f"What is the capital of {other[0]}?", rf"\b{other[1]}\b", "country_changed")))
    for i, (q, a, para) in enumerate(FACTS):
        out.append(prompt(f"fact-{i}", "factual", q, a, "regex", para))
    return out


def choice(rng):
    out, cats = [], list(CATEGORIES)
    for i in range(40):
        cat = cats[i % len(cats)]
        right = CATEGORIES[cat][(i // len(cats)) % len(CATEGORIES[cat])]
        others = [c for c in cats if c != cat]
        rng.shuffle(others)
        options = [right] + [rng.choice(CATEGORIES[c]) for c in others[:3]]
        rng.shuffle(options)
        letter = "ABCD"[options.index(right)]
        art = "an" if cat[0] in "aeiou" else "a"
        body = "\n".join(f"{lab}. {opt}" for lab, opt in zip("ABCD", options))
        text = f"Question: Which of these is {art} {cat}?\nOptions:\n{body}\nAnswer with the letter of the correct option."
        para = f"Question: Pick the option that is {art} {cat}.\nOptions:\n{body}\nReply with the option's letter."
        out.append(prompt(f"choice-{i}", "choice", text, letter, "choice", para))
    return out


def extraction(rng):
    out = []
    for i in range(12):
        name, city, year = NAMES[i], CITIES[i], rng.randint(1950, 2005)
        job = JOBS[i % len(JOBS)]
        text = f"Text: {name} was born in {city} in {year} and works as a {job}.\nQuestion: In which year was {name} born?"
        out.append(prompt(f"extract-year-{i}", "extraction", text, rf"\b{year}\b", "regex",
                          f"Text: {name} was born in {city} in {year} and works as a {job}.\nQuestion: What is {name}'s year of birth?",
                          (f"Text: {name} was born in {city} in {year} and works as a {job}.\nQuestion: In which city was {name} born?",
                           rf"(?i)\b{city}\b", "field_changed")))
    for i in range(12):
        name, city = NAMES[(i + 5) % len(NAMES)], CITIES[(i + 9) % len(CITIES)]
        job = JOBS[(i + 2) % len(JOBS)]
        text = f"Text: Last spring {name} moved to {city} to start a new job as a {job}.\nQuestion: Which city did {name} move to?"
        out.append(prompt(f"extract-city-{i}", "extraction", text, rf"(?i)\b{city}\b", "regex",
                          f"Text: Last spring {name} moved to {city} to start a new job as a {job}.\nQuestion: Where did {name} move?",
                          (f"Text: Last spring {name} moved to {city} to start a new job as a {job}.\nQuestion: What is {name}'s new job?",
                           rf"(?i)\b{job}\b", "field_changed")))
    for i in range(10):
        first, last = NAMES[(i + 3) % len(NAMES)].lower().split()
        mail = f"{first}.{last}@example.org"
        text = f"Text: For questions about the order, write to {mail} before Friday.\nQuestion: What is the e-mail address in the text?"
        out.append(prompt(f"extract-mail-{i}", "extraction", text, "(?i)" + re.escape(mail), "regex",
                          f"Text: For questions about the order, write to {mail} before Friday.\nQuestion: Which e-mail address should people write to?"))
    return out


def classification(rng):
    out = []
    for i, (pos, neg) in enumerate(zip(POSITIVE, NEGATIVE)):
        for sign, review in (("positive", pos), ("negative", neg)):
            other = "negative" if sign == "positive" else "positive"
            text = f"Review: {review}\nIs this review positive or negative? Answer with one word."
            out.append(prompt(f"sentiment-{sign}-{i}", "classification", text, rf"(?i)\b{sign}\b(?!.*\b{other}\b)", "regex",
                              f"Review: {review}\nDoes this review sound positive or negative? Reply with one word."))
    for i, (sentence, label) in enumerate(TOPICS):
        text = f"Sentence: {sentence}\nTopic: sports, politics, weather or cooking? Answer with one word."
        out.append(prompt(f"topic-{i}", "classification", text, rf"(?i)\b{label}\b", "regex",
                          f"Sentence: {sentence}\nWhich topic is this: sports, politics, weather or cooking? Reply with one word."))
    return out


def formatting(rng):
    out = []
    for i, w in enumerate(WORDS[:10]):
        other = WORDS[(i + 5) % len(WORDS)]
        out.append(prompt(f"upper-{w}", "format", f"Write the word {w} in capital letters.", rf"\b{w.upper()}\b", "regex",
                          f"Write {w} in all caps.", (f"Write the word {other} in capital letters.", rf"\b{other.upper()}\b", "word_changed")))
    for i, w in enumerate(WORDS[6:16]):
        n = 2 + i % 3
        rep = " ".join([w] * n)
        out.append(prompt(f"repeat-{w}", "format", f"Repeat the word {w} {n} times, separated by spaces.",
                          rf"(?i)(?<!{w} )\b{rep}\b(?! {w})", "regex",
                          f"Say the word {w} {n} times in a row with spaces between them.",
                          (f"Repeat the word {w} {n + 1} times, separated by spaces.",
                           rf"(?i)(?<!{w} )\b{' '.join([w] * (n + 1))}\b(?! {w})", "count_changed")))
    for i in range(8):
        a = 1 + i
        b = a + 4
        seq = r",\s*".join(str(k) for k in range(a, b + 1))
        out.append(prompt(f"count-{a}-{b}", "format", f"List the whole numbers from {a} to {b}, separated by commas.", seq, "regex",
                          f"Count from {a} to {b} and separate the numbers with commas."))
    for i, w in enumerate(WORDS[:8]):
        out.append(prompt(f"first-letter-{w}", "format", f"What is the first letter of the word {w}? Answer with one letter.",
                          rf"(?i)(^|[^a-z]){w[0]}([^a-z]|$)", "regex", f"Which letter does the word {w} start with? Give just the letter."))
    return out


def build() -> list[dict]:
    rng = random.Random(SEED)
    prompts = [*arithmetic(rng), *factual(rng), *choice(rng), *extraction(rng), *classification(rng), *formatting(rng)]
    ids = [p["id"] for p in prompts]
    assert len(ids) == len(set(ids)), "duplicate prompt ids"
    return prompts


def small(prompts: list[dict], per_kind: int) -> list[dict]:
    """The first ``per_kind`` prompts of each kind (the cheap ladder `make run` and CI give the real model)."""
    seen: dict[str, int] = {}
    out = []
    for p in prompts:
        if seen.get(p["topic"], 0) < per_kind:
            seen[p["topic"]] = seen.get(p["topic"], 0) + 1
            out.append(p)
    return out


SMALL_PER_KIND = 6
SMALL_KINDS = ("double_space", "comma_inserted", "final_question", "newline_in_sentence", "lowercase_all",
               "format_separator", "keyboard_typo", "lexicon", "politeness_wrapper", "option_order")
"""One kind per rung (two for punctuation: prompts end with '?' or '.'), so the make-run ladder stays cheap."""
TASK_KINDS = SMALL_KINDS + ("zero_width_space", "whitespace_run", "word_uppercased", "dropped_letter", "filler_word",
                            "tautology_suffix")
"""The model-selection ladder: two kinds on noop_format, punctuation, structural, casing and typo, three on filler
(its edits differ most from one another: with two its MDE was 0.0605), so those rungs hold two or three pairs per
prompt. A prompt's two pairs average out part of what one edit does to one output, which
lowers the spread of per-prompt differences and with it the minimum detectable difference (issue 29)."""

HEADER = """# GENERATED by ladders/make_tasks.py (edit that file, then run it): {description}
"""


def write(path: Path, name: str, description: str, prompts: list[dict], extra: dict | None = None) -> None:
    doc = {"ladder": name, "description": description, **(extra or {}), "prompts": prompts}
    text = HEADER.format(description=description) + yaml.safe_dump(doc, sort_keys=False, allow_unicode=True, width=200)
    path.write_text(text, encoding="utf-8")


def main() -> int:
    prompts = build()
    kinds = sorted({p["topic"] for p in prompts})
    counts = ", ".join(f"{k} {sum(p['topic'] == k for p in prompts)}" for k in kinds)
    # Two or three kinds on the six generated rungs where they apply to every prompt, one elsewhere: ~17 pairs per prompt;
    # `stabprobe ladder build --prompts` (or edit_kinds) makes every kind when wanted.
    write(HERE / "tasks.yaml", "tasks", f"{len(prompts)} task prompts with checkable answers ({counts}), two edit "
          "kinds on noop_format, punctuation, structural, casing and typo, three on filler", prompts,
          {"edit_kinds": list(TASK_KINDS)})
    few = small(prompts, SMALL_PER_KIND)
    write(HERE / "tasks-small.yaml", "tasks-small",
          f"{len(few)} prompts of ladders/tasks.yaml ({SMALL_PER_KIND} per kind), one edit kind per rung: "
          "the real model's ladder in make run", few, {"edit_kinds": list(SMALL_KINDS)})
    print(f"tasks.yaml: {len(prompts)} prompts ({counts}); tasks-small.yaml: {len(few)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
