import pytest
from omegaconf import OmegaConf

from see.config import SeeConfig, load_config, valid_keys
from see.errors import ConfigError


def test_defaults_come_from_the_schema():
    cfg = load_config()
    assert cfg.lora.r == SeeConfig().lora.r
    assert cfg.reconstruction.negative_ratio == 0.2
    assert cfg.reconstruction.rehearsal_size == 100
    assert cfg.routing.threshold == "auto" and cfg.train.epochs == "auto"
    assert cfg.routing.mode == "batched"


def test_yaml_then_overrides(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("lora:\n  r: 4\ntrain:\n  lr: 0.01\n  epochs: 2\n")
    cfg = load_config(f, ["train.epochs=5", "routing.threshold=0.7", "lora.target_modules=[q_proj,v_proj]"])
    assert cfg.lora.r == 4 and cfg.train.lr == 0.01 and cfg.train.epochs == 5
    assert cfg.routing.threshold == 0.7
    assert list(cfg.lora.target_modules) == ["q_proj", "v_proj"]


def test_unknown_yaml_key_names_file_line_and_valid_keys(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("train:\n  lr: 0.01\n  epoch: 2\n")
    with pytest.raises(ConfigError) as err:
        load_config(f)
    msg = str(err.value)
    assert f"{f}:3" in msg and "train.epoch" in msg and "train.epochs" in msg


def test_wrong_type_names_the_key(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("lora:\n  r: many\n")
    with pytest.raises(ConfigError) as err:
        load_config(f)
    assert "lora.r" in str(err.value) and f"{f}:2" in str(err.value)


@pytest.mark.parametrize("override,field", [
    ("lora.r=0", "lora.r"), ("lora.r=-2", "lora.r"), ("routing.threshold=1.5", "routing.threshold"),
    ("routing.mode=parallel", "routing.mode"), ("train.eval_fraction=1.0", "train.eval_fraction"),
    ("nosuch.key=1", "nosuch"), ("train.batch_size=0", "train.batch_size"),
])
def test_bad_overrides(override, field):
    with pytest.raises(ConfigError) as err:
        load_config(None, [override])
    assert field in str(err.value)


def test_override_without_equals():
    with pytest.raises(ConfigError):
        load_config(None, ["train.epochs"])


def test_valid_keys_lists_every_leaf():
    keys = valid_keys()
    assert "lora.r" in keys and "routing.threshold" in keys and "model.base" in keys
    assert all("." in k for k in keys)
    assert OmegaConf.select(load_config(), "prompt.template")


def test_readme_config_table_is_the_schema():
    """The README's table is generated from the schema's field docs (python -m see.config)."""
    from pathlib import Path

    from see.config import config_table, schema_fields

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    start = readme.index("<!-- config-table")
    block = readme[readme.index("\n", start) + 1: readme.index("<!-- /config-table -->")].strip()
    assert block == config_table()
    assert all(f.metadata.get("help") for _, f in schema_fields()), "every config field documents itself"


@pytest.mark.parametrize("override", ["train.lr=.inf", "train.lr=.nan", "lora.dropout=.nan"])
def test_non_finite_numbers_are_rejected(override):
    with pytest.raises(ConfigError, match="finite"):
        load_config(None, [override])


@pytest.mark.parametrize("override,key,value", [
    ("train.lr=2e-4", "lr", 2e-4),          # YAML 1.1 reads this as text: no dot
    ("train.lr=0.003", "lr", 0.003),
    ("train.lr=auto", "lr", "auto"),
    ("train.epochs=1e1", "epochs", 10.0),
])
def test_number_or_word_fields_take_exponent_numbers(override, key, value, tmp_path):
    assert getattr(load_config(None, [override]).train, key) == value
    f = tmp_path / "c.yaml"
    f.write_text(f"train:\n  {override.split('.', 1)[1].replace('=', ': ')}\n")
    assert getattr(load_config(f, []).train, key) == value


@pytest.mark.parametrize("override,value", [("train.refit=auto", "auto"), ("train.refit=true", True),
                                            ("train.refit=false", False)])
def test_a_word_or_boolean_field_takes_either(override, value):
    refit = load_config(None, [override]).train.refit
    assert refit == value and type(refit) is type(value)


@pytest.mark.parametrize("override", ["train.refit=sometimes", "train.refit=1", "train.refit=0.5"])
def test_a_word_or_boolean_field_rejects_anything_else(override):
    with pytest.raises(ConfigError, match=r"train\.refit.*must be auto, true or false"):
        load_config(None, [override])


@pytest.mark.parametrize("override", ["train.lr=fast", "train.lr=-1e-3", "train.lr=0"])
def test_a_learning_rate_that_is_neither_auto_nor_positive_is_rejected(override):
    with pytest.raises(ConfigError, match="train.lr"):
        load_config(None, [override])
