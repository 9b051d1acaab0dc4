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
