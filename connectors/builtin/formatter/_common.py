"""How a formatter action's ``transform`` picks its input model, and helpers all three use."""

from __future__ import annotations

import functools
import json
from decimal import (
    Decimal,
)
from typing import Annotated, Any, get_args

import phonenumbers
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ModelWrapValidatorHandler,
    RootModel,
    ValidationError,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError
from pydantic_core.core_schema import ErrorType

from connectors.registry import suggest

# --------------------------------------------------------------------------- input plumbing

_TRANSFORM_HELP = "Which conversion to apply"
_KNOWN_ERRORS = frozenset(get_args(ErrorType))


class _Transform(BaseModel):
    model_config = ConfigDict(extra="forbid")

    transform: str = Field(description=_TRANSFORM_HELP)
    value: Any = Field(description="The value to convert")


class _ByTransform(RootModel[Any]):
    """An input whose fields depend on its ``transform``.

    Pydantic locates errors of a tagged union under the tag (``replace.find``); they are moved
    back to where the user wrote them (``find``), and an unknown transform or field lists what
    is allowed.
    """

    @model_validator(mode="wrap")
    @classmethod
    def _locate_errors(cls, data: Any, handler: ModelWrapValidatorHandler[Any]) -> Any:
        try:
            return handler(data)
        except ValidationError as exc:
            raise _relocated(cls, data, exc) from None

    @classmethod
    def variants(cls) -> dict[str, type[_Transform]]:
        """Each transform name and the model of its fields, in declaration order."""
        return _variants(cls)


@functools.cache
def _variants(model: type[RootModel[Any]]) -> dict[str, type[_Transform]]:
    found: dict[str, type[_Transform]] = {}
    for variant in get_args(model.model_fields["root"].annotation):
        for tag in get_args(variant.model_fields["transform"].annotation):
            found[tag] = variant
    return found


def _relocated(model: type[_ByTransform], data: Any, exc: ValidationError) -> ValidationError:
    variants = model.variants()
    allowed = ", ".join(variants)
    tag = data.get("transform") if isinstance(data, dict) else None
    tag = tag if isinstance(tag, str) else None
    details: list[InitErrorDetails] = []
    for err in exc.errors(include_url=False):
        kind, loc = err["type"], tuple(err["loc"])
        if tag is not None and loc[:1] == (tag,):
            loc = loc[1:]
        if kind == "union_tag_invalid":
            given = data.get("transform")
            hint = suggest(str(given), set(variants))
            message = f"unknown transform {given!r}{hint}; allowed: {allowed}"
            error: Any = PydanticCustomError("unknown_transform", message)
            details.append({"type": error, "loc": ("transform",), "input": given})
        elif kind == "union_tag_not_found":
            message = f"required field 'transform' is missing; one of: {allowed}"
            error = PydanticCustomError("transform_missing", message)
            details.append({"type": error, "loc": ("transform",), "input": data})
        elif kind == "extra_forbidden" and len(loc) == 1 and tag in variants:
            fields = list(variants[tag].model_fields)
            hint = suggest(str(loc[0]), fields)
            message = f"unknown field {loc[0]!r}{hint}; {tag} takes: {', '.join(fields)}"
            error = PydanticCustomError("unknown_field", message)
            details.append({"type": error, "loc": loc, "input": data})
        elif kind in _KNOWN_ERRORS:
            detail: InitErrorDetails = {"type": kind, "loc": loc, "input": err["input"]}
            if "ctx" in err:
                detail["ctx"] = err["ctx"]
            details.append(detail)
        else:
            error = PydanticCustomError(kind, err["msg"])
            details.append({"type": error, "loc": loc, "input": err["input"]})
    return ValidationError.from_exception_data(exc.title, details)


# --------------------------------------------------------------------------- shared helpers


def _text(value: Any) -> str:
    """A value as text: nothing is "", lists and mappings are JSON, booleans true/false."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict | list | tuple):
        return json.dumps(value, ensure_ascii=False, default=str)
    return str(value)


def _is_empty(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, str):
        return not value.strip()
    return isinstance(value, list | tuple | dict) and not value


def _native(number: Decimal) -> int | float:
    """A whole number as int, anything else as float."""
    if number == number.to_integral_value():
        return int(number)
    return float(number)


def _check_region(region: str | None) -> str | None:
    if region is None:
        return None
    code = region.strip().upper()
    if code not in phonenumbers.SUPPORTED_REGIONS:
        hint = suggest(code, phonenumbers.SUPPORTED_REGIONS)
        raise ValueError(
            f"unknown region {region!r}{hint}; use an ISO 3166 country code such as HK, US or GB"
        )
    return code


Region = Annotated[str, AfterValidator(_check_region)]
