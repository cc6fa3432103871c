from dataclasses import dataclass, field
from typing import Literal

import pytest

from pipeline.config import apply_overrides, from_dict, load_yaml
from pipeline.errors import ConfigError, InputError
from pipeline.settings import RunConfig, load_config


@dataclass
class Inner:
    k: int = 3
    mode: Literal["a", "b"] = "a"

    def validate(self, prefix):
        if self.k < 0:
            raise ValueError(f"{prefix}k: must not be negative")


@dataclass
class Outer:
    inner: Inner = field(default_factory=Inner)
    rate: float = 1.0
    names: list[str] | None = None


def test_nested_values_and_defaults():
    o = from_dict(Outer, {"inner": {"k": 5}, "rate": 2})
    assert o.inner.k == 5 and o.inner.mode == "a" and o.rate == 2.0 and o.names is None


@pytest.mark.parametrize("data, key", [
    ({"inner": {"kk": 1}}, "inner.kk"),
    ({"inner": {"k": "x"}}, "inner.k"),
    ({"inner": {"k": -1}}, "inner.k"),
    ({"inner": {"mode": "c"}}, "inner.mode"),
    ({"rate": float("nan")}, "rate"),
    ({"names": [1]}, "names[0]"),
    ({"bogus": 1}, "bogus"),
])
def test_errors_name_the_key(data, key):
    with pytest.raises(ConfigError) as e:
        from_dict(Outer, data)
    assert str(e.value).startswith(key + ":")


def test_overrides_and_yaml_errors(tmp_path):
    assert apply_overrides({"a": {"b": 1}}, ["a.b=2", "a.c=x"]) == {"a": {"b": 2, "c": "x"}}
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: [1, 2\n")
    with pytest.raises(InputError) as e:
        load_yaml(bad)
    assert str(bad) in str(e.value)


def test_default_config_loads_and_rejects_unknown_keys(tmp_path):
    cfg = load_config()
    assert isinstance(cfg, RunConfig)
    assert load_config(None, ["tracker.max_age=7"]).tracker.max_age == 7
    p = tmp_path / "c.yaml"
    p.write_text("tracker:\n  max_agee: 3\n")
    with pytest.raises(ConfigError, match="tracker.max_agee"):
        load_config(p)


def test_base_config_is_merged_under_the_file(tmp_path):
    from pipeline.settings import load_config

    (tmp_path / "a.yaml").write_text("tracker: {max_age: 7, min_hits: 4}\nqueue_size: 3\n")
    (tmp_path / "b.yaml").write_text("base: a.yaml\ntracker: {max_age: 9}\n")
    cfg = load_config(tmp_path / "b.yaml", ["queue_size=5"])
    assert (cfg.tracker.max_age, cfg.tracker.min_hits, cfg.queue_size) == (9, 4, 5)
    (tmp_path / "c.yaml").write_text("base: c.yaml\n")
    with pytest.raises(ConfigError, match="includes itself"):
        load_config(tmp_path / "c.yaml")
