"""The base of every config section: unknown keys are errors, assignments are validated, and a YAML
``true``/``false`` is never taken for a number."""

from __future__ import annotations

import types
import typing
from typing import Any

from pydantic import BaseModel, ConfigDict, model_validator

_NUMBERS = (int, float)


def _numeric(annotation: Any) -> bool:
    """True for ``int``/``float`` and their optionals; False when ``bool`` is among the accepted types."""
    if annotation in _NUMBERS:
        return True
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return bool(args) and bool not in args and all(a in _NUMBERS for a in args)
    return False


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    @model_validator(mode="before")
    @classmethod
    def _no_bool_for_number(cls, data: Any) -> Any:
        # pydantic's lax mode reads true as 1: a flag written where a count belongs would run silently
        if isinstance(data, dict):
            for name, value in data.items():
                field = cls.model_fields.get(name) if isinstance(name, str) else None
                if isinstance(value, bool) and field is not None and _numeric(field.annotation):
                    raise ValueError(
                        f"{name} must be a number, not the YAML boolean {str(value).lower()}; write the number"
                    )
        return data
