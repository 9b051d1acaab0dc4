import json

import pytest

from see.data import detect_format, load_queries, load_task
from see.prompt import format_prompt
from see.errors import DataError
from conftest import SHARED_DATA


def _jsonl(tmp_path, text, name="d.jsonl"):
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return p


def test_prompt_template_drops_the_instruction_line_when_empty():
    t = "{instruction}\n{input}\nAnswer:"
    assert format_prompt("x", "Do it.", t) == "Do it.\nx\nAnswer:"
    assert format_prompt("x", None, t) == "x\nAnswer:"
    assert format_prompt("x", "", t) == "x\nAnswer:"


def test_jsonl_with_list_outputs(tmp_path):
    p = _jsonl(tmp_path, '{"input": "a", "output": "b"}\n\n{"input": "c", "output": ["d", "e"]}\n')
    task = load_task(p)
    assert [e.input for e in task.examples] == ["a", "c"]
    assert task.examples[1].outputs == ("d", "e") and task.examples[1].output == "d"
    assert task.name == "d"


def test_json_list_and_custom_fields(tmp_path):
    p = tmp_path / "d.json"
    p.write_text(json.dumps([{"q": "a", "a": "b"}, {"q": "c", "a": "d"}]))
    task = load_task(p, input_field="q", output_field="a")
    assert detect_format(p) == "json" and len(task) == 2 and task.examples[0].output == "b"


def test_csv(tmp_path):
    p = tmp_path / "d.csv"
    p.write_text('input,output\nhello,world\n"a, b",1\n')
    task = load_task(p)
    assert task.examples[1].input == "a, b" and task.examples[1].output == "1"


def test_superni_file_and_definition(tmp_path):
    p = tmp_path / "task1.json"
    p.write_text(json.dumps({"Definition": ["Say hi."], "Instances": [
        {"id": "1", "input": "x", "output": ["hi", "hello"]}, {"id": "2", "input": "y", "output": "hi"}]}))
    task = load_task(p)
    assert detect_format(p) == "superni"
    assert task.instruction == "Say hi." and task.examples[0].outputs == ("hi", "hello")


def test_cl_benchmark_folder(tmp_path):
    root = tmp_path / "cl"
    (root / "agnews").mkdir(parents=True)
    (root / "instruction_config.json").write_text(json.dumps({"TC": [{"instruction": "Topic?\n"}]}))
    (root / "agnews" / "labels.json").write_text('["World", "Sports"]')
    (root / "agnews" / "train.json").write_text(json.dumps([{"sentence": "goal!", "label": "Sports"}] * 3))
    task = load_task(root / "agnews")
    assert task.instruction == "Topic?\nOption: World, Sports" and task.examples[0].output == "Sports"
    with pytest.raises(DataError, match="split 'test' not found"):
        load_task(root / "agnews", split="test")
    task = load_task(root / "agnews", instruction="Custom.")
    assert task.instruction.startswith("Custom.")


def test_hf_local_dataset_dir(tmp_path):
    import datasets

    ds = datasets.Dataset.from_list([{"input": "a", "output": "b"}, {"input": "c", "output": "d"}])
    ds.save_to_disk(str(tmp_path / "ds"))
    task = load_task(tmp_path / "ds", format="hf")
    assert len(task) == 2 and detect_format(tmp_path / "ds") == "hf"


def test_negatives_pool_needs_inputs_only(tmp_path):
    p = _jsonl(tmp_path, '{"input": "a"}\n{"input": "b", "instruction": "x"}\n')
    assert [q for _, q in load_queries(p)] == ["a", "b"]


@pytest.mark.parametrize("content,line,needle", [
    ('{"input": "a", "output": "b"}\n{"input": "c" "output": "d"}\n', 2, "invalid JSON"),
    ('{"input": "a", "output": "b"}\n{"input": "c"}\n', 2, "field 'output': missing"),
    ('{"input": "a", "output": "b"}\n{"input": "c", "output": 3}\n', 2, "field 'output': must be a string"),
    ('{"input": "a", "output": "b"}\n{"input": "c", "output": []}\n', 2, "empty list"),
    ('{"input": 5, "output": "b"}\n', 1, "field 'input': must be a string"),
    ('\n\n{"input": "a", "output": "b"}\n[1]\n', 4, "expected an object"),
])
def test_malformed_jsonl_names_file_line_field(tmp_path, content, line, needle):
    p = _jsonl(tmp_path, content)
    with pytest.raises(DataError) as err:
        load_task(p)
    assert f"{p}:{line}" in str(err.value) and needle in str(err.value)


def test_malformed_json_list_names_the_record_line(tmp_path):
    p = tmp_path / "d.json"
    p.write_text('[\n  {"input": "a", "output": "b"},\n  {"input": "c"}\n]\n')
    with pytest.raises(DataError) as err:
        load_task(p)
    assert f"{p}:3" in str(err.value) and "output" in str(err.value)


def test_empty_and_non_utf8_and_missing(tmp_path):
    empty = _jsonl(tmp_path, "", "empty.jsonl")
    with pytest.raises(DataError, match="empty"):
        load_task(empty)
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(b'{"input": "a", "output": "b"}\n{"input": "\xff", "output": "b"}\n')
    with pytest.raises(DataError) as err:
        load_task(bad)
    assert f"{bad}:2" in str(err.value) and "UTF-8" in str(err.value)
    with pytest.raises(DataError, match="does not exist"):
        load_task(tmp_path / "nope.jsonl")


def test_csv_missing_column_and_ragged_row(tmp_path):
    p = tmp_path / "d.csv"
    p.write_text("text,label\na,b\n")
    with pytest.raises(DataError, match="missing column"):
        load_task(p)
    p.write_text("input,output\na,b\nc,d,e\n")
    with pytest.raises(DataError) as err:
        load_task(p)
    assert f"{p}:3" in str(err.value)


def test_max_examples_is_a_seeded_sample(tmp_path):
    p = _jsonl(tmp_path, "".join(json.dumps({"input": str(i), "output": "x"}) + "\n" for i in range(50)))
    a = load_task(p, max_examples=10, seed=1)
    b = load_task(p, max_examples=10, seed=1)
    assert len(a) == 10 and a.examples == b.examples
    assert a.fingerprint() == b.fingerprint() != load_task(p).fingerprint()


@pytest.mark.skipif(not (SHARED_DATA / "superni").is_dir(), reason="../shared/data is absent")
def test_real_superni_and_cl_benchmark():
    sst2 = load_task(SHARED_DATA / "superni" / "task363_sst2_polarity_classification")
    assert len(sst2) == 1000 and "movie reviews" in sst2.instruction
    assert sst2.name == "task363_sst2_polarity_classification"
    test = load_task(SHARED_DATA / "superni" / "task591_sciq_answer_generation", split="test")
    assert len(test) == 100
    ag = load_task(SHARED_DATA / "cl_benchmark" / "agnews")
    assert "Option: World" in ag.instruction


def test_csv_with_a_byte_order_mark(tmp_path):
    p = tmp_path / "excel.csv"
    p.write_bytes(b"\xef\xbb\xbfinput,output\nhello,world\nfoo,bar\n")
    task = load_task(p)
    assert [(e.input, e.output) for e in task.examples] == [("hello", "world"), ("foo", "bar")]


@pytest.mark.parametrize("fmt", ["auto", "jsonl"])
def test_a_pipe_is_read_once(tmp_path, fmt):
    import os
    import threading

    read_end, write_end = os.pipe()
    body = b'{"input": "a", "output": "b"}\n{"input": "c", "output": "d"}\n'
    writer = threading.Thread(target=lambda: (os.write(write_end, body), os.close(write_end)))
    writer.start()
    try:
        task = load_task(f"/dev/fd/{read_end}", format=fmt)
    finally:
        writer.join()
        os.close(read_end)
    assert [e.input for e in task.examples] == ["a", "c"]
