"""Spec fields with rules: how a kind declares what its spec accepts, and the one parser that checks it.

A kind's spec is a frozen dataclass whose fields are made with ``spec_field(default, rule)``; ``parse_fields``
refuses unknown and missing keys and every field its rule refuses, with a SpecError that names the field and
what it accepts. Torch-free: the scheduler validates specs on submit.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any, TypeVar

from workers.errors import SpecError

S = TypeVar("S")


@dataclass(frozen=True)
class Rule:
    """How one field is checked: what it accepts (in words, for messages) and how a good value is stored."""

    accepted: str
    check: Callable[[Any], bool]
    normalise: Callable[[Any], Any] = lambda value: value


def is_int(value: Any) -> bool:
    # bool is a subclass of int, but `"steps": true` is a mistake, not 1.
    return isinstance(value, int) and not isinstance(value, bool)


def is_non_empty_string(value: Any) -> bool:
    return isinstance(value, str) and value.strip() != ""


def integer(low: int, high: int) -> Rule:
    return Rule(f"an integer from {low} to {high}", lambda v: is_int(v) and low <= v <= high)


def optional_integer(low: int, high: int) -> Rule:
    return Rule(f"null or an integer from {low} to {high}", lambda v: v is None or (is_int(v) and low <= v <= high))


def _is_finite_number(value: Any) -> bool:
    return (is_int(value) or isinstance(value, float)) and math.isfinite(value)


def positive_number(high: float) -> Rule:
    return Rule(f"a number greater than 0 and at most {high}", lambda v: _is_finite_number(v) and 0 < v <= high, float)


def number(low: float, high: float) -> Rule:
    return Rule(f"a number from {low} to {high}", lambda v: _is_finite_number(v) and low <= v <= high, float)


def choice(*options: str) -> Rule:
    return Rule("one of " + ", ".join(repr(o) for o in options), lambda v: v in options)


BOOLEAN = Rule("true or false", lambda v: isinstance(v, bool))
SEED = integer(0, 2**32 - 1)


def spec_field(default: Any, rule: Rule, *, required: bool = False) -> Any:
    """A spec dataclass field; ``required``: the user must give it (its default only stands for "missing")."""
    return field(default=default, metadata={"rule": rule, "required": required})


def validate_fields(spec: Any) -> None:
    """Check every field of a spec dataclass against its rule and store the normalised value.

    Called from the spec's ``__post_init__``, so a spec built directly is checked too.
    """
    for f in fields(spec):
        value = getattr(spec, f.name)
        rule: Rule = f.metadata["rule"]
        if not rule.check(value):
            raise refused(f.name, rule.accepted, value)
        # Frozen dataclass: normalising in __post_init__ is the one place a field may be set.
        object.__setattr__(spec, f.name, rule.normalise(value))


def refused(name: str, accepted: str, value: Any) -> SpecError:
    """The SpecError for a spec field whose value is not acceptable."""
    return SpecError(f"spec.{name}: must be {accepted}, got {value!r}", field=f"spec.{name}", accepted=accepted)


def to_dict(spec: Any) -> dict[str, Any]:
    """A spec dataclass as a JSON-able dict with every default filled in (tuples become lists)."""
    result = {}
    for f in fields(spec):
        value = getattr(spec, f.name)
        result[f.name] = list(value) if isinstance(value, tuple) else value
    return result


def default_of(spec_class: type, name: str) -> Any:
    """The default of one field of a spec dataclass."""
    return spec_class.__dataclass_fields__[name].default


def parse_fields(spec_class: type[S], kind: str, spec: Any) -> S:
    """Validate a user's spec for a ``kind`` whose spec is ``spec_class``; returns it with defaults filled in.

    Raises SpecError naming the offending field (``spec``, ``spec.<name>``) and what it accepts.
    """
    if not isinstance(spec, Mapping):
        raise SpecError(f"spec: must be a JSON object, got {spec!r}"[:300], field="spec", accepted="a JSON object")
    names = [f.name for f in fields(spec_class)]
    for key in spec:
        if key not in names:
            raise SpecError(
                f"spec.{key}: unknown key for a {kind} job; accepted keys are {', '.join(names)}",
                field=f"spec.{key}",
                accepted="one of the keys " + ", ".join(names),
            )
    for f in fields(spec_class):
        if f.metadata["required"] and spec.get(f.name) is None:
            accepted = f.metadata["rule"].accepted
            raise SpecError(f"spec.{f.name}: is required for a {kind} job; give {accepted}", field=f"spec.{f.name}",
                            accepted=accepted)
    return spec_class(**spec)
