"""The base of every config section: unknown keys are errors, assignments are validated, a YAML
``true``/``false`` is never taken for a number, and settings added after runs were recorded can be left out
of the recorded config at their default (:func:`omitted_defaults`)."""

from __future__ import annotations

import types
import typing
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, SerializerFunctionWrapHandler, model_serializer, model_validator

_NUMBERS = (int, float)


def _accepted(annotation: Any) -> list[Any]:
    """The types an annotation accepts, an optional's None left out."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return [a for a in typing.get_args(annotation) if a is not type(None)]
    return [annotation]


def _bool_for_number(value: Any, annotation: Any) -> bool:
    """True when ``value`` is, or a list of numbers holds, a boolean where ``annotation`` wants numbers."""
    accepted = _accepted(annotation)
    if bool in accepted or Any in accepted:
        return False
    if isinstance(value, bool):
        # only where every accepted type is a number (or numbers): an int-or-key selector says it otherwise
        return all(a in _NUMBERS or _numbers(a) for a in accepted) and any(a in _NUMBERS for a in accepted)
    if isinstance(value, list | tuple) and any(_numbers(a) for a in accepted):
        return any(isinstance(v, bool) for v in value)
    return False


def _numbers(annotation: Any) -> bool:
    """Whether ``annotation`` is a list or tuple of numbers."""
    items = [t for t in typing.get_args(annotation) if t is not Ellipsis]
    return (
        typing.get_origin(annotation) in (list, tuple) and bool(items) and all(t in _NUMBERS for t in items)
    )


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
                if field is not None and _bool_for_number(value, field.annotation):
                    listed = isinstance(value, list | tuple)
                    flag = next(v for v in value if isinstance(v, bool)) if listed else value
                    raise ValueError(
                        f"{name} must {'hold numbers' if listed else 'be a number'}, not the YAML boolean "
                        f"{str(flag).lower()}; write the number"
                    )
        return data

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
