"""The seams of the layout: one prompt room, one acceptance rule, a typed manifest, a parser derived from
the command signatures, and imports that only point down."""
import ast
import inspect
import json
from pathlib import Path

import pytest
import torch

from see.errors import StoreError

SEE = Path(__file__).resolve().parents[1] / "see"

#: Lower layers never import higher ones (the data path reads in one direction).
LAYERS = [
    ("see.errors", "see.faults", "see.config", "see.jsonio", "see.results", "see.metrics", "see.embedded", "see.negatives"),
    ("see.data", "see.modeling"),
    ("see.prompt", "see.engine", "see.embedded.families", "see.embedded.build_base"),
    ("see.store", "see.experts"),
    ("see.routing", "see.loading"),
    ("see.export", "see.vllm_engine"),
    ("see.ensemble",),
    ("see.lifecycle",),
    ("see.bench", "see.demo", "see.serve", "see.cli"),
]


def _layer(module: str) -> int:
    """The layer of the most specific group that holds ``module``."""
    matches = [(len(g), k) for k, group in enumerate(LAYERS) for g in group
               if module == g or module.startswith(g + ".")]
    assert matches, f"{module} has no layer"
    return max(matches)[1]


def _imports():
    for path in SEE.rglob("*.py"):
        module = ".".join(path.relative_to(SEE.parent).with_suffix("").parts).removesuffix(".__init__")
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("see."):
                yield module, node.module


def test_imports_only_point_down():
    upward = [(m, d) for m, d in _imports() if m not in ("see", "see.__main__") and _layer(d) > _layer(m)]
    assert not upward, upward


def test_no_import_cycles():
    graph: dict[str, set[str]] = {}
    for m, d in _imports():
        graph.setdefault(m, set()).add(d)
    seen, on_stack = set(), []

    def visit(u):
        on_stack.append(u)
        for v in graph.get(u, ()):
            assert v not in on_stack, on_stack[on_stack.index(v):] + [v]
            if v not in seen:
                visit(v)
        on_stack.pop()
        seen.add(u)

    for m in list(graph):
        if m not in seen:
            visit(m)


# ----------------------------------------------------------------------------- the prompt

@pytest.fixture(scope="module")
def prompt():
    from see.embedded import BASE_DIR
    from see.modeling import load_tokenizer
    from see.prompt import PromptFormat

    return PromptFormat(load_tokenizer(str(BASE_DIR)), "{instruction}\n{input}\nAnswer:", 64)


def test_every_query_form_gives_the_same_prompt(prompt):
    want = "Do it.\nthe input\nAnswer:"
    assert prompt.text({"instruction": "Do it.", "input": "the input"}) == want
    assert prompt.text(("Do it.", "the input")) == want
    assert prompt.text([{"role": "system", "content": "Do it."}, {"role": "user", "content": "the input"}]) == want
    assert prompt.text("the input") == "the input\nAnswer:"
    with pytest.raises(Exception, match="a query must be"):
        prompt.text(42)


def test_encoding_ends_with_the_invocation_and_fits_the_context(prompt):
    inv = prompt.invocation_ids()
    for text in ("short", "a much longer input " * 40):
        ids = prompt.encode(prompt.text(text), max_new_tokens=10)
        assert ids[-len(inv):] == inv
        assert len(ids) <= prompt.limit(10) == 64 - 10 - 1


# ----------------------------------------------------------------------------- the acceptance rule

def test_accept_rule_by_hand():
    from see.routing.rule import accept

    pos = 1
    # softmax([0, ln 3, 0]) = [.2, .6, .2]; softmax([ln 4, ln 3, 0]) = [.5, .375, .125]
    logits = torch.log(torch.tensor([[1.0, 3.0, 1.0], [4.0, 3.0, 1.0], [4.0, 3.0, 1.0]]))
    p, ok = accept(logits, pos, [None, None, 0.3])
    assert p.tolist() == pytest.approx([0.6, 0.375, 0.375])
    assert ok.tolist() == [True, False, True]  # argmax, argmax, threshold


# ----------------------------------------------------------------------------- the typed manifest

def _manifest_json(tmp_path):
    from see.config import ModelConfig, PromptConfig, RoutingConfig
    from see.prompt import Indicator
    from see.store import BaseRecord, EnsembleStore, Manifest

    store = EnsembleStore(tmp_path)
    store.write(Manifest(BaseRecord("embedded", "abc", "llama", 10), None, ModelConfig(), PromptConfig(),
                         RoutingConfig(), Indicator("<<pos>>", "<<neg>>", 10, 11)))
    return store


def test_manifest_round_trips_typed(tmp_path):
    store = _manifest_json(tmp_path)
    m = store.read()
    assert m.routing.mode == "batched" and m.prompt.template.endswith("Answer:") and m.indicator.ids == (10, 11)
    data = json.loads(store.manifest_path.read_text())
    assert data["settings"]["routing"]["max_rows_per_forward"] == 256 and data["fallback"] is None


@pytest.mark.parametrize("path,value,field", [
    (("settings", "routing", "max_rows_per_forward"), "many", "settings.routing.max_rows_per_forward"),
    (("settings", "prompt"), "text", "settings.prompt"),
    (("settings", "model", "nosuch"), 1, "settings.model"),
])
def test_manifest_sections_of_the_wrong_type_name_the_field(tmp_path, path, value, field):
    store = _manifest_json(tmp_path)
    data = json.loads(store.manifest_path.read_text())
    node = data
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    store.manifest_path.write_text(json.dumps(data))
    with pytest.raises(StoreError) as err:
        store.read()
    assert field in str(err.value)


# ----------------------------------------------------------------------------- the CLI

def test_every_command_parameter_has_a_flag_and_is_called_by_keyword():
    from see.cli import COMMANDS, build_parser

    parser, takes_overrides = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    for name, (fn, _) in COMMANDS.items():
        dests = {a.dest for a in sub.choices[name]._actions}
        for param in inspect.signature(fn).parameters:
            assert param in dests or (param == "overrides" and name in takes_overrides), (name, param)


def test_parser_maps_flags_by_name(monkeypatch):
    """Flags reach the command by keyword, whatever the order of its signature."""
    import functools

    import see.cli as cli

    fn, summary = cli.COMMANDS["calibrate"]
    seen = {}

    @functools.wraps(fn)  # the same signature and annotations: the parser is derived from them
    def record(**kwargs):
        seen.update(kwargs)
        return 0

    monkeypatch.setitem(cli.COMMANDS, "calibrate", (record, summary))
    assert cli.main(["calibrate", "/x", "--json", "--target-fpr", "0.2"]) == 0
    assert seen == {"dir": Path("/x"), "target_frr": 0.2, "margin_odds": 10.0, "json_out": True}


def test_top_p_zero_samples_the_most_likely_token():
    from see.engine.decode import SamplingParams, _choose

    logits = torch.log(torch.tensor([[0.1, 0.7, 0.2]]))
    generator = torch.Generator().manual_seed(0)
    params = SamplingParams(temperature=1.0, top_p=0.0)
    assert {int(_choose(logits, params, generator)) for _ in range(20)} == {1}
