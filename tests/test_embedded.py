"""The embedded default: families, the committed base, and the script that built it."""
import json

from see.embedded import BASE_DIR
from see.embedded.families import FAMILIES, HELD_OUT, NEGATIVE_POOL, STREAM, general_negatives, make_task, \
    pretraining_text


def test_family_roles_are_disjoint_and_instructions_distinct():
    assert not set(STREAM) & set(NEGATIVE_POOL) and not set(STREAM) & set(HELD_OUT)
    assert not set(NEGATIVE_POOL) & set(HELD_OUT)
    assert len({f.instruction for f in FAMILIES.values()}) == len(FAMILIES)
    assert len(STREAM) >= 4


def test_tasks_are_seeded_and_splits_differ():
    a, b = make_task("topic", 20, seed=1), make_task("topic", 20, seed=1)
    assert a.examples == b.examples
    assert make_task("topic", 20, seed=1, split="test").examples != a.examples
    assert make_task("successor", 5).examples[0].output.isdigit()
    labels = {ex.output for ex in make_task("sentiment", 200).examples}
    assert labels == {"positive", "negative"}


def test_general_negatives_come_from_the_pool_families_only():
    pool = {FAMILIES[f].instruction for f in NEGATIVE_POOL}
    assert {i for i, _ in general_negatives(30)} == pool


def test_pretraining_text_never_uses_the_task_format():
    from see.embedded.build_base import pretraining_corpus

    corpus = pretraining_corpus(2000)
    generic = [t for t in corpus if t not in set(pretraining_text(2000))]
    assert 0.2 < len(generic) / len(corpus) < 0.4  # the default generic share, 0.3
    assert pretraining_corpus(2000, generic_share=0.0) == pretraining_text(2000)
    text = "\n".join(corpus)
    assert "Answer:" not in text
    assert not any(FAMILIES[f].instruction in text for f in FAMILIES)


def test_committed_base_and_its_build_record():
    info = json.loads((BASE_DIR / "build_info.json").read_text())
    assert info["built_by"].startswith("python -m see.embedded.build_base")
    assert (BASE_DIR / "model.safetensors").stat().st_size < 16 * 2 ** 20
    assert (BASE_DIR / "tokenizer.json").is_file()


def test_build_script_runs_a_few_steps(tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from see.embedded.build_base import main

    info = main(["--out", str(tmp_path / "base"), "--steps", "3", "--statements", "400", "--batch-size", "4",
                 "--hidden", "32", "--layers", "1", "--heads", "2", "--intermediate", "64", "--vocab-size", "400"])
    assert info["steps_done"] == 3 and info["final_loss"] > 0
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "base")
    tok = AutoTokenizer.from_pretrained(tmp_path / "base")
    assert model.config.vocab_size == len(tok) and tok.decode(tok("the 12 cats")["input_ids"],
                                                              skip_special_tokens=True) == "the 12 cats"


def test_generator_still_yields_the_corpus_the_committed_base_saw():
    from see.embedded.build_base import corpus_sha256, pretraining_corpus

    info = json.loads((BASE_DIR / "build_info.json").read_text())
    corpus = pretraining_corpus(info["args"]["statements"], seed=info["args"]["seed"],
                                generic_share=info["args"]["generic_share"],
                                skill_share=info["args"].get("skill_share", 0.0),
                                arithmetic_share=info["args"].get("arithmetic_share", 0.5),
                                answer_last=info["args"].get("answer_last", False),
                                answer_gap=info["args"].get("answer_gap", 0),
                                more_wordings=info["args"].get("more_wordings", False))
    assert corpus_sha256(corpus) == info["corpus_sha256"]


def test_skill_statements_state_true_facts_and_never_the_task_format():
    import random
    import re

    from see.embedded.build_base import pretraining_corpus, skill_statement

    rng = random.Random(3)
    checked = {"sum": 0, "difference": 0, "reversal": 0, "without": 0}
    for _ in range(3000):
        text = skill_statement(rng)
        if m := re.fullmatch(r"(\d+) \+ (\d+) = (\d+)", text):
            assert int(m[1]) + int(m[2]) == int(m[3])
            checked["sum"] += 1
        elif m := re.fullmatch(r"(\d+) minus (\d+) leaves (\d+) \.", text):
            assert int(m[1]) - int(m[2]) == int(m[3]) >= 0
            checked["difference"] += 1
        elif m := re.fullmatch(r"([a-z]+) reversed is ([a-z]+) \.", text):
            assert m[1][::-1] == m[2]
            checked["reversal"] += 1
        elif m := re.fullmatch(r"([a-z]+) without ([a-z]) is ([a-z]+) \.", text):
            assert m[1].replace(m[2], "") == m[3]
            checked["without"] += 1
        assert "Answer:" not in text and "?" not in text
    assert min(checked.values()) > 20, checked
    # skill_share 0 leaves the corpus of the bases built before skills existed
    assert pretraining_corpus(500, skill_share=0.0) == pretraining_corpus(500)
    mixed = pretraining_corpus(2000, generic_share=0.5, skill_share=0.5)
    assert 0.1 < sum(bool(re.search(r" = \d+$| leaves \d+ \.$| makes \d+ \.$| sum of | take away ", t))
                      for t in mixed) / len(mixed) < 0.15  # generic 0.5 x skills 0.5 x arithmetic 0.5


def test_answer_last_states_every_result_after_its_operands():
    import random
    import re

    from see.embedded.build_base import pretraining_corpus, skill_statement

    rng = random.Random(5)
    arithmetic = 0
    for _ in range(2000):
        text = skill_statement(rng, arithmetic_share=0.9, answer_last=True)
        numbers = [int(n) for n in re.findall(r"\d+", text)]
        if len(numbers) == 3:
            a, b, c = numbers
            assert c in (a + b, a - b) and text.endswith((f"{c}", f"{c} .")), text
            arithmetic += 1
    assert 0.85 < arithmetic / 2000 < 0.95
    # a gap puts filler between the operands and the result, never another number
    gapped = [skill_statement(rng, arithmetic_share=1.0, answer_last=True, answer_gap=4) for _ in range(500)]
    for text in gapped:
        a, b, c = (int(n) for n in re.findall(r"\d+", text))
        assert c in (a + b, a - b) and text.rstrip(" .").endswith(str(c)), text
    assert sum("\n" in t or " so " in t or " then " in t for t in gapped) > 100
    # the defaults keep the corpus of the bases built before the options
    assert pretraining_corpus(800, skill_share=0.5) == pretraining_corpus(800, skill_share=0.5, arithmetic_share=0.5,
                                                                          answer_last=False)
    assert pretraining_corpus(800, skill_share=0.5) != pretraining_corpus(800, skill_share=0.5, answer_last=True)
    # the skills corpus as the generator wrote it before these options existed (f77e544)
    from see.embedded.build_base import corpus_sha256
    assert corpus_sha256(pretraining_corpus(800, skill_share=0.5)) == \
        "cba77225bb7a4b4bced297683668abf475d66054959db627a2be24c851d6ab61"


def test_more_wordings_state_true_sums_and_differences_some_with_the_second_operand_first():
    import random
    import re

    from see.embedded.build_base import _DIFFERENCE_MORE, _SUM_MORE, pretraining_corpus, skill_statement

    rng = random.Random(7)
    counts = {"sum": 0, "difference": 0}
    for _ in range(3000):
        text = skill_statement(rng, arithmetic_share=1.0, answer_last=True, more_wordings=True)
        plain = re.sub(r"\d+", "{n}", text)
        for kind, forms in (("sum", _SUM_MORE), ("difference", _DIFFERENCE_MORE)):
            for form in forms:
                if plain == re.sub(r"\{[abc]\}", "{n}", form):
                    # numbers in the order the form names them: "{b} less than {a} is {c}" names b first
                    value = dict(zip(re.findall(r"\{([abc])\}", form), (int(n) for n in re.findall(r"\d+", text))))
                    a, b, c = value["a"], value["b"], value["c"]
                    assert c == (a + b if kind == "sum" else a - b) and (kind == "sum" or a >= b), text
                    counts[kind] += 1
                    counts["second first"] = counts.get("second first", 0) + (form.index("{b}") < form.index("{a}"))
        assert "?" not in text and "Answer:" not in text
    # 4 of 7 forms each: about 3000 x 1/2 x 4/7 = 857 of each kind
    assert 700 < counts["sum"] < 1000 and 700 < counts["difference"] < 1000, counts
    # two of the four sum forms, three of the four difference forms
    assert 0.55 < counts["second first"] / (counts["sum"] + counts["difference"]) < 0.7, counts
    # off by default: the corpus of the bases built before the option
    assert pretraining_corpus(800, skill_share=0.5, answer_last=True) == \
        pretraining_corpus(800, skill_share=0.5, answer_last=True, more_wordings=False)
