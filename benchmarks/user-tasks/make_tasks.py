"""Write the user-task suite: small tasks as a user would bring them to `see add-expert`.

    python benchmarks/user-tasks/make_tasks.py            # writes data/ and tasks.json beside this file

Plain Python, seeded and deterministic: running it again rewrites the same bytes.
Every vocabulary and template is written here by hand for this project; none
comes from `see/embedded/families.py`, whose task families (sentiment, topic,
antonym, successor, capital, color, plural, category, first_letter, repeat,
larger, count, sound) are avoided on purpose, so that the suite tests tasks
the project's generated world has never seen.

Three groups:
- `embedded`: string manipulation, arithmetic, keyword classification and
  extraction, short answers, for the embedded base;
- `english`: classification and extraction in natural English sentences, for
  a pretrained English base (`--base minilm`);
- `ood`: query families outside both groups, to check that they reach the fallback.

The instruction is part of each input, phrased several ways, as users write it.
Train and test files never share an input.
"""
from __future__ import annotations

import csv
import json
import random
import string
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

HERE = Path(__file__).resolve().parent
DATA = HERE / "data"
SEED = 20260

Rng = random.Random
#: rng -> (input, acceptable answers; the first is the training target)
Maker = Callable[[Rng], tuple[str, list[str]]]


@dataclass(frozen=True)
class Spec:
    name: str
    group: str  # embedded | english | ood
    #: "jsonl", or "csv" with the two column names below
    format: str
    make: Maker
    what: str
    n_train: int = 300
    n_test: int = 100
    input_field: str = "input"
    output_field: str = "output"
    labels: list[str] = field(default_factory=list)


# ----------------------------------------------------------------------------- vocabularies

# Words of 4-7 letters for the string tasks; chosen to stay clear of the embedded families' vocabulary.
WORDS = """
planet tiger lamp bridge marble violin pepper tunnel wagon jacket pillow saddle ladder mirror harbor meadow
canyon copper velvet puzzle anchor falcon cactus walnut turnip lizard parrot rabbit monkey zebra camel otter
badger beaver hornet spider trout salmon oyster lobster magnet pocket helmet castle statue temple valley
desert glacier comet galaxy lantern compass blanket carpet curtain shelf drawer bottle funnel shovel rake
bucket sponge ribbon thread needle zipper collar sleeve boots sandal scarf mitten wallet purse
hinge bolt rivet gravel pebble boulder cliff marsh swamp prairie tundra lagoon reef shore dune crater
pilot sailor tailor baker farmer miner barber ranger judge nurse clerk poet actor mayor
""".split()

NAMES = ["ana", "ben", "carla", "dev", "elif", "femi", "goran", "hana", "ivan", "jaya", "kofi", "lena", "mateo",
         "nora", "omar", "priya", "quinn", "rosa", "sami", "tara", "uma", "vik", "wen", "yara", "zane", "lucas",
         "mila", "noah", "sofia", "arjun"]
DOMAINS = ["mail.com", "shop.io", "acme.org", "post.net", "inbox.co", "corp.com", "web.de", "fast.io"]

CITIES = ["lisbon", "seville", "dublin", "vienna", "prague", "bergen", "boston", "denver", "austin", "seattle",
          "toronto", "chicago", "sydney", "mumbai", "lagos", "mombasa", "seoul", "osaka", "cusco", "quito",
          "porto", "milan", "munich", "zurich", "geneva", "krakow", "helsinki", "dallas", "miami", "montreal"]

WEEKDAYS = ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]


def _cap(rng: Rng, text: str) -> str:
    """Users capitalise inconsistently."""
    return text[0].upper() + text[1:] if rng.random() < 0.6 else text


def _quote(rng: Rng, word: str) -> str:
    noun = "the phrase {}" if " " in word else "the word {}"
    return rng.choice(['"{}"', "'{}'", "{}", noun]).format(word)


# ----------------------------------------------------------------------------- embedded group

def reverse_word(rng: Rng):
    w = rng.choice(WORDS)
    q = rng.choice(["reverse {w}", "spell {w} backwards", "write {w} in reverse order",
                    "what is {w} written backwards?", "reverse the letters of {w}", "{w} reversed is?"])
    return _cap(rng, q.format(w=_quote(rng, w))), [w[::-1]]


def remove_vowels(rng: Rng):
    w = rng.choice(WORDS)
    q = rng.choice(["remove the vowels from {w}", "drop every vowel in {w}", "{w} without vowels?",
                    "delete the vowels of {w}", "write {w} with no vowels"])
    return _cap(rng, q.format(w=_quote(rng, w))), ["".join(c for c in w if c not in "aeiou")]


def last_letter(rng: Rng):
    w = rng.choice(WORDS)
    q = rng.choice(["what is the last letter of {w}?", "last letter of {w}", "which letter does {w} end with?",
                    "{w} ends in which letter?", "give me the final letter of {w}"])
    return _cap(rng, q.format(w=_quote(rng, w))), [w[-1]]


def count_vowels(rng: Rng):
    # two-word phrases half the time, so that the answers spread over more than one or two counts
    w = rng.choice(WORDS) if rng.random() < 0.5 else f"{rng.choice(WORDS)} {rng.choice(WORDS)}"
    q = rng.choice(["how many vowels are in {w}?", "count the vowels in {w}", "number of vowels in {w}?",
                    "{w} has how many vowels?", "vowel count of {w}"])
    n = sum(c in "aeiou" for c in w)
    return _cap(rng, q.format(w=_quote(rng, w))), [str(n)]


def add_numbers(rng: Rng):
    a, b = rng.randint(10, 999), rng.randint(10, 999)
    q = rng.choice(["what is {a} + {b}?", "{a} plus {b}", "add {a} and {b}", "sum of {a} and {b}?",
                    "{a}+{b}=", "what do you get if you add {b} to {a}?", "calculate {a} + {b}"])
    return _cap(rng, q.format(a=a, b=b)), [str(a + b)]


def subtract_numbers(rng: Rng):
    a, b = sorted(rng.sample(range(10, 1000), 2), reverse=True)
    q = rng.choice(["what is {a} - {b}?", "{a} minus {b}", "subtract {b} from {a}", "{a}-{b}=",
                    "take {b} away from {a}", "difference between {a} and {b}?"])
    return _cap(rng, q.format(a=a, b=b)), [str(a - b)]


def even_odd(rng: Rng):
    n = rng.randint(10, 9999)
    q = rng.choice(["is {n} even or odd?", "{n}: odd or even?", "tell me if {n} is even or odd",
                    "even or odd: {n}", "parity of {n} (even/odd)?"])
    return _cap(rng, q.format(n=n)), ["even" if n % 2 == 0 else "odd"]


_TICKETS = {
    "billing": ["i was charged twice for order {o}", "my card was billed ${m} but i cancelled",
                "the invoice for {o} shows the wrong amount", "still waiting on my refund of ${m}",
                "why is there a ${m} fee on my statement", "please send a receipt for order {o}",
                "my payment failed but the money left my bank", "can i get a refund for order {o}"],
    "shipping": ["my parcel {o} has not arrived after {d} days", "the tracking for {o} has not moved in {d} days",
                 "the courier left my package at the wrong address", "order {o} arrived damaged in the box",
                 "when will order {o} be delivered", "can you change the delivery address for {o}",
                 "the box came with one item missing", "my package is stuck at customs for {d} days"],
    "account": ["i cannot log in to my account", "please reset my password",
                "how do i change the email on my profile", "i want to delete my account",
                "my account got locked after {d} tries", "the login code never reaches my phone",
                "someone else signed in to my account", "how do i update my username"],
}


def ticket_department(rng: Rng):
    label = rng.choice(sorted(_TICKETS))
    body = rng.choice(_TICKETS[label]).format(o=f"#{rng.randint(1000, 99999)}", m=rng.randint(5, 400),
                                              d=rng.randint(2, 30))
    body = rng.choice(["", "hi, ", "hello team, ", "urgent: ", "help! "]) + body
    body += rng.choice(["", ".", ", thanks", ". please help", "!"])
    q = rng.choice(["ticket: {t}\nqueue (billing, shipping or account)?", "route this ticket: {t}",
                    "billing, shipping or account? {t}", "which department should take this: {t}",
                    "classify the support ticket: {t}"])
    return q.format(t=body), [label]


def extract_city(rng: Rng):
    city = rng.choice(CITIES)
    s = rng.choice(["i fly to {c} on friday", "our new office is in {c}", "she grew up in {c}",
                    "the conference moved to {c} this year", "ship it to our {c} warehouse",
                    "we spent a week in {c} last summer", "the {c} team will join the call"])
    q = rng.choice(["which city is mentioned? {s}", "extract the city: {s}", "{s} - what city?",
                    "name the city in this sentence: {s}", "city in \"{s}\"?"])
    return _cap(rng, q.format(s=s.format(c=_cap(rng, city)))), [city]


def extract_email(rng: Rng):
    email = f"{rng.choice(NAMES)}@{rng.choice(DOMAINS)}"
    s = rng.choice(["please write to {e} about the invoice", "contact {e} for the keys",
                    "my email is {e}", "send the slides to {e} by noon", "questions go to {e}",
                    "reach me at {e} after six", "cc {e} on the reply"])
    q = rng.choice(["what is the email address in: {s}", "extract the email: {s}", "{s}. email?",
                    "pull out the email address: {s}", "which email is given? {s}"])
    return _cap(rng, q.format(s=s.format(e=email))), [email]


# ----------------------------------------------------------------------------- english group (minilm)

_INTENTS = {
    "alarm": ["Wake me up at {t} tomorrow.", "Set an alarm for {t}, please.", "Can you get me up at {t}?",
              "I need an alarm at {t} on {w}.", "Please ring at {t} so I don't oversleep."],
    "directions": ["How do I get to the {p} from here?", "What's the fastest route to {c}?",
                   "Give me walking directions to the nearest {p}.", "Which way is the {p}?",
                   "Navigate me to {c} avoiding tolls.", "How far is the {p} by car?"],
    "shopping": ["Add {i} to my grocery list.", "Put {i} on the shopping list.",
                 "Remind me to buy {i} when I'm at the store.", "I need to order {i}.",
                 "Add {i} to the list for {w}."],
    "call": ["Call my mother on her mobile.", "Phone {n} and say I'm running late.",
             "Dial the dentist's office for me.", "Can you ring {n} back?", "Start a video call with {n}."],
}


_PLACES = ["train station", "pharmacy", "museum", "airport", "city library", "post office", "bus stop", "cinema",
           "hospital", "town hall"]
_ITEMS = ["eggs and butter", "two cartons of milk", "batteries", "a new phone charger", "dish soap", "rice",
          "coffee filters", "paper towels", "a birthday card", "oat milk", "toothpaste", "light bulbs"]


def en_intent(rng: Rng):
    label = rng.choice(sorted(_INTENTS))
    text = rng.choice(_INTENTS[label]).format(t=f"{rng.randint(5, 11)}:{rng.choice(['00', '15', '30', '45'])}",
                                              c=rng.choice(CITIES).title(), w=rng.choice(WEEKDAYS).title(),
                                              n=rng.choice(NAMES).title(), p=rng.choice(_PLACES),
                                              i=rng.choice(_ITEMS))
    q = rng.choice(["What does the user want: alarm, directions, shopping or call?\n{x}",
                    "Intent of this request (alarm / directions / shopping / call): {x}",
                    "{x}\nWhich intent is this?", "Classify the assistant command: {x}"])
    return q.format(x=text), [label]


_DEPARTMENTS = {
    "hr": ["I'd like to know how many vacation days I have left this year.",
           "Could someone explain how parental leave works here?",
           "My payslip for {m} is missing my overtime hours.",
           "I want to update my emergency contact details.",
           "When does the new hire orientation start?"],
    "it": ["My laptop won't connect to the office Wi-Fi since {w}.",
           "The printer on the third floor keeps jamming.",
           "I forgot my VPN password and can't work from home.",
           "Outlook crashes every time I open an attachment.",
           "Can I get a second monitor for my desk?"],
    "legal": ["Please review the contract with the new supplier before {w}.",
              "Do we need a non-disclosure agreement for this partner?",
              "A customer is threatening to sue us over a late delivery.",
              "Can we use this photo on our website without permission?",
              "We received a trademark complaint about our logo."],
    "sales": ["A client wants a quote for five hundred units by {w}.",
              "Can we offer a discount to a returning customer?",
              "I have a lead from the trade fair who wants a demo.",
              "The distributor in {c} asked about bulk pricing.",
              "How do I log a new deal in the pipeline?"],
}


def en_department(rng: Rng):
    label = rng.choice(sorted(_DEPARTMENTS))
    text = rng.choice(_DEPARTMENTS[label]).format(w=rng.choice(WEEKDAYS).title(), c=rng.choice(CITIES).title(),
                                                  m=rng.choice(["March", "April", "June", "October"]))
    greeting = rng.choice(["", "Hi, ", "Hello, ", "Quick question: ", "Good morning. "])
    if greeting.endswith(", "):
        text = text[0].lower() + text[1:]
    text = greeting + text
    q = rng.choice(["Which team should handle this message: hr, it, legal or sales?\n{x}",
                    "Forward to hr, it, legal or sales? {x}", "{x}\nDepartment?",
                    "Who should answer this email (hr/it/legal/sales)? {x}"])
    return q.format(x=text), [label]


def en_city(rng: Rng):
    city = rng.choice(CITIES)
    s = rng.choice(["My sister moved to {c} last spring.", "We're opening a second store in {c} next month.",
                    "The flight to {c} was delayed by two hours.", "He has lived in {c} since he was a child.",
                    "The band starts its tour in {c} on {w}.", "Our supplier ships everything from {c}.",
                    "I'll be in {c} for a workshop on {w}."])
    q = rng.choice(["Which city is mentioned in this sentence? {s}", "Extract the city name: {s}",
                    "{s}\nWhat city is it about?", "Find the city: {s}"])
    return q.format(s=s.format(c=city.title(), w=rng.choice(WEEKDAYS).title())), [city]


def en_weekday(rng: Rng):
    day = rng.choice(WEEKDAYS)
    s = rng.choice(["Let's push the demo to {d} afternoon.", "The plumber can only come on {d}.",
                    "I'm off work on {d}, so call me then.", "The report is due by {d} at noon.",
                    "We usually play football on {d} evenings.", "{n}'s flight lands early on {d} morning.",
                    "Can we move our call with {n} to {d}?", "{n} said the parcel should arrive on {d}.",
                    "The gym is closed every {d} in August.", "{n} and I are meeting for lunch on {d}."])
    s = rng.choice(["", "Hi! ", "Quick note: ", "FYI, "]) + s
    q = rng.choice(["Which day of the week is mentioned? {s}", "What day is it about? {s}",
                    "{s}\nDay of the week?", "Extract the weekday from: {s}"])
    return q.format(s=s.format(d=day.title(), n=rng.choice(NAMES).title())), [day]


# ----------------------------------------------------------------------------- out-of-distribution queries

def ood_minutes(rng: Rng):
    h = rng.randint(2, 24)
    q = rng.choice(["how many minutes are in {h} hours?", "convert {h} hours to minutes",
                    "{h} hours is how many minutes?"])
    return _cap(rng, q.format(h=h)), [str(60 * h)]


def ood_next_letter(rng: Rng):
    c = rng.choice(string.ascii_lowercase[:-1])
    q = rng.choice(["which letter comes after {c} in the alphabet?", "what letter follows {c}?",
                    "next letter after {c}?"])
    return _cap(rng, q.format(c=c)), [chr(ord(c) + 1)]


_UNITS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven",
          "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen"]
_TENS = ["", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"]


def ood_number_words(rng: Rng):
    n = rng.randint(0, 99)
    if n < 20 or n % 10 == 0:
        answers = [_UNITS[n] if n < 20 else _TENS[n // 10]]
    else:
        # exact match drops the hyphen ("fortytwo"), so the spaced spelling is listed as well
        answers = [f"{_TENS[n // 10]}-{_UNITS[n % 10]}", f"{_TENS[n // 10]} {_UNITS[n % 10]}"]
    q = rng.choice(["write {n} in words", "how do you spell the number {n}?", "{n} in letters?"])
    return _cap(rng, q.format(n=n)), answers


SPECS = [
    Spec("reverse_word", "embedded", "jsonl", reverse_word, "reverse a word (string manipulation)"),
    Spec("remove_vowels", "embedded", "csv", remove_vowels, "drop the vowels of a word (string manipulation)"),
    Spec("last_letter", "embedded", "jsonl", last_letter, "last letter of a word"),
    Spec("count_vowels", "embedded", "csv", count_vowels,
         "count the vowels of a word; CSV columns `question,answer`", input_field="question",
         output_field="answer"),
    Spec("add_numbers", "embedded", "jsonl", add_numbers, "add two integers in 10-999"),
    Spec("subtract_numbers", "embedded", "csv", subtract_numbers, "subtract two integers in 10-999 (result >= 1)"),
    Spec("even_odd", "embedded", "jsonl", even_odd, "parity of an integer in 10-9999", labels=["even", "odd"]),
    Spec("ticket_department", "embedded", "csv", ticket_department,
         "route a support ticket by its keywords; CSV columns `text,label`", input_field="text",
         output_field="label", labels=sorted(_TICKETS)),
    Spec("extract_city", "embedded", "jsonl", extract_city, "pull the city out of a sentence"),
    Spec("extract_email", "embedded", "jsonl", extract_email, "pull the email address out of a sentence"),
    Spec("en_intent", "english", "jsonl", en_intent, "assistant command -> alarm/directions/shopping/call",
         labels=sorted(_INTENTS)),
    Spec("en_department", "english", "csv", en_department,
         "office message -> hr/it/legal/sales; CSV columns `message,team`", input_field="message",
         output_field="team", labels=sorted(_DEPARTMENTS)),
    Spec("en_city", "english", "jsonl", en_city, "extract the city from an English sentence"),
    Spec("en_weekday", "english", "csv", en_weekday, "extract the weekday from an English sentence"),
    Spec("ood_minutes", "ood", "jsonl", ood_minutes, "hours to minutes", n_train=0),
    Spec("ood_next_letter", "ood", "jsonl", ood_next_letter, "the next letter of the alphabet", n_train=0),
    Spec("ood_number_words", "ood", "jsonl", ood_number_words, "a number 0-99 in words", n_train=0),
]


# ----------------------------------------------------------------------------- writing

def generate(spec: Spec) -> tuple[list[tuple[str, list[str]]], list[tuple[str, list[str]]]]:
    """Distinct inputs, split into train and test; the seeded stream makes the files reproducible."""
    rng = random.Random(f"{spec.name}/{SEED}")
    want = spec.n_train + spec.n_test
    seen: dict[str, list[str]] = {}
    attempts = 0
    while len(seen) < want:
        attempts += 1
        if attempts > 200 * want:
            raise RuntimeError(f"{spec.name}: only {len(seen)} distinct inputs, {want} wanted")
        text, answers = spec.make(rng)
        seen.setdefault(text, answers)
    items = list(seen.items())
    rng.shuffle(items)
    return items[:spec.n_train], items[spec.n_train:]


def write(spec: Spec, split: str, items: list[tuple[str, list[str]]]) -> Path:
    # OOD families are query sets only, so their one file carries no split in its name
    stem = spec.name if spec.group == "ood" else f"{spec.name}.{split}"
    path = DATA / f"{stem}.{spec.format}"
    if spec.format == "jsonl":
        with path.open("w", encoding="utf-8", newline="\n") as fh:
            for text, answers in items:
                out = answers[0] if len(answers) == 1 else answers
                fh.write(json.dumps({spec.input_field: text, spec.output_field: out}, ensure_ascii=False) + "\n")
    else:
        # a CSV cell holds one answer, as in a spreadsheet; alternatives are a JSONL feature
        with path.open("w", encoding="utf-8", newline="") as fh:
            writer = csv.writer(fh, lineterminator="\n")
            writer.writerow([spec.input_field, spec.output_field])
            writer.writerows([text, answers[0]] for text, answers in items)
    return path


def main() -> None:
    DATA.mkdir(exist_ok=True)
    index = []
    for spec in SPECS:
        train, test = generate(spec)
        entry = {"name": spec.name, "group": spec.group, "format": spec.format, "what": spec.what,
                 "input_field": spec.input_field, "output_field": spec.output_field, "labels": spec.labels,
                 "test": write(spec, "test", test).relative_to(HERE).as_posix(), "n_test": len(test)}
        if train:
            entry.update(train=write(spec, "train", train).relative_to(HERE).as_posix(), n_train=len(train))
        index.append(entry)
        print(f"{spec.name:<18} {spec.group:<8} {spec.format:<5} train {len(train):>3}  test {len(test):>3}")
    (HERE / "tasks.json").write_text(json.dumps({"seed": SEED, "tasks": index}, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
