"""Help text generated from config models: every leaf key, its default and its description."""

import yaml
from pydantic import Field

from curation.config import Section
from curation.confighelp import commented_yaml, format_keys, model_keys, restated_defaults


class Inner(Section):
    size: int = Field(3, description="how many")


class Item(Section):
    name: str = Field(..., description="item name")


class Outer(Section):
    path: str = Field(..., description="where")
    ratio: float = Field(0.5, description="a fraction")
    tags: list[str] = Field(default_factory=list, description="labels")
    pair: tuple[int, int] = Field((1, 2), description="two numbers")
    mode: str | None = Field(None, description="null: automatic")
    inner: Inner = Inner()
    items: list[Item] = Field(default_factory=list, description="set in YAML")


def test_model_keys_lists_leaves_with_defaults():
    assert list(model_keys(Outer)) == [
        ("path", "required", "where"),
        ("ratio", "0.5", "a fraction"),
        ("tags", "[]", "labels"),
        ("pair", "[1, 2]", "two numbers"),
        ("mode", "null", "null: automatic"),
        ("inner.size", "3", "how many"),
        ("items[].name", "required", "item name"),
    ]


def test_format_keys_wraps_descriptions_under_their_key():
    long_key = "a.much.longer.key.that.does.not.fit.the.column.at.all"
    text = format_keys([("a.key", "1", "word " * 30), (long_key, "x", "d")], width=90)
    lines = text.splitlines()
    assert lines[0].startswith("  a.key ") and lines[0].rstrip().endswith("word")
    assert all(len(line) <= 90 for line in lines)
    assert "[default: 1]" in text and lines[-2] == f"  {long_key}"
    assert lines[-1].strip() == "d [default: x]"


def test_restated_defaults_compares_values_as_the_field_reads_them():
    data = {
        "path": "p",
        "ratio": 0.5,
        "tags": ["a"],
        "pair": [1, 2],
        "mode": None,
        "inner": {"size": 3.0},
        "items": [{"name": "x"}],
        "unknown": 1,
    }
    assert list(restated_defaults(data, Outer)) == ["ratio", "pair", "mode", "inner.size"]
    assert list(restated_defaults({"ratio": 0.25, "inner": {"size": 4}, "pair": [2, 1]}, Outer)) == []
    assert list(restated_defaults({"ratio": "not a number"}, Outer)) == []


class Entry(Section):
    name: str = Field(..., description="entry name")
    k: int = Field(4, description="neighbours")


class Listing(Section):
    entries: list[Entry] = Field(default_factory=list, description="entries, in order")
    sub: Inner | None = Field(None, description="optional section")


def test_restated_defaults_walks_list_items():
    data = {"entries": [{"name": "a", "k": 4}, {"name": "b", "k": 32}, {"name": "c", "k": 4}]}
    assert list(restated_defaults(data, Listing)) == ["entries[].k", "entries[].k"]


def test_commented_yaml_round_trips_and_comments_every_key():
    config = Listing(entries=[Entry(name="a"), Entry(name="b", k=8)])
    text = commented_yaml(config)
    assert yaml.safe_load(text) == config.model_dump(mode="json")
    assert text.splitlines() == [
        f"{line:<38}  # {comment}"
        for line, comment in [
            ("entries:", "entries, in order"),
            ("  - name: a", "entry name"),
            ("    k: 4", "neighbours"),
            ("  - name: b", "entry name"),
            ("    k: 8", "neighbours"),
            ("sub: null", "optional section"),
        ]
    ]
    assert commented_yaml(Listing()).startswith(f"{'entries: []':<38}  # entries, in order\n")
    item = Listing(entries=[Entry(name="a")], sub=Inner())
    assert yaml.safe_load(commented_yaml(item))["sub"] == {"size": 3}
    nested = commented_yaml(Outer(path="where: 'quoted'", inner=Inner(size=5)))
    assert yaml.safe_load(nested)["path"] == "where: 'quoted'"
    assert "inner:\n  size: 5" in nested and "  # how many" in nested
