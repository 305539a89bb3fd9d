"""Help text generated from config models: every leaf key, its default and its description."""

from pydantic import Field

from curation.config import Section
from curation.confighelp import format_keys, model_keys


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
