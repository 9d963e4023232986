"""A route's jq transform (relay/transforms.py): compiled once, run per document, and blind to the process.
Pure: programs and documents in, records or TransformError out (the HTTP side is test_transformed.py)."""

from __future__ import annotations

import pytest

from relay.transforms import MAX_MESSAGE, MAX_OUTPUTS, PRESETS, TransformError, compile_transform, one_line

ROUTE = {"name": "shop", "database": None, "table": None, "mode": "user_track", "track_record_type": None}


def program(source: str, **args: object) -> list[object]:
    """What a route's own program emits for the document {"n": 2}."""
    return compile_transform(source=source, preset=None, args=args, route=ROUTE).run({"n": 2})


def failure(source: str) -> str:
    """The message of a program that does not compile, or fails on {"n": 2}."""
    with pytest.raises(TransformError) as caught:
        program(source)
    return str(caught.value)


def test_a_program_emits_zero_or_more_records() -> None:
    """Each value the program emits is a record of the document, in order; `empty` is none."""
    assert program("{a: .n}, {b: (.n * 2)}") == [{"a": 2}, {"b": 4}]
    assert program("empty") == []


def test_a_program_sees_its_args_and_route() -> None:
    """`$args` are the route's transform_args, `$route` its name and mode."""
    assert program("{k: $args.k, route: $route.name, mode: $route.mode}", k="v") == [
        {"k": "v", "route": "shop", "mode": "user_track"}
    ]


def test_a_program_sees_nothing_of_the_process(monkeypatch: pytest.MonkeyPatch) -> None:
    """`env` and `$ENV` are empty objects: no program can copy a secret of the environment."""
    monkeypatch.setenv("BRAZE_API_KEY", "a-secret-of-the-process")
    assert program("[env, $ENV]") == [[{}, {}]]


def test_what_does_not_compile_says_so_in_one_line() -> None:
    """jq's compile error, on one line, naming what failed."""
    message = failure("{a: .n")
    assert message.startswith("does not compile: jq: error") and "\n" not in message


def test_an_import_cannot_run_as_a_transform() -> None:
    """A program that compiles alone but not after the prelude (a module directive at the top, as an import
    or include would be) is named as such."""
    assert failure("module {a: 1}; .").startswith("cannot run as a transform")


def test_a_runtime_error_fails_the_document() -> None:
    """`error(...)` and jq's own runtime errors fail the document with jq's message."""
    assert "too small" in failure('if .n < 3 then error("too small") else . end')
    assert "cannot be added" in failure(".n + {}")


def test_a_runaway_program_stops_at_the_most_outputs() -> None:
    """A program emitting more than MAX_OUTPUTS records fails its document instead of filling memory."""
    assert program(f"range({MAX_OUTPUTS})") == list(range(MAX_OUTPUTS))
    assert f"more than {MAX_OUTPUTS}" in failure("range(infinite)")


def test_one_line_keeps_jq_errors_and_bounds_their_length() -> None:
    """jq's multi-line messages keep their `jq: error` lines, joined; an overlong one is cut with '...'."""
    text = "jq: error: x/0 is not defined at <top-level>, line 1:\n.n + x\n    ^\njq: 1 compile error"
    assert one_line(text) == "jq: error: x/0 is not defined at <top-level>, line 1"
    assert one_line("something odd\nand more") == "something odd"
    long = one_line("jq: error: " + "x" * 1000)
    assert len(long) == MAX_MESSAGE and long.endswith("...")
    assert one_line("") == "jq failed"


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_every_preset_compiles_and_says_its_name(preset: str) -> None:
    """Each shipped preset compiles as a transform, named 'preset <name>'; a route's own is 'jq transform'."""
    compiled = compile_transform(source=None, preset=preset, args={}, route=ROUTE)
    assert compiled.label == f"preset {preset}"
    assert compile_transform(source=".", preset=None, args={}, route=ROUTE).label == "jq transform"
