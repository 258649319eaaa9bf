"""The base of every config section: unknown keys are errors, assignments are validated, a YAML
``true``/``false`` is never taken for a number, and settings added after runs were recorded can be left out
of the recorded config at their default (:func:`omitted_defaults`)."""

from __future__ import annotations

import types
import typing
from pathlib import Path
from typing import Any, ClassVar

from pydantic import (
    BaseModel,
    ConfigDict,
    SerializerFunctionWrapHandler,
    ValidationInfo,
    field_validator,
    model_serializer,
    model_validator,
)

_NUMBERS = (int, float)


def _accepted(annotation: Any) -> list[Any]:
    """The types an annotation accepts, an optional's None left out."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return [a for a in typing.get_args(annotation) if a is not type(None)]
    return [annotation]


def _bool_for_number(value: Any, annotation: Any) -> bool:
    """True when ``value`` is, or a list or mapping of numbers holds, a boolean where ``annotation`` wants
    numbers (a number type, a Literal of numbers, or a list or mapping of them)."""
    accepted = _accepted(annotation)
    if bool in accepted or Any in accepted:
        return False
    if isinstance(value, bool):
        return any(_number(a) for a in accepted)
    if isinstance(value, list | tuple):
        return any(_bool_for_number(v, t) for a in accepted for t in _items(a, (list, tuple)) for v in value)
    if isinstance(value, dict):
        return any(
            _bool_for_number(v, t) for a in accepted for t in _items(a, (dict,))[-1:] for v in value.values()
        )
    return False


def _number(annotation: Any) -> bool:
    """Whether ``annotation`` is a number type or a Literal of numbers (pydantic reads true as 1 for both)."""
    if typing.get_origin(annotation) is typing.Literal:
        return any(isinstance(v, _NUMBERS) and not isinstance(v, bool) for v in typing.get_args(annotation))
    return annotation in _NUMBERS


def _items(annotation: Any, origins: tuple[type, ...]) -> list[Any]:
    """The item types of ``annotation`` when it is one of the container ``origins``, else none."""
    if typing.get_origin(annotation) not in origins:
        return []
    return [t for t in typing.get_args(annotation) if t is not Ellipsis]


def _path_problem(value: Any, annotation: Any) -> str | None:
    """What is wrong with a path given for a ``Path`` (or list of ``Path``) field: empty, or a NUL byte."""
    accepted = _accepted(annotation)
    if Path in accepted:
        held = [value]
    elif any(Path in _items(a, (list, tuple)) for a in accepted) and isinstance(value, list | tuple):
        held = list(value)
    else:
        return None
    for v in held:
        if isinstance(v, str) and not v.strip():
            # an empty path is the config's own folder: never what was meant
            return "an empty path (the config's own folder) is never meant; give a path, or leave the key out"
        if isinstance(v, str) and "\0" in v:
            return f"{v!r} holds a NUL byte, which no path can; write the path without it"
    return None


def _bool_message(name: str, value: Any, annotation: Any) -> str:
    """The error for a YAML boolean in a number's place: which value, and what to write instead."""
    held = list(value.values()) if isinstance(value, dict) else value
    listed = isinstance(held, list | tuple)
    flag = str(next(v for v in held if isinstance(v, bool)) if listed else held).lower()
    accepted = _accepted(annotation)
    words = [
        repr(v)
        for a in accepted
        if typing.get_origin(a) is typing.Literal
        for v in typing.get_args(a)
        if isinstance(v, str)
    ]
    if not listed and words:
        other = f"one of {', '.join(words)}"
        return f"{name} must not be the YAML boolean {flag} (it is not read as a number); write a number or {other}"
    return f"{name} must {'hold numbers' if listed else 'be a number'}, not the YAML boolean {flag}; write the number"


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    #: Fields left out of the recorded config while at their default: settings added after runs were
    #: recorded, whose default is what spray did before, so that those runs keep their ids and cache keys.
    omit_at_default: ClassVar[tuple[str, ...]] = ()

    @model_validator(mode="before")
    @classmethod
    def _no_bool_for_number(cls, data: Any) -> Any:
        # pydantic's lax mode reads true as 1: a flag written where a count belongs would run silently
        if isinstance(data, dict):
            for name, value in data.items():
                field = cls.model_fields.get(name) if isinstance(name, str) else None
                # a number-or-name field is checked with the field's own key (_field_value)
                named = field is not None and str in _accepted(field.annotation)
                if field is not None and not named and _bool_for_number(value, field.annotation):
                    raise ValueError(_bool_message(name, value, field.annotation))
        return data

    @field_validator("*", mode="before")
    @classmethod
    def _field_value(cls, value: Any, info: ValidationInfo) -> Any:
        field = cls.model_fields.get(info.field_name or "")
        if field is None:
            return value
        if (
            isinstance(value, bool)
            and str in _accepted(field.annotation)
            and _bool_for_number(value, field.annotation)
        ):
            raise ValueError(
                f"must not be the YAML boolean {str(value).lower()} (it is not read as a number); write a number "
                "or a quoted name"
            )
        problem = _path_problem(value, field.annotation)
        if problem:
            raise ValueError(problem)
        return value

    @model_serializer(mode="wrap")
    def _leave_out_defaults(self, handler: SerializerFunctionWrapHandler) -> Any:
        out = handler(self)
        if isinstance(out, dict):
            for name in self.omit_at_default:
                if getattr(self, name) == type(self).model_fields[name].default:
                    out.pop(name, None)
        return out


def omitted_defaults(section: type[BaseModel], prefix: str = "") -> dict[str, Any]:
    """``"section.field": default`` of every setting left out of the recorded config at its default, in
    ``section`` and the sections it holds: what an older run's record means where it lacks the key."""
    out: dict[str, Any] = {}
    for name, field in section.model_fields.items():
        path = f"{prefix}.{name}" if prefix else name
        if issubclass(section, Section) and name in section.omit_at_default:
            out[path] = field.default
        for a in _accepted(field.annotation):
            if isinstance(a, type) and issubclass(a, BaseModel):
                out.update(omitted_defaults(a, path))
    return out
