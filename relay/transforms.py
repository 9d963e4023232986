"""A route's jq transform (`transform`, or a `preset` shipped in relay/presets/): compiled once at start.

The program runs on one incoming document and emits zero or more values, the records of that
document. It sees `$args` (the route's `transform_args`) and `$route` (the route's name, database,
table, mode and track_record_type), and nothing of the process: `$ENV` and `env` are empty objects
in a transform, so no program can copy a key or secret of the environment into a record.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jq

PRESETS_DIR = Path(__file__).with_name("presets")


@dataclass(frozen=True)
class Preset:
    """A transform shipped with the product, and the route settings it is written for."""

    modes: tuple[str, ...]  # a route with another mode stops the boot
    track_record_type: str | None  # what `transform try --preset` assumes when not told


PRESETS = {
    "td_js_sdk": Preset(("user_track",), "custom_events"),
    "td_js_consent": Preset(("user_subscription",), None),
    "segment": Preset(("user_track", "user_identifying"), "custom_events"),
    "shopify_orders": Preset(("user_track",), "purchases"),
    "appsflyer": Preset(("user_track",), "custom_events"),
}
MAX_OUTPUTS = 1000  # records one document may emit: a runaway program fails that input, not the process
MAX_MESSAGE = 300  # characters of jq's message kept in an answer or a dead letter
# Shadows what would let a program read the process: jq's `env` and `$ENV` (the relay's secrets).
# On the program's first line, so `$__loc__` keeps its line numbers.
PRELUDE = "def env: {}; {} as $ENV | "


class TransformError(Exception):
    """The program did not compile, failed on one document, or emitted too much; the message says which."""


class OverOutputs(Exception):
    """The program emitted more than the caller allowed it (its request's budget): it was stopped there."""


def one_line(message: str) -> str:
    """jq's message on one line: its `jq: error` lines (the source excerpt and caret are dropped)."""
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    errors = [line.removesuffix(":") for line in lines if line.startswith("jq: error")]
    text = "; ".join(errors or lines[:1]) or "jq failed"
    return text if len(text) <= MAX_MESSAGE else text[: MAX_MESSAGE - 3] + "..."


@dataclass(frozen=True, eq=False)
class Transform:
    """A compiled program with the variables it sees; `run` applies it to one document."""

    preset: str | None
    args: Mapping[str, Any]
    program: Any = field(repr=False)

    @property
    def label(self) -> str:
        """How `check` and the OpenAPI document name it: 'preset segment' or 'jq transform'."""
        return f"preset {self.preset}" if self.preset else "jq transform"

    def run(self, document: Any, most: int | None = None) -> list[Any]:
        """The values the program emits for one document; TransformError with jq's message if it fails.

        `most`: the program is stopped at its next value after that many (OverOutputs), so a
        request's budget of records is kept without making them all first.
        """
        outputs: list[Any] = []
        try:
            for value in self.program.input_value(document):
                if most is not None and len(outputs) >= most:
                    raise OverOutputs(f"emitted more than the {most} records left to its request")
                if len(outputs) == MAX_OUTPUTS:
                    raise TransformError(f"emitted more than {MAX_OUTPUTS} records from one input")
                outputs.append(value)
        except ValueError as exc:  # jq's runtime errors, `error(...)` included
            raise TransformError(one_line(str(exc))) from None
        return outputs


def preset_source(name: str) -> str:
    """The jq text of a preset."""
    return (PRESETS_DIR / f"{name}.jq").read_text(encoding="utf-8")


def compile_transform(
    *, source: str | None, preset: str | None, args: Mapping[str, Any], route: Mapping[str, Any]
) -> Transform:
    """Compile a route's program (its own text, or a preset's); TransformError with jq's message."""
    text = preset_source(preset) if preset else (source or "")
    variables = {"args": dict(args), "route": dict(route)}
    try:
        # The program as written first, so jq's line and column numbers are the author's.
        jq.compile(text, args=variables)
    except ValueError as exc:
        raise TransformError(f"does not compile: {one_line(str(exc))}") from None
    try:
        program = jq.compile(PRELUDE + text + "\n", args=variables)
    except ValueError as exc:  # compiles alone, not after the prelude: `import`/`include` at the top
        raise TransformError(
            f"cannot run as a transform (no import or include): {one_line(str(exc))}"
        ) from None
    return Transform(preset=preset, args=dict(args), program=program)
