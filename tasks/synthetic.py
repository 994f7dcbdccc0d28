"""A synthetic news-summarization task family with ground truth, written for prunescope.

Each record is drawn from seeded templates: a short news document whose facts are typed
(person, organisation, place, number, date), a reference summary that restates the key facts
in the document's own words, and ``facts``: every fact of the document as
``{"type", "value", "key"}`` (``key``: the reference states it). Because every fact is known,
a summary's hallucinated and omitted facts can be counted exactly
(:mod:`harness.scoring.ground_truth`).

``records(n, seed)`` is deterministic: the same seed gives the same records on every machine.
The built-in ``facts`` task (``tasks/data/facts.jsonl``) is ``records(FACTS_TASK_SIZE,
FACTS_TASK_SEED)``; the trained tiny models learn from other seeds (``TRAIN_SEED``), so the
task's documents are held out from their training.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

FACT_TYPES = ("person", "organisation", "place", "number", "date")
FACTS_TASK_SEED, FACTS_TASK_SIZE = 1000, 400
TRAIN_SEED = 7

FIRST = ("Anna", "Boris", "Clara", "David", "Elena", "Felix", "Greta", "Hugo", "Ida", "Jonas",
         "Karin", "Leo", "Maria", "Nils", "Olga", "Peter", "Rosa", "Simon", "Tara", "Viktor")
LAST = ("Berg", "Castell", "Dahl", "Ekman", "Falk", "Gray", "Holm", "Ivers", "Janssen", "Kovac",
        "Lind", "Moreau", "Nord", "Okafor", "Petrov", "Quist", "Rask", "Sato", "Torres", "Varga")
ORGANISATIONS = ("Norda Group", "Vesta Bank", "Orvik Labs", "Calder Foods", "Brightwell Energy",
                 "Tamsin Motors", "Kestrel Airlines", "Halden Steel", "Marlow Pharma",
                 "Ashby Media", "Corvane Logistics", "Pellam Textiles", "Rowan Insurance",
                 "Sable Mining", "Thornbury Games", "Ulver Shipping")
PLACES = ("Harwick", "Bellmoor", "Eastvale", "Dunmore", "Westbury", "Ravenna", "Oakridge",
          "Tollund", "Marsden", "Kirkby", "Lowell", "Fenwick", "Ashford", "Brannock",
          "Caldera", "Penrith")
MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August",
          "September", "October", "November", "December")

# A template: the key sentences (the reference restates them, shortened where a span is in
# brackets [...]) and detail sentences (shuffled after the key ones, never summarised).
# Slots: P person, O organisation, L place, N number, D date; a digit tells slots apart.
TEMPLATES = (
    {"key": ("{O1} will open {N1} new stores in {L1}[, its chief executive] {P1} said on {D1}.",
             "The plan will create {N2} jobs[ over the next two years]."),
     "detail": ("{P2}, an analyst at {O2}, said the move was expected.",
                "Shares in {O1} rose {N3} percent in {L2}.")},
    {"key": ("The council of {L1} voted on {D1} to build {N1} new homes[ near the river].",
             "Mayor {P1} said the work would cost {N2} million dollars."),
     "detail": ("The homes will be built by {O1}, a firm based in {L2}.",
                "{P2}, who leads a residents group, said people were worried about traffic.")},
    {"key": ("Researchers at {O1} in {L1} found that {N1} percent of patients recovered faster"
             "[ after daily walks].",
             "The study[, which was published on {D1},] was led by {P1} and followed {N2} adults."),
     "detail": ("{P2} of {O2} said the results should be tested again.",
                "A second trial will start in {L2} next year.")},
    {"key": ("{O1} signed the striker {P1} on {D1} for {N1} million dollars.",
             "{P1} scored {N2} goals[ for a club in {L1}] last season."),
     "detail": ("The coach {P2} said the team needed a new forward.",
                "The first match will be played in {L2} in front of {N3} fans.")},
    {"key": ("{O1} cancelled {N1} flights from {L1} on {D1}[ after a strike by ground staff].",
             "About {N2} passengers were affected, {P1} of {O1} said."),
     "detail": ("{P2}, a union leader, said talks would continue.",
                "Trains to {L2} were also delayed.")},
)
_SLOT = re.compile(r"\{([PNOLD])(\d)\}")


def records(n: int, seed: int) -> list[dict]:
    """``n`` records (``id``, ``document``, ``reference``, ``facts``) drawn with ``seed``."""
    rng = random.Random(seed)
    return [draw_event(rng).record(f"facts-{seed}-{i:04d}") for i in range(n)]


@dataclass(frozen=True)
class Event:
    """One drawn news event: a template's key and (shuffled) detail sentences, unfilled, and
    the value of each slot. The public unit of the grammar, for models trained on it."""

    key: tuple[str, ...]
    detail: tuple[str, ...]
    values: dict[str, str]

    def sentences(self, short: bool = False) -> list[str]:
        """The filled sentences, key ones first; ``short``: bracketed spans dropped."""
        form = _short if short else _full
        return [_fill(form(s), self.values) for s in (*self.key, *self.detail)]

    def facts(self) -> list[dict]:
        """Every fact of the document, ``{"type", "value", "key"}``, in order of mention."""
        reference = self.reference()
        facts = {}
        for letter, digit in _SLOT.findall(" ".join((*self.key, *self.detail))):
            kind, value = _slot_type(letter), self.values[letter + digit]
            facts.setdefault((kind, value), {"type": kind, "value": value,
                                             "key": _mentions(reference, value)})
        return list(facts.values())

    def document(self) -> str:
        return " ".join(self.sentences())

    def reference(self) -> str:
        return " ".join(self.sentences(short=True)[:len(self.key)])

    def record(self, record_id: str) -> dict:
        return {"id": record_id, "document": self.document(), "reference": self.reference(),
                "facts": self.facts()}


def draw_event(rng: random.Random) -> Event:
    """A template, its slot values and the order of its detail sentences, drawn from ``rng``."""
    template = rng.choice(TEMPLATES)
    values = _draw_slots(rng)
    details = list(template["detail"])
    rng.shuffle(details)
    return Event(tuple(template["key"]), tuple(details), values)


def _draw_slots(rng: random.Random) -> dict[str, str]:
    first, last = rng.sample(FIRST, 2), rng.sample(LAST, 2)
    people = [f"{first[0]} {last[0]}", f"{first[1]} {last[1]}"]
    organisations, places = rng.sample(ORGANISATIONS, 2), rng.sample(PLACES, 2)
    numbers = rng.sample(range(30, 100), 3)  # never a day of the month (1-28)
    return {"P1": people[0], "P2": people[1], "O1": organisations[0], "O2": organisations[1],
            "L1": places[0], "L2": places[1], "N1": str(numbers[0]), "N2": str(numbers[1]),
            "N3": str(numbers[2]), "D1": f"{rng.randint(1, 28)} {rng.choice(MONTHS)}"}


def _slot_type(letter: str) -> str:
    return {"P": "person", "O": "organisation", "L": "place", "N": "number", "D": "date"}[letter]


def _full(sentence: str) -> str:
    return sentence.replace("[", "").replace("]", "")


def _short(sentence: str) -> str:
    return re.sub(r"\[[^\]]*\]", "", sentence)


def _fill(sentence: str, values: dict[str, str]) -> str:
    return _SLOT.sub(lambda m: values[m.group(1) + m.group(2)], sentence)


def _mentions(text: str, value: str) -> bool:
    # The substring test first: corrupt() checks hundreds of pool values, and compiling a
    # pattern for each (more than re's cache holds) made it the trainers' slowest step.
    return value in text and re.search(rf"(?<![\w]){re.escape(value)}(?![\w])", text) is not None


def corrupt(text: str, document: str, facts: list[dict], rng: random.Random) -> str:
    """``text`` with one of its facts replaced by another of the same type: a value absent
    from ``document`` (a changed number or date, an invented entity) or, for entities, half
    the time another entity of the document (a swap). Raises ValueError when ``text`` states
    none of ``facts``."""
    stated = [f for f in facts if _mentions(text, f["value"])]
    if not stated:
        raise ValueError("the text states none of the facts")
    fact = rng.choice(stated)
    kind, value = fact["type"], fact["value"]
    same_type = [f["value"] for f in facts if f["type"] == kind and f["value"] != value]
    if kind in ("person", "organisation", "place") and same_type and rng.random() < 0.5:
        new = rng.choice(same_type)
    else:
        new = rng.choice([v for v in _pool(kind) if not _mentions(document, v)])
    return re.sub(rf"(?<![\w]){re.escape(value)}(?![\w])", new, text, count=1)


def slot_words() -> list[str]:
    """Every word a slot can take (first and last names, organisations, places, numbers,
    days, months), for a tokenizer that keeps each one whole."""
    return [*FIRST, *LAST, *ORGANISATIONS, *PLACES, *map(str, range(1, 100)), *MONTHS]


def _pool(kind: str) -> list[str]:
    return {"person": [f"{f} {l}" for f in FIRST for l in LAST], "organisation": list(ORGANISATIONS),
            "place": list(PLACES), "number": [str(n) for n in range(30, 100)],
            "date": [f"{d} {m}" for d in range(1, 29) for m in MONTHS]}[kind]
