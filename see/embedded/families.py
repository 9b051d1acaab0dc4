"""Task families of the embedded default: a generator of tasks and of pretraining text.

Each family has its own instruction and input style. ``STREAM`` families make
the demo's continual stream, ``NEGATIVE_POOL`` families make the general
negatives every expert learns to reject, and ``HELD_OUT`` families are never
trained on by any expert: they are the out-of-distribution queries. The base
model is pretrained on plain statements from all families (``pretraining_text``),
never on the instruction/answer format the experts learn.
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Callable

from see.data import Example, Task

Rng = random.Random

POS_ADJ = ["wonderful", "great", "lovely", "delicious", "friendly", "excellent", "superb", "charming",
           "pleasant", "brilliant", "fantastic", "perfect"]
NEG_ADJ = ["awful", "terrible", "bland", "rude", "dirty", "boring", "horrible", "poor", "dreadful",
           "disappointing", "noisy", "broken"]
REVIEW_NOUNS = ["soup", "service", "room", "staff", "movie", "hotel", "meal", "view", "music", "plot",
                "coffee", "waiter", "bed", "show", "pasta", "garden"]
REVIEW_TEMPLATES = ["the {n} was {a}", "the {n} was {a} and the {n2} was {a2}", "i found the {n} {a}",
                    "what a {a} {n}", "{a} {n} , {a2} {n2}", "our {n} felt {a}"]

TOPICS = {
    "sports": ["striker", "goal", "match", "coach", "team", "league", "tennis", "race", "stadium", "referee"],
    "weather": ["rain", "storm", "snow", "sunshine", "wind", "forecast", "clouds", "frost", "fog", "thunder"],
    "food": ["recipe", "bakery", "chef", "bread", "cheese", "dinner", "spices", "kitchen", "noodles", "pie"],
    "music": ["album", "concert", "band", "guitar", "singer", "song", "tour", "drummer", "piano", "choir"],
}
HEADLINE_TEMPLATES = ["{k} and {k2} in the news today", "new {k} surprises fans of {k2}",
                      "{k} expected this weekend says report", "big week for {k} after {k2}",
                      "{k} makes headlines again", "local {k} meets {k2}"]

ANTONYMS = [("hot", "cold"), ("big", "small"), ("fast", "slow"), ("up", "down"), ("happy", "sad"),
            ("open", "closed"), ("early", "late"), ("rich", "poor"), ("young", "old"), ("full", "empty"),
            ("hard", "soft"), ("high", "low"), ("long", "short"), ("strong", "weak"), ("wet", "dry"),
            ("loud", "quiet"), ("thick", "thin"), ("clean", "messy"), ("near", "far"), ("light", "dark"),
            ("win", "lose"), ("buy", "sell"), ("push", "pull"), ("top", "bottom"), ("day", "night"),
            ("true", "false"), ("first", "last"), ("inside", "outside"), ("before", "after"), ("left", "right")]

CAPITALS = [("france", "paris"), ("spain", "madrid"), ("italy", "rome"), ("germany", "berlin"),
            ("japan", "tokyo"), ("egypt", "cairo"), ("peru", "lima"), ("kenya", "nairobi"),
            ("norway", "oslo"), ("greece", "athens"), ("poland", "warsaw"), ("cuba", "havana"),
            ("chile", "santiago"), ("canada", "ottawa"), ("china", "beijing"), ("russia", "moscow")]
COLORS = [("banana", "yellow"), ("grass", "green"), ("sky", "blue"), ("snow", "white"), ("coal", "black"),
          ("tomato", "red"), ("orange", "orange"), ("lemon", "yellow"), ("leaf", "green"), ("cherry", "red"),
          ("milk", "white"), ("ocean", "blue"), ("plum", "purple"), ("carrot", "orange"), ("crow", "black")]
PLURALS = [("cat", "cats"), ("dog", "dogs"), ("box", "boxes"), ("child", "children"), ("mouse", "mice"),
           ("city", "cities"), ("foot", "feet"), ("bus", "buses"), ("tooth", "teeth"), ("car", "cars"),
           ("leaf", "leaves"), ("man", "men"), ("baby", "babies"), ("house", "houses"), ("knife", "knives")]
SOUNDS = [("dog", "woof"), ("cat", "meow"), ("cow", "moo"), ("duck", "quack"), ("sheep", "baa"),
          ("owl", "hoot"), ("snake", "hiss"), ("lion", "roar"), ("bee", "buzz"), ("frog", "croak"),
          ("horse", "neigh"), ("pig", "oink")]
FILLER = ["the", "a", "little", "red", "cat", "sat", "on", "mat", "we", "walked", "to", "town", "slowly",
          "bird", "sang", "in", "tree", "children", "played", "park", "old", "man", "read", "book"]


@dataclass(frozen=True)
class Family:
    name: str
    instruction: str
    #: rng -> (input, answer)
    make: Callable[[Rng], tuple[str, str]]
    #: rng -> a plain-text statement for pretraining (knowledge, not the task format).
    #: None for families added after the committed base was built: its corpus must not change.
    statement: Callable[[Rng], str] | None = None


def _review(rng: Rng, positive: bool) -> str:
    adjs = POS_ADJ if positive else NEG_ADJ
    a, a2 = rng.sample(adjs, 2)
    n, n2 = rng.sample(REVIEW_NOUNS, 2)
    return rng.choice(REVIEW_TEMPLATES).format(a=a, a2=a2, n=n, n2=n2)


def _sentiment(rng: Rng):
    positive = rng.random() < 0.5
    return _review(rng, positive), "positive" if positive else "negative"


def _sentiment_statement(rng: Rng):
    text, label = _sentiment(rng)
    return rng.choice([f"{text} . a {label} review .", f"{text} . that sounds {label} .", f"{text} ."])


def _headline(rng: Rng, topic: str) -> str:
    k, k2 = rng.sample(TOPICS[topic], 2)
    return rng.choice(HEADLINE_TEMPLATES).format(k=k, k2=k2)


def _topic(rng: Rng):
    topic = rng.choice(sorted(TOPICS))
    return _headline(rng, topic), topic


def _topic_statement(rng: Rng):
    text, topic = _topic(rng)
    return rng.choice([f"{text} . a story about {topic} .", f"{text} .", f"more {topic} news : {text} ."])


def _pair(pairs, both_ways=False):
    def make(rng: Rng):
        a, b = rng.choice(pairs)
        if both_ways and rng.random() < 0.5:
            a, b = b, a
        return a, b
    return make


def _antonym_statement(rng: Rng):
    a, b = _pair(ANTONYMS, True)(rng)
    return rng.choice([f"{a} is the opposite of {b} .", f"not {a} but {b} .", f"the opposite of {a} is {b} ."])


def _successor(rng: Rng):
    start = rng.randint(0, 95)
    length = rng.randint(2, 4)
    seq = list(range(start, start + length))
    return " ".join(map(str, seq)), str(seq[-1] + 1)


def _counting_statement(rng: Rng):
    start = rng.randint(0, 90)
    return " ".join(map(str, range(start, start + rng.randint(3, 9)))) + " ."


def _capital_statement(rng: Rng):
    c, k = rng.choice(CAPITALS)
    return rng.choice([f"{k} is the capital of {c} .", f"the capital of {c} is {k} ."])


def _color_statement(rng: Rng):
    o, c = rng.choice(COLORS)
    return rng.choice([f"the {o} is {c} .", f"a {c} {o} ."])


def _plural_statement(rng: Rng):
    s, p = rng.choice(PLURALS)
    return rng.choice([f"one {s} , two {p} .", f"many {p} and one {s} ."])


def _larger(rng: Rng):
    a, b = rng.sample(range(0, 100), 2)
    return f"{a} or {b}", str(max(a, b))


def _larger_statement(rng: Rng):
    a, b = rng.sample(range(0, 100), 2)
    return f"{max(a, b)} is more than {min(a, b)} ."


def _count(rng: Rng):
    n = rng.randint(2, 7)
    return " ".join(rng.choice(FILLER) for _ in range(n)), str(n)


def _count_statement(rng: Rng):
    text, n = _count(rng)
    return f"{text} ."


CATEGORIES = [("lion", "animal"), ("horse", "animal"), ("eagle", "animal"), ("apple", "fruit"), ("mango", "fruit"),
              ("grape", "fruit"), ("hammer", "tool"), ("saw", "tool"), ("wrench", "tool"), ("shark", "animal"),
              ("pear", "fruit"), ("drill", "tool")]
WORDS = ["garden", "river", "pencil", "window", "mountain", "ticket", "yellow", "basket", "candle", "forest",
         "silver", "rocket", "island", "button", "kettle", "orange"]


def _first_letter(rng: Rng):
    word = rng.choice(WORDS)
    return word, word[0]


def _repeat(rng: Rng):
    phrase = " ".join(rng.choice(FILLER) for _ in range(rng.randint(2, 4)))
    return phrase, f"{phrase} {phrase}"


def _sound_statement(rng: Rng):
    a, s = rng.choice(SOUNDS)
    return rng.choice([f"the {a} says {s} .", f"{s} goes the {a} ."])


# The order matters: the base's pretraining corpus draws from the families with statements in this order.
FAMILIES: dict[str, Family] = {f.name: f for f in [
    # the continual stream
    Family("sentiment", "Is the review positive or negative?", _sentiment, _sentiment_statement),
    Family("topic", "Which topic is the headline about: sports, weather, food or music?", _topic,
           _topic_statement),
    Family("antonym", "Give the opposite of the word.", _pair(ANTONYMS, both_ways=True), _antonym_statement),
    Family("successor", "Continue the sequence with the next number.", _successor, _counting_statement),
    # the general-negatives pool
    Family("capital", "Name the capital city of the country.", _pair(CAPITALS), _capital_statement),
    Family("color", "What color is it?", _pair(COLORS), _color_statement),
    Family("plural", "Write the plural of the noun.", _pair(PLURALS), _plural_statement),
    Family("category", "Is it an animal, a fruit or a tool?", _pair(CATEGORIES)),
    Family("first_letter", "What is the first letter of the word?", _first_letter),
    Family("repeat", "Repeat the words twice.", _repeat),
    # held out: out-of-distribution queries
    Family("larger", "Which number is larger?", _larger, _larger_statement),
    Family("count", "How many words are in the sentence?", _count, _count_statement),
    Family("sound", "What sound does the animal make?", _pair(SOUNDS), _sound_statement),
]}

STREAM = ("sentiment", "topic", "antonym", "successor")
NEGATIVE_POOL = ("capital", "color", "plural", "category", "first_letter", "repeat")
HELD_OUT = ("larger", "count", "sound")


def make_task(family: str, n: int, seed: int = 0, split: str = "train") -> Task:
    """``n`` examples of a family. Splits draw from independent seeded streams."""
    fam = FAMILIES[family]
    rng = random.Random(f"{family}/{split}/{seed}")
    examples = [Example(*_as_example(fam.make(rng))) for _ in range(n)]
    return Task(family, examples, fam.instruction, source=f"embedded:{family}")


def _as_example(pair: tuple[str, str]) -> tuple[str, tuple[str, ...]]:
    return pair[0], (pair[1],)


def general_negatives(n: int, seed: int = 0, families: tuple[str, ...] = NEGATIVE_POOL) -> list[tuple[str, str]]:
    """(instruction, input) queries of families outside the stream and the held-out set."""
    rng = random.Random(f"negatives/{seed}")
    out = []
    for i in range(n):
        fam = FAMILIES[families[i % len(families)]]
        out.append((fam.instruction, fam.make(rng)[0]))
    return out


def pretraining_text(n_statements: int, seed: int = 0) -> list[str]:
    """Plain statements from every family, the base model's pretraining corpus."""
    rng = random.Random(f"pretrain/{seed}")
    fams = [f for f in FAMILIES.values() if f.statement is not None]
    out = []
    for _ in range(n_statements):
        if rng.random() < 0.1:
            out.append(" ".join(rng.choice(FILLER) for _ in range(rng.randint(4, 10))) + " .")
        else:
            out.append(rng.choice(fams).statement(rng))
    return out
