"""What a 422 says about a field: pydantic's message, or, for a field the model does not have,
the closest one it does (`querry` -> did you mean 'query'?), as the CLI answers a mistyped option.
"""

from __future__ import annotations

import types
from collections.abc import Mapping, Sequence
from typing import Any, Union, get_args, get_origin

from pydantic import BaseModel

from tessera.core import suggest


def body_model(route: Any) -> Any:
    """The pydantic model of a FastAPI route's JSON body, or None (no route, no body)."""
    field = getattr(route, "body_field", None)
    return getattr(getattr(field, "field_info", None), "annotation", None)


def explain(error: Mapping[str, Any], body: Any) -> str:
    """One validation error's message; an unknown field's names the fields allowed there."""
    loc = list(error.get("loc", ()))
    if error.get("type") != "extra_forbidden" or len(loc) < 2 or loc[0] != "body":
        return str(error.get("msg"))
    fields = fields_at(body, loc[1:-1])
    if not fields:
        return str(error.get("msg"))
    return (f"unknown field{suggest.did_you_mean(str(loc[-1]), fields)}; fields here: "
            f"{', '.join(fields)}")


def fields_at(model: Any, path: Sequence[Any]) -> list[str]:
    """The field names of the object at `path` inside a body of type `model` (through nested
    models, lists and dicts), or [] when that is no model."""
    kind = model
    for part in path:
        kind = _unwrap(kind)
        if _is_model(kind):
            field = kind.model_fields.get(str(part))
            if field is None:
                return []
            kind = field.annotation
        elif get_origin(kind) in (dict, list) and get_args(kind):
            kind = get_args(kind)[-1]  # a key or an index: the type of the values
        else:
            return []
    kind = _unwrap(kind)
    return list(kind.model_fields) if _is_model(kind) else []


def _unwrap(kind: Any) -> Any:
    """`X | None` -> X; anything else as it is."""
    if get_origin(kind) in (Union, types.UnionType):
        inner = [a for a in get_args(kind) if a is not type(None)]
        return inner[0] if len(inner) == 1 else kind
    return kind


def _is_model(kind: Any) -> bool:
    return isinstance(kind, type) and issubclass(kind, BaseModel)
