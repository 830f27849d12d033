"""The one validation system: pydantic models that turn any bad input into one clear workbench error.

Job parameters (``jobs.params``) and model/training configurations (``model.config``) are both
:class:`Validated` models: their fields state the types, bounds and choices, and :meth:`Validated.parse`
turns a mapping from outside (CLI options, form fields, a stored JSON row) into an instance or raises
one :class:`workbench.errors.ValidationError` naming the first bad field. There is no second,
hand-written check of the same rules anywhere else.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar, Self

from pydantic import BaseModel, ConfigDict
from pydantic import ValidationError as PydanticValidationError

from workbench.errors import ValidationError


def first_error(what: str, exc: PydanticValidationError) -> ValidationError:
    """One sentence for the first problem pydantic found: ``"<what> <field>: <why>"``."""
    err = exc.errors()[0]
    where = ".".join(str(p) for p in err["loc"])
    if err["type"] == "value_error":  # a rule of ours: its own sentence, without pydantic's prefix
        why = str(err.get("ctx", {}).get("error", err["msg"]))
    elif err["type"] in ("missing", "extra_forbidden"):
        why = err["msg"]
    else:
        why = f"{err['msg']}, got {err['input']!r}"
    return ValidationError(f"{what} {where}: {why}" if where else f"{what}: {why}")


class Validated(BaseModel):
    """A validated value object: unknown fields are refused; :meth:`parse` gives workbench errors."""

    model_config = ConfigDict(extra="forbid")

    #: How errors name this model ("TrainParams", "model config"); the class name by default.
    what: ClassVar[str] = ""

    @classmethod
    def parse(cls, data: Mapping[str, Any] | BaseModel | None = None) -> Self:
        """A validated instance from a mapping (or another model's fields); one clear error otherwise."""
        if isinstance(data, cls):
            return data
        if isinstance(data, BaseModel):
            data = data.model_dump()
        try:
            return cls.model_validate(dict(data or {}))
        except PydanticValidationError as exc:
            raise first_error(cls.what or cls.__name__, exc) from None

    def derive(self, **changes: Any) -> Self:
        """A copy with ``changes`` applied and validated again (``model_copy`` would not validate)."""
        return type(self).parse({**self.model_dump(), **changes})
