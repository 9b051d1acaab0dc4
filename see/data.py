"""Tasks and their loaders: every data format is read here and nowhere else.

A :class:`Task` is a name, an optional instruction and examples. Each loader
turns one format into a Task; :func:`load_task` picks the loader (``auto``
detects the format by content). Errors name the file, the line (or record)
and the field.
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from see.config import FORMATS
from see.errors import DataError

#: Folder name -> CL_Benchmark instruction family (instruction_config.json keys).
CL_FAMILIES = {
    "agnews": "TC", "dbpedia": "TC", "yahoo": "TC",
    "amazon": "SC", "yelp": "SC", "imdb": "SC", "sst2": "SC",
    "mnli": "NLI", "rte": "NLI", "cb": "NLI", "qqp": "QQP",
    "boolq": "BoolQA", "multirc": "MultiRC", "wic": "WiC",
}


@dataclass(frozen=True)
class Example:
    input: str
    #: Acceptable answers; training uses the first, evaluation accepts any.
    outputs: tuple[str, ...]
    #: Line in the source file, for error messages (not part of equality).
    line: int | None = field(default=None, compare=False)
    #: The record's own ``instruction`` field, when it has one: a query pool (general negatives) mixes
    #: instructions, and a query without its instruction is another query.
    instruction: str | None = field(default=None, compare=False)

    @property
    def output(self) -> str:
        return self.outputs[0]


@dataclass
class Task:
    name: str
    examples: list[Example]
    instruction: str | None = None
    source: str = ""

    def __len__(self) -> int:
        return len(self.examples)

    def fingerprint(self) -> str:
        """sha256 of the task's content, stored in the manifest as the data hash."""
        h = hashlib.sha256()
        h.update((self.instruction or "").encode())
        for ex in self.examples:
            h.update(b"\0" + ex.input.encode() + b"\0" + "\x1f".join(ex.outputs).encode())
        return h.hexdigest()

    def sample(self, n: int, seed: int) -> "Task":
        if n >= len(self.examples):
            return self
        idx = sorted(random.Random(seed).sample(range(len(self.examples)), n))
        return Task(self.name, [self.examples[i] for i in idx], self.instruction, self.source)


# ----------------------------------------------------------------------------- helpers

def _quiet_datasets():
    import datasets

    datasets.disable_progress_bars()
    datasets.logging.set_verbosity_error()
    logging.getLogger("datasets").setLevel(logging.ERROR)
    return datasets


#: Largest data file read, in bytes: a task is examples, not a corpus; this also stops endless inputs
#: (/dev/zero, a pipe that never closes) before they exhaust memory.
MAX_FILE_BYTES = 1 << 30
#: Longest line of a JSONL or CSV file, in bytes: far beyond any model's context, and a sign of a wrong file.
MAX_LINE_BYTES = 1 << 20
#: Deepest nesting of a JSON value: examples are flat objects; deeper input would exhaust the parser's stack.
MAX_JSON_DEPTH = 64

_READ_ONCE: dict[str, bytes] = {}


def _read_bytes(path: Path, max_line: int | None = None) -> bytes:
    """The file's bytes, read once and within the limits.

    A pipe or process substitution (``--data <(cat f)``) can be read only
    once, so what format detection read is kept for the loader.
    """
    key = str(path)
    if key in _READ_ONCE:
        return _READ_ONCE[key]
    chunks, size, line, newlines = [], 0, 0, 0
    try:
        with open(path, "rb") as fh:
            while chunk := fh.read(1 << 20):
                size += len(chunk)
                if size > MAX_FILE_BYTES:
                    raise DataError(f"larger than the limit of {MAX_FILE_BYTES >> 20} MiB for a data file", file=path,
                                    hint="split the task, or sample it before passing it to see")
                if max_line is not None:
                    parts = chunk.split(b"\n")
                    for k, part in enumerate(parts):
                        line = line + len(part) if k == 0 else len(part)
                        if line > max_line:
                            raise DataError(f"a line is longer than the limit of {max_line >> 20} MiB", file=path,
                                            line=newlines + k + 1, hint="is this the right file and --format?")
                    newlines += len(parts) - 1
                chunks.append(chunk)
    except OSError as exc:
        raise DataError(f"cannot read: {exc.strerror}", file=path) from None
    data = b"".join(chunks)
    if not path.is_file():  # a pipe: whoever reads next must get these bytes
        _READ_ONCE[key] = data
    return data


def _read_text(path: Path, max_line: int | None = None) -> str:
    data = _read_bytes(path, max_line)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise DataError(f"not UTF-8 text: byte 0x{data[exc.start]:02x} cannot be decoded", file=path,
                        line=line, hint="re-save the file as UTF-8") from None
    return text.removeprefix("\ufeff")  # a byte-order mark (Excel's CSV) is not part of the first field name


def _starts_with_bom(path: Path) -> bool:
    with open(path, "rb") as fh:
        return fh.read(3) == b"\xef\xbb\xbf"


def _json_loads(text: str) -> Any:
    """``json.loads`` with a nesting limit: deep input would otherwise end in a RecursionError."""
    depth = 0
    if text.count("[") + text.count("{") > MAX_JSON_DEPTH:  # cheap pre-check; exact scan only when needed
        in_string = escaped = False
        for ch in text:
            if in_string:
                if escaped:
                    escaped = False
                elif ch == "\\":
                    escaped = True
                elif ch == '"':
                    in_string = False
            elif ch == '"':
                in_string = True
            elif ch in "[{":
                depth += 1
                if depth > MAX_JSON_DEPTH:
                    raise ValueError(f"nested deeper than {MAX_JSON_DEPTH} levels")
            elif ch in "]}":
                depth -= 1
    return json.loads(text)


def _outputs(value: Any, path: Path, line: int | None, field_name: str) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,)
    if isinstance(value, (list, tuple)) and value and all(isinstance(v, str) for v in value):
        return tuple(value)
    kind = "an empty list" if isinstance(value, (list, tuple)) and not value else type(value).__name__
    if value is None:
        kind = "missing (null)"
    raise DataError(f"must be a string or a non-empty list of strings, got {kind}", file=path, line=line,
                    field=field_name)


def _examples_from_records(records: Sequence[dict], lines: Sequence[int | None], path: Path,
                           input_field: str, output_field: str | None) -> list[Example]:
    """Validate records; ``output_field=None`` reads inputs only (a pool of negatives)."""
    examples = []
    for rec, line in zip(records, lines):
        if not isinstance(rec, dict):
            raise DataError(f"expected an object with '{input_field}' and '{output_field}', "
                            f"got {type(rec).__name__}", file=path, line=line)
        for name in (input_field, output_field):
            if name is not None and name not in rec:
                raise DataError("missing field", file=path, line=line, field=name,
                                hint=f"fields present: {', '.join(map(str, rec)) or 'none'}; "
                                     "choose others with --input-field/--output-field")
            if name is not None and rec[name] is None:
                raise DataError("is null; it must be a string", file=path, line=line, field=name)
        if not isinstance(rec[input_field], str):
            raise DataError(f"must be a string, got {type(rec[input_field]).__name__}", file=path, line=line,
                            field=input_field)
        outputs = ("",) if output_field is None else _outputs(rec[output_field], path, line, output_field)
        own = rec.get("instruction")
        examples.append(Example(rec[input_field], outputs, line, own if isinstance(own, str) and own else None))
    if not examples:
        raise DataError("no examples in the file", file=path)
    return examples


def _jsonl_lines(text: str, path: Path) -> tuple[list[dict], list[int]]:
    """Parse JSONL ourselves to locate errors and map records to line numbers."""
    records, lines = [], []
    for i, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            records.append(_json_loads(raw))
        except json.JSONDecodeError as exc:
            raise DataError(f"invalid JSON: {exc.msg} (column {exc.colno})", file=path, line=i) from None
        except (ValueError, RecursionError) as exc:
            raise DataError(f"invalid JSON: {exc or 'nested too deeply'}", file=path, line=i) from None
        lines.append(i)
    return records, lines


def _json_list_lines(text: str, start: int = 0) -> list[int]:
    """Line of each element of the JSON array opening at or after ``start`` (the text is known to parse)."""
    decoder = json.JSONDecoder()
    pos = text.index("[", start) + 1
    lines = []
    ws = " \t\r\n,"
    while True:
        while pos < len(text) and text[pos] in ws:
            pos += 1
        if pos >= len(text) or text[pos] == "]":
            return lines
        lines.append(text.count("\n", 0, pos) + 1)
        _, pos = decoder.raw_decode(text, pos)


def _parse_json(text: str, path: Path) -> Any:
    try:
        return _json_loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(f"invalid JSON: {exc.msg} (column {exc.colno})", file=path, line=exc.lineno) from None
    except (ValueError, RecursionError) as exc:
        raise DataError(f"invalid JSON: {exc or 'nested too deeply'}", file=path) from None


def _load_with_datasets(kind: str, path: Path, **kwargs: Any) -> list[dict]:
    datasets = _quiet_datasets()
    ds = datasets.load_dataset(kind, data_files=str(path), split="train", download_mode="force_redownload",
                               **kwargs)
    return ds.to_list()


# ----------------------------------------------------------------------------- loaders

def _through_datasets(kind: str, path: Path, raw: list, lines: list, input_field: str,
                      output_field: str | None, **kwargs) -> list[Example]:
    """Validate the raw records (exact types, line numbers), then read the file through ``datasets``.

    ``datasets`` may coerce types (an int label becomes text) or fail on a schema
    it cannot unify; the raw check runs first so such problems name their line,
    and a file ``datasets`` cannot read but we can is read from the raw records.
    """
    examples = _examples_from_records(raw, lines, path, input_field, output_field)
    if not path.is_file() or _starts_with_bom(path):
        return examples  # a pipe cannot be read twice; a byte-order mark would rename the first column
    try:
        records = _load_with_datasets(kind, path, **kwargs)
    except Exception:  # noqa: BLE001 - e.g. pyarrow cannot unify str and list outputs
        return examples
    if len(records) != len(examples):
        return examples
    return _examples_from_records(records, lines, path, input_field, output_field)


def load_jsonl(path: Path, input_field: str = "input", output_field: str | None = "output") -> list[Example]:
    text = _read_text(path, MAX_LINE_BYTES)
    if not text.strip():
        raise DataError("the file is empty", file=path)
    records, lines = _jsonl_lines(text, path)
    return _through_datasets("json", path, records, lines, input_field, output_field)


def load_json(path: Path, input_field: str = "input", output_field: str | None = "output") -> list[Example]:
    text = _read_text(path)
    if not text.strip():
        raise DataError("the file is empty", file=path)
    data = _parse_json(text, path)
    if not isinstance(data, list):
        raise DataError(f"expected a JSON list of objects, got {type(data).__name__}", file=path, line=1)
    if not data:
        raise DataError("no examples in the file (empty list)", file=path)
    return _through_datasets("json", path, data, _json_list_lines(text), input_field, output_field)


def load_csv(path: Path, input_field: str = "input", output_field: str | None = "output") -> list[Example]:
    text = _read_text(path, MAX_LINE_BYTES)
    if not text.strip():
        raise DataError("the file is empty", file=path)
    reader = csv.reader(io.StringIO(text))
    header = next(reader)
    for name in (input_field, output_field):
        if name is not None and name not in header:
            raise DataError("missing column", file=path, line=1, field=name,
                            hint=f"columns: {', '.join(header)}; choose others with --input-field/--output-field")
    rows, lines, prev = [], [], reader.line_num
    for row in reader:
        if len(row) != len(header):
            raise DataError(f"row has {len(row)} columns, the header has {len(header)}", file=path,
                            line=prev + 1)
        rows.append(dict(zip(header, row)))
        lines.append(prev + 1)
        prev = reader.line_num
    if not rows:
        raise DataError("no examples in the file (a header only)", file=path)
    from datasets import Features, Value

    # every column as text: CSV cells are untyped, and "1.50" must stay "1.50"
    features = Features({name: Value("string") for name in header})
    return _through_datasets("csv", path, rows, lines, input_field, output_field, features=features)


def _superni_file(path: Path, split: str) -> Path:
    if path.is_dir():
        candidate = path / f"{split}.json"
        if not candidate.is_file():
            have = sorted(p.stem for p in path.glob("*.json"))
            raise DataError(f"split '{split}' not found", file=path, hint=f"available: {', '.join(have) or 'none'}")
        return candidate
    return path


def load_superni(path: Path, split: str = "train") -> tuple[list[Example], str | None]:
    path = _superni_file(path, split)
    text = _read_text(path)
    if not text.strip():
        raise DataError("the file is empty", file=path)
    data = _parse_json(text, path)
    if not isinstance(data, dict) or "Instances" not in data:
        raise DataError("not a SuperNI task: expected an object with 'Definition' and 'Instances'", file=path,
                        field="Instances")
    definition = data.get("Definition")
    if isinstance(definition, list):
        definition = " ".join(d for d in definition if isinstance(d, str))
    if definition is not None and not isinstance(definition, str):
        raise DataError("must be a string or a list of strings", file=path, field="Definition")
    instances = data["Instances"]
    if not isinstance(instances, list) or not instances:
        raise DataError("must be a non-empty list", file=path, field="Instances")
    lines = _instance_lines(text, len(instances))
    return _examples_from_records(instances, lines, path, "input", "output"), (definition or None)


def _instance_lines(text: str, n: int) -> list[int | None]:
    start = text.find('"Instances"')
    try:
        lines = _json_list_lines(text, start) if start >= 0 else []
    except (ValueError, json.JSONDecodeError):
        lines = []
    return lines if len(lines) == n else [None] * n


def load_cl_benchmark(path: Path, split: str = "train", instruction: str | None = None) -> tuple[list[Example], str]:
    if not path.is_dir():
        raise DataError("a CL_Benchmark task is a folder with train.json and labels.json", file=path)
    file = path / f"{split}.json"
    if not file.is_file():
        have = sorted(p.stem for p in path.glob("*.json") if p.stem != "labels")
        raise DataError(f"split '{split}' not found", file=path, hint=f"available: {', '.join(have) or 'none'}")
    examples = load_json(file, "sentence", "label")
    labels_file = path / "labels.json"
    labels = None
    if labels_file.is_file():
        labels = _parse_json(_read_text(labels_file), labels_file)
        if not isinstance(labels, list) or not all(isinstance(x, str) for x in labels):
            raise DataError("must be a JSON list of label strings", file=labels_file)
    if instruction is None:
        family = CL_FAMILIES.get(path.name.lower())
        config = path.parent / "instruction_config.json"
        if family and config.is_file():
            entries = _parse_json(_read_text(config), config).get(family) or []
            if entries:
                instruction = entries[0]["instruction"].strip()
        if instruction is None:
            raise DataError("no instruction for this CL_Benchmark folder", file=path,
                            hint="pass one with data.instruction='...' (or --instruction)")
    if labels:
        instruction = f"{instruction}\nOption: {', '.join(labels)}"
    return examples, instruction


def load_hf(name: str, split: str = "train", input_field: str = "input", output_field: str | None = "output"
            ) -> list[Example]:
    datasets = _quiet_datasets()
    path = Path(name)
    try:
        if path.is_dir() and ((path / "dataset_info.json").is_file() or (path / "dataset_dict.json").is_file()):
            ds = datasets.load_from_disk(str(path))
            if isinstance(ds, datasets.DatasetDict):
                if split not in ds:
                    raise DataError(f"split '{split}' not found", file=path, hint=f"available: {', '.join(ds)}")
                ds = ds[split]
        else:
            ds = datasets.load_dataset(name, split=split)
    except DataError:
        raise
    except Exception as exc:  # noqa: BLE001 - any hub/IO failure is the user's dataset reference
        raise DataError(f"could not load the dataset: {type(exc).__name__}: {str(exc).splitlines()[0][:300]}",
                        file=name) from None
    records = ds.to_list()
    return _examples_from_records(records, [None] * len(records), Path(name), input_field, output_field)


def detect_format(path: Path) -> str:
    """Guess the format from the path and its content."""
    if path.is_dir():
        if (path / "labels.json").is_file():
            return "cl-benchmark"
        for split in ("train", "test", "dev"):
            f = path / f"{split}.json"
            if f.is_file():
                with f.open("rb") as fh:
                    head = fh.read(4096).lstrip()
                if head.startswith(b"{"):
                    return "superni"
        return "hf"
    suffix = path.suffix.lower()
    if suffix in (".csv", ".tsv"):
        return "csv"
    if path.is_file():
        with path.open("rb") as fh:
            head = fh.read(1 << 16)
    else:  # a pipe: read it whole, once; the loader gets the same bytes
        head = _read_bytes(path)[: 1 << 16]
    head = head.removeprefix(b"\xef\xbb\xbf").lstrip()
    if not head:
        raise DataError("the file is empty", file=path)
    if head.startswith(b"["):
        return "json"
    if head.startswith(b"{"):
        if b'"Instances"' in head or (suffix == ".json" and b'"Definition"' in head):
            return "superni"
        return "jsonl"
    if suffix == ".jsonl":
        return "jsonl"
    raise DataError("cannot detect the data format from the content", file=path,
                    hint="pass --format jsonl|json|csv|superni|cl-benchmark|hf")


def load_task(data: str | Path, *, name: str | None = None, format: str = "auto", input_field: str = "input",
              output_field: str | None = "output", instruction: str | None = None, split: str = "train",
              max_examples: int | None = None, seed: int = 0) -> Task:
    """Read ``data`` in ``format`` into a :class:`Task`."""
    if format not in FORMATS:
        raise DataError(f"unknown format {format!r}; choose one of {', '.join(FORMATS)}", field="format")
    path = Path(data)
    if format != "hf" and not path.exists():
        raise DataError("data path does not exist", file=path,
                        hint="for a Hugging Face hub dataset pass --format hf")
    try:
        return _load_task(path, data, name, format, input_field, output_field, instruction, split, max_examples,
                          seed)
    finally:
        _READ_ONCE.clear()


def _load_task(path: Path, data: str | Path, name: str | None, format: str, input_field: str,
               output_field: str | None, instruction: str | None, split: str, max_examples: int | None,
               seed: int) -> Task:
    fmt = detect_format(path) if format == "auto" else format
    if fmt in ("jsonl", "json", "csv") and path.is_dir():
        raise DataError(f"format {fmt} expects a file, got a folder", file=path)
    task_instruction = instruction
    if fmt == "jsonl":
        examples = load_jsonl(path, input_field, output_field)
    elif fmt == "json":
        examples = load_json(path, input_field, output_field)
    elif fmt == "csv":
        examples = load_csv(path, input_field, output_field)
    elif fmt == "superni":
        examples, definition = load_superni(path, split)
        task_instruction = instruction if instruction is not None else definition
    elif fmt == "cl-benchmark":
        examples, task_instruction = load_cl_benchmark(path, split, instruction)
    else:
        examples = load_hf(str(data), split, input_field, output_field)
    task = Task(name or path.stem or str(data), examples, task_instruction, source=str(data))
    if max_examples is not None:
        task = task.sample(max_examples, seed)
    return task


def load_task_from_config(data: str | Path, data_cfg: Any, name: str | None = None, seed: int = 0) -> Task:
    """:func:`load_task` with the ``data`` section of a config."""
    return load_task(data, name=name, format=data_cfg.format, input_field=data_cfg.input_field,
                     output_field=data_cfg.output_field, instruction=data_cfg.instruction, split=data_cfg.split,
                     max_examples=data_cfg.max_examples, seed=seed)


def load_queries(data: str | Path, **kwargs: Any) -> list[tuple[str | None, str]]:
    """(instruction, input) pairs of a data file whose outputs are not needed (a pool of negatives)."""
    task = load_task(data, output_field=None, **kwargs)
    return [(ex.instruction or task.instruction, ex.input) for ex in task.examples]
