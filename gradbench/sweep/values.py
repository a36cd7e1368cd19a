"""Reading single values of a sweep file: names, integers, numbers, choices, and axes in every form.

`ValueReader` knows the file it reads, so each check returns the value in its checked type or raises a
`SpecError` naming the file, the key, the value and what is allowed, with a hint where a TOML value
only looks right (a quoted number, a boolean, `8.0` for `8`). The section rules (`gradbench.sweep.axes`,
`gradbench.sweep.train_section`, `gradbench.sweep.spec`) say which key takes which kind of value.

An axis may be written as a single value, a list, `{linspace = [a, b, n]}` (n evenly spaced values
from a to b), `{logspace = [a, b, n]}` (10^a to 10^b, evenly spaced in log), `{range = [start, stop]}`
or `{range = [start, stop, step]}` (integers, stop excluded) and, for replicates, `{count = N}`
(0 to N - 1).
"""

from __future__ import annotations

import math

from gradbench.errors import SpecError
from gradbench.schema import axis_scale
from gradbench.sweep.types import Axis

INT32_MAX = 2**31 - 1  # depth, width, batch, replicate and step counts reach the device as int32
MAX_AXIS_VALUES = 10_000_000  # one axis; the grid's size and memory are checked when it is expanded
GENERATORS = ("linspace", "logspace", "range")


class ValueReader:
    """Checks values read from one sweep file; `source` names the file in every error."""

    def __init__(self, source: str):
        self.source = source

    def error(self, key: str, given: object, allowed: str) -> SpecError:
        return SpecError(f"{self.source}: {key}", given, allowed)

    def check_keys(self, table: dict, section: str, allowed: set[str]) -> None:
        """Refuses a key of `table` (section `section`, "" for the top level) not in `allowed`."""
        for key in table:
            if key not in allowed:
                where = f"{section}.{key}" if section else key
                raise self.error(
                    where, key, f"keys {sorted(allowed)} (a typo must not change a sweep)"
                )

    def integer(
        self, value: object, where: str, minimum: int | None = None, maximum: int = INT32_MAX
    ) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.error(where, value, "an integer" + _hint(value))
        if minimum is not None and value < minimum:
            raise self.error(where, value, f"an integer >= {minimum}")
        if value > maximum:
            raise self.error(where, value, f"an integer <= {maximum:,}")
        return value

    def number(self, value: object, where: str) -> float:
        """A finite number, as a float."""
        if not _is_number(value):
            raise self.error(where, value, "a number" + _hint(value))
        if not math.isfinite(value):
            raise self.error(where, value, "a finite number")
        return float(value)

    def boolean(self, value: object, where: str) -> bool:
        if not isinstance(value, bool):
            shown = " (written without quotes)" if value in ("true", "false") else ""
            raise self.error(where, value, "true or false" + shown)
        return value

    def name(self, value: object, where: str) -> str:
        if not isinstance(value, str):
            raise self.error(where, value, "a name (a quoted string)")
        return value

    def number_or_name(self, value: object, where: str) -> float | str:
        """A finite number (as a float) or a name: a scale given as a value or as a rule."""
        return value if isinstance(value, str) else self.number(value, where)

    def choice(self, value: object, where: str, options: tuple[str, ...]) -> str:
        if not isinstance(value, str) or value not in options:
            raise self.error(where, value, f"one of {list(options)}")
        return value

    def axis(self, value: object, where: str, *, kind: str, counts: bool = False) -> Axis:
        """An axis of `kind` "name" (strings), "integer", "number" (finite) or "scale_rule" (numbers
        and names), in any accepted form;
        `counts` also accepts `{count = N}`. Values must be distinct (a repeat repeats configs)."""
        generator = None
        if isinstance(value, dict):
            if counts and set(value) == {"count"}:
                count = self.integer(
                    value["count"], f"{where}.count", minimum=1, maximum=MAX_AXIS_VALUES
                )
                return Axis(tuple(range(count)))
            if kind == "name" or len(value) != 1 or next(iter(value)) not in GENERATORS:
                allowed = (
                    "a name or a list of names"
                    if kind == "name"
                    else "a list, a single value, {linspace = [a, b, n]}, {logspace = [a, b, n]} "
                    "or {range = [start, stop, step]}" + (", or {count = N}" if counts else "")
                )
                raise self.error(where, value, allowed)
            generator, args = next(iter(value.items()))
            values = self.generated(generator, args, f"{where}.{generator}")
        elif isinstance(value, list):
            values = value
        else:
            values = [value]
        if not values:
            raise self.error(where, value, "at least one value (an empty axis makes an empty grid)")
        check = {
            "name": self.name,
            "integer": self.integer,
            "number": self.number,
            "scale_rule": self.number_or_name,
        }[kind]
        checked = tuple(check(v, where) for v in values)
        if len(set(checked)) != len(checked):
            raise self.error(where, values, "distinct values (a repeated value repeats configs)")
        # A generated axis is drawn as written: a logspace on a log axis, a linspace or range on a
        # linear one. A list is drawn on the scale its values suggest.
        if generator is None:
            scale = axis_scale(checked)
        else:
            scale = "log" if generator == "logspace" else "linear"
        return Axis(checked, scale)

    def generated(self, generator: str, args: object, where: str) -> list:
        """The values of `{linspace = args}`, `{logspace = args}` or `{range = args}`."""
        if not isinstance(args, list) or not all(_is_number(a) for a in args):
            raise self.error(where, args, "a list of numbers")
        if generator == "range":
            if len(args) not in (2, 3) or not all(isinstance(a, int) for a in args):
                raise self.error(
                    where, args, "[start, stop] or [start, stop, step] integers (stop excluded)"
                )
            if len(args) == 3 and args[2] == 0:
                raise self.error(where, args, "a non-zero step")
            values = range(*args)
            if len(values) > MAX_AXIS_VALUES:
                raise self.error(where, args, f"at most {MAX_AXIS_VALUES:,} values per axis")
            return list(values)
        if len(args) != 3 or not isinstance(args[2], int) or not 1 <= args[2] <= MAX_AXIS_VALUES:
            raise self.error(
                where,
                args,
                f"[start, stop, count] with an integer count from 1 to {MAX_AXIS_VALUES:,} "
                f"({generator})",
            )
        a, b, n = float(args[0]), float(args[1]), args[2]
        if not (math.isfinite(a) and math.isfinite(b)):
            raise self.error(where, args, "finite bounds")
        points = [a + (b - a) * i / (n - 1) for i in range(n)] if n > 1 else [a]
        if generator == "linspace":
            return points
        try:
            return [10.0**p for p in points]
        except OverflowError:
            raise self.error(
                where, args, "exponents up to 308 (10^a must be a finite number)"
            ) from None


def _hint(value: object) -> str:
    """Why a TOML value that looks numeric is not the number wanted."""
    if isinstance(value, bool):
        return ", not a boolean"
    if isinstance(value, str) and _parses_as_number(value):
        return " (written without quotes)"
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return f" (write {int(value)}, not {value})"
    return ""


def _parses_as_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)
