from see.data import Example, Task
from see.experts.reconstruction import RehearsalBuffer, count_by_origin, reconstruct_task
from see.store import read_queries, write_queries


def _task(name, n, instruction="Do."):
    return Task(name, [Example(f"{name}-{i}", (f"ans{i}",)) for i in range(n)], instruction)


def test_first_expert_has_positives_and_general_negatives_only():
    task = _task("a", 50)
    general = [("Other.", f"g{i}") for i in range(100)]
    out = reconstruct_task(task, RehearsalBuffer(), general, negative_ratio=0.2, general_negative_ratio=0.2)
    assert count_by_origin(out) == {"a": 50, "general": 10}
    pos = [e for e in out if e.kind == "pos"]
    assert {e.answer for e in pos} == {f"ans{i}" for i in range(50)}
    assert all(e.answer is None for e in out if e.kind == "neg")
    # and with no pool at all: positives only
    assert count_by_origin(reconstruct_task(task, None)) == {"a": 50}


def test_rehearsal_negatives_are_a_share_with_a_minimum_per_task():
    buf = RehearsalBuffer()
    buf.add("old1", [("I1", f"x{i}") for i in range(100)])
    buf.add("old2", [("I2", f"y{i}") for i in range(3)])
    task = _task("new", 100)
    out = reconstruct_task(task, buf, negative_ratio=0.2, min_negatives_per_task=1)
    counts = count_by_origin(out)
    assert counts["new"] == 100
    assert counts["rehearsal:old1"] + counts["rehearsal:old2"] == 20
    assert counts["rehearsal:old2"] >= 1
    # negatives keep their own task's instruction
    assert all(e.instruction == "I1" for e in out if e.origin == "rehearsal:old1")


def test_minimum_per_task_when_the_share_is_small():
    buf = RehearsalBuffer({f"t{k}": [(None, f"q{k}-{i}") for i in range(10)] for k in range(5)})
    out = reconstruct_task(_task("new", 10), buf, negative_ratio=0.2, min_negatives_per_task=1)
    counts = count_by_origin(out)
    assert all(counts[f"rehearsal:t{k}"] == 1 for k in range(5))  # 2 by ratio, raised to 1 per earlier task


def test_buffers_smaller_than_the_share_give_what_they_have():
    buf = RehearsalBuffer({"old": [(None, "only")]})
    out = reconstruct_task(_task("new", 100), buf, negative_ratio=0.5)
    assert count_by_origin(out)["rehearsal:old"] == 1


def test_reconstruction_is_seeded():
    buf = RehearsalBuffer({"old": [(None, f"q{i}") for i in range(100)]})
    a = reconstruct_task(_task("new", 30), buf, seed=3)
    b = reconstruct_task(_task("new", 30), buf, seed=3)
    c = reconstruct_task(_task("new", 30), buf, seed=4)
    assert a == b and a != c


def test_rehearsal_buffer_sample_and_roundtrip(tmp_path):
    queries = RehearsalBuffer.sample_task(_task("t", 250), 100, seed=0)
    assert len(queries) == 100 and len(set(queries)) == 100
    write_queries(tmp_path / "r.jsonl", queries)
    assert read_queries(tmp_path / "r.jsonl") == queries
    assert len(RehearsalBuffer.sample_task(_task("t", 5), 100, seed=0)) == 5


# --------------------------------------------------------------------------- near misses

def _chore_task():
    words = ["tunnel", "badger", "planet", "walnut", "marble", "zipper", "falcon", "harbor", "violin", "oyster",
             "rabbit", "candle", "meadow", "pepper", "saddle", "timber", "velvet", "window", "anchor", "bucket",
             "castle", "dragon", "engine", "forest", "garden", "helmet", "island", "jacket", "kettle", "lemon"]
    phrasings = ["How many vowels are in {}?", "Count the vowels in {}", "{}: number of vowels?"]
    return Task("count_vowels", [Example(phrasings[i % 3].format(w), ("2",)) for i, w in enumerate(words)])


POOL = [(None, q) for q in ("What is the capital of Peru?", "How many legs does a spider have?",
                            "Write a haiku about autumn rain", "Is a tomato a fruit?", "Convert 5 miles to km",
                            "Explain photosynthesis in simple terms", "Recommend a board game for four players",
                            "Why are flamingos pink?")]


def test_key_words_are_shared_by_the_task_and_rare_in_the_pool():
    from see.negatives.near_miss import key_words

    keys = key_words([(None, ex.input) for ex in _chore_task().examples], POOL)
    # "vowels" is in every query and "count", "number" in a third; "how", "many", "are", "the", "in", "of" are
    # as common in the pool (one query of 8 is over a tenth of a third); each word to count in is in 1 of 30
    assert keys == {"vowels": 1.0, "count": 1 / 3, "number": 1 / 3}


def test_near_misses_swap_one_key_word_for_a_word_the_task_never_uses():
    from see.negatives.near_miss import WORD, near_miss_negatives

    task = _chore_task()
    queries = [(None, ex.input) for ex in task.examples]
    out = near_miss_negatives(queries, POOL, 20, seed=0)
    assert len(out) == 20 and len(set(out)) == 20
    task_words = {w.lower() for q in queries for w in WORD.findall(q[1])}
    pool_words = {w.lower() for q in POOL for w in WORD.findall(q[1])}
    for instruction, text in out:
        assert instruction is None and (None, text) not in queries
        # exactly one word differs from some task query, and it is a pool word the task never uses
        words = WORD.findall(text)
        matches = [q for q in queries if len(WORD.findall(q[1])) == len(words)
                   and sum(a != b for a, b in zip(WORD.findall(q[1]), words)) == 1]
        assert matches, text
        new = {w.lower() for w in words} - task_words
        assert len(new) == 1 and new <= pool_words
        swapped = [a for a, b in zip(WORD.findall(matches[0][1]), words) if a != b]
        assert [w.lower() for w in swapped] in (["vowels"], ["count"], ["number"]), (swapped, text)
    assert near_miss_negatives(queries, POOL, 20, seed=0) == out  # seeded
    assert near_miss_negatives(queries, POOL, 20, seed=1) != out


def test_a_word_with_combining_marks_is_swapped_whole():
    """Decomposed accents and Devanagari vowel signs are marks, not letters: the key word is the whole word."""
    import unicodedata

    from see.negatives.near_miss import WORD, key_words, near_miss_negatives

    cafe = unicodedata.normalize("NFD", "café")
    assert WORD.findall(f"un {cafe} noir") == ["un", cafe, "noir"]
    assert WORD.findall("नमस्ते दुनिया") == ["नमस्ते", "दुनिया"]
    queries = [(None, f"{cafe} number {k}") for k in range(20)]
    assert cafe in key_words(queries, POOL)
    for _, text in near_miss_negatives(queries, POOL, 10, seed=0):
        assert "\u0301" not in text or text.startswith(cafe), text  # never a stray accent on a swapped word


def test_a_task_without_shared_words_or_without_a_pool_gets_no_near_misses():
    from see.negatives.near_miss import near_miss_negatives

    bare = [(None, f"{i} and then {7 * i}") for i in range(30)]
    # only "and"/"then" are words, and the pool uses them as well; numbers are never key words
    pool = POOL + [(None, "and then what"), (None, "then and there")]
    assert near_miss_negatives(bare, pool, 10) == []
    assert near_miss_negatives([(None, ex.input) for ex in _chore_task().examples], [], 10) == []


def test_near_misses_are_a_share_of_positives_in_the_reconstruction():
    task = _chore_task()
    out = reconstruct_task(task, None, POOL, general_negative_ratio=0.2, near_miss_ratio=0.5, seed=0)
    counts = count_by_origin(out)
    assert counts == {"count_vowels": 30, "general": 6, "near-miss": 15}
    assert all(e.kind == "neg" and e.answer is None for e in out if e.origin == "near-miss")
    assert "near-miss" not in count_by_origin(reconstruct_task(task, None, POOL, general_negative_ratio=0.2))


def test_auto_gives_bare_inputs_one_near_miss_per_positive_and_an_instructed_task_half():
    """`auto` (the default): a bare query's near miss is a true look-alike; an instruction's stays closer to the
    task itself, so such a task keeps half as many (see/negatives/near_miss.py's AUTO_RATIO_*)."""
    from see.config import SeeConfig

    assert SeeConfig().reconstruction.near_miss_ratio == "auto"
    bare = _chore_task()
    counts = count_by_origin(reconstruct_task(bare, None, POOL, general_negative_ratio=0.2, near_miss_ratio="auto"))
    assert counts == {"count_vowels": 30, "general": 6, "near-miss": 30}
    instructed = Task("count_vowels", [Example(w, ("2",)) for w in ("tunnel", "badger", "planet", "walnut") * 5],
                      instruction="Count the vowels of the word.")
    counts = count_by_origin(reconstruct_task(instructed, None, POOL, general_negative_ratio=0.2,
                                              near_miss_ratio="auto"))
    assert counts == {"count_vowels": 20, "general": 4, "near-miss": 10}


def test_with_an_instruction_apart_only_the_instruction_changes_and_case_is_kept():
    from see.negatives.near_miss import near_miss_negatives

    queries = [(f"{verb} the vowels.", f"{w} {w}") for verb in ("Count", "Tally")
               for w in ("Vowels", "COUNT", "tunnel", "badger")]
    out = near_miss_negatives(queries, POOL, 6, seed=0)
    assert len(out) == 6
    assert all((inst, text) not in queries and text in {q[1] for q in queries} for inst, text in out)
    # the inputs (which repeat the key words here) are never touched; a swapped "Count" keeps its capital
    for inst, _ in out:
        first, middle, last = inst.split()
        assert middle == "the" and inst not in {q[0] for q in queries}
        if first not in ("Count", "Tally"):
            assert last == "vowels." and first[0].isupper() and first[1:].islower(), inst
        else:
            assert last.endswith(".") and last[0].islower(), inst


def test_a_long_instruction_has_one_in_three_of_its_key_words_swapped():
    """One word changed in a SuperNI-length definition still asks for the same thing; on superni-cpu's sst2 such
    near misses cost 9-10 points of exact match (benchmarks/results/negatives-ablation)."""
    from see.negatives.near_miss import INSTRUCTION_SWAP_EVERY, WORD, key_words, near_miss_negatives

    assert INSTRUCTION_SWAP_EVERY == 3
    long = "Classify the movie review sentence as positive sentiment or negative sentiment, answering POS or NEG."
    inputs = ("tunnel vision", "badger story", "planet drama", "walnut comedy", "marble thriller")
    queries = [(long, text) for text in inputs]
    keys = key_words(queries, POOL)
    occurrences = [w for w in WORD.findall(long) if w.lower() in keys]
    assert len(occurrences) == 14  # every word but "the", which a query of the pool uses too
    out = near_miss_negatives(queries, POOL, 8, seed=0)
    assert len(out) == 8
    for inst, text in out:
        assert text in inputs  # the input is content: never touched
        changed = [(a, b) for a, b in zip(WORD.findall(long), WORD.findall(inst)) if a != b]
        assert len(WORD.findall(inst)) == len(WORD.findall(long))
        assert len(changed) == len(occurrences) // 3, (inst, changed)
        assert all(a.lower() in keys for a, _ in changed)
    # a short instruction (two key words here) keeps a single swap
    short = [("Count the vowels.", text) for text in inputs]
    for inst, _ in near_miss_negatives(short, POOL, 4, seed=0):
        assert sum(a != b for a, b in zip("Count the vowels.".split(), inst.split())) == 1, inst


def test_crossed_negatives_put_the_tasks_content_into_other_queries():
    """An earlier task's kept query (or a general one) with one varying token replaced by the task's own: the
    wording around it is the host's, never one of the task's queries."""
    from see.negatives.crossed import content_tokens, crossed_negatives

    add = [(None, f"what is {a} + {b}?") for a, b in zip(range(100, 140), range(500, 540))]
    content = content_tokens(add)
    assert set(content) == {str(n) for n in [*range(100, 140), *range(500, 540)]}  # "what", "is": in every query
    words = ["judge", "lantern", "meadow", "pepper", "candle", "kettle", "walnut", "zipper", "velvet", "anchor",
             "bucket", "castle", "dragon", "engine", "forest", "garden", "helmet", "island", "jacket", "lemon"]
    earlier = [(None, f"which letter does '{w}' end with?") for w in words[:15]]
    earlier += [(None, f"reverse {w}") for w in words[15:]] + [(None, "reverse judge")]
    out = crossed_negatives(add, [earlier], 30, seed=0)
    assert len(out) == len(set(out)) == 30
    hosts = set(earlier)
    for inst, text in out:
        assert inst is None and (None, text) not in add
        # exactly one token differs from some host, and it is one of the task's numbers
        match = [h for h in hosts if len(h[1].split()) == len(text.split())
                 and sum(a != b for a, b in zip(h[1].split(), text.split())) == 1]
        assert match, text
        assert any(n in text for n in content)
    # the host's own wording stays: "which", "letter", "reverse" are in a share of its group, never replaced
    assert all(text.startswith(("which letter does '", "reverse ")) for _, text in out)
    assert {text.split()[0] for _, text in out} == {"which", "reverse"}
    assert all(text.endswith("' end with?") for _, text in out if text.startswith("which"))
    assert crossed_negatives(add, [earlier], 0) == [] and crossed_negatives([], [earlier], 5) == []


def test_crossed_negatives_are_a_share_of_positives_and_off_by_default():
    from see.config import SeeConfig

    assert SeeConfig().reconstruction.crossed_ratio == 0.0
    task = _chore_task()
    rehearsal = RehearsalBuffer({"add": [(None, f"what is {a} + {a + 7}?") for a in range(40)]})
    with_crossed = reconstruct_task(task, rehearsal, POOL, general_negative_ratio=0.2, crossed_ratio=0.5, seed=0)
    without = reconstruct_task(task, rehearsal, POOL, general_negative_ratio=0.2, seed=0)
    assert count_by_origin(with_crossed)["crossed"] == 15 and "crossed" not in count_by_origin(without)
    # the rest of the reconstruction is the same examples
    assert sorted(map(repr, [e for e in with_crossed if e.origin != "crossed"])) == sorted(map(repr, without))
    task_words = {w.strip("?:").lower() for e in without if e.kind == "pos" for w in e.input.split()}
    for e in with_crossed:
        if e.origin == "crossed":
            assert e.kind == "neg" and e.answer is None
            assert any(w.strip("?:").lower() in task_words for w in e.input.split())
