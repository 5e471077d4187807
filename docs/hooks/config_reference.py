"""mkdocs hook: the configuration reference, made from the settings models at every build.

A page holding the line `<!-- config-reference -->` gets one table per section of
`tessera.core.settings.Settings`: key, type, default, limits and the field's docstring. A field
added without a docstring fails the build (and `tests/project/test_docs.py`), so the reference
cannot fall behind the code.
"""

from __future__ import annotations

import inspect
import types
import typing
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

from annotated_types import Ge, Gt, Le, Lt
from pydantic import BaseModel, SecretStr
from pydantic.fields import FieldInfo

MARKER = "<!-- config-reference -->"


def on_page_markdown(markdown: str, **_: Any) -> str:
    """Replace the marker with the generated tables."""
    if MARKER not in markdown:
        return markdown
    from tessera.core.settings import Settings

    return markdown.replace(MARKER, render(Settings))


def render(settings: type[BaseModel]) -> str:
    """Markdown for every section of `settings`, top-level keys first."""
    return "\n\n".join(_section(title, model, prefix, env)
                       for title, model, prefix, env in _sections(settings, "", "TESSERA_", ""))


def undocumented(settings: type[BaseModel]) -> list[str]:
    """Keys of every field without a description (a docstring under the field)."""
    return [prefix + name for _, model, prefix, _ in _sections(settings, "", "TESSERA_", "")
            for name, field in model.model_fields.items() if not field.description]


def _sections(model: type[BaseModel], prefix: str, env: str | None,
              title: str) -> typing.Iterator[tuple[str, type[BaseModel], str, str | None]]:
    yield title or "Top level", model, prefix, env
    for name, field in model.model_fields.items():
        inner, kind = _nested(field.annotation)
        if inner is None:
            continue
        key = prefix + name
        if kind == "model":
            yield from _sections(inner, key + ".", env and f"{env}{name.upper()}__",
                                 f"[{key.replace('[]', '')}]")
        elif kind == "list":
            yield from _sections(inner, key + "[].", None, f"[[{key}]]")
        else:
            yield from _sections(inner, key + ".NAME.", None, f"[{key}.NAME]")


def _nested(annotation: Any) -> tuple[type[BaseModel] | None, str]:
    """The settings model a field holds, and how: directly, in a list, or in a dict by name."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation, "model"
    origin, args = get_origin(annotation), get_args(annotation)
    item = args[-1] if origin in (list, dict) and args else None
    if isinstance(item, type) and issubclass(item, BaseModel):
        return item, "list" if origin is list else "dict"
    return None, ""


def _section(title: str, model: type[BaseModel], prefix: str, env: str | None) -> str:
    about = " ".join(inspect.cleandoc(model.__doc__ or "").split("\n\n")[0].split())
    rows = [f"### {title}", "", about, "",
            "| key | type | default | meaning |", "|---|---|---|---|"]
    for name, field in model.model_fields.items():
        if _nested(field.annotation)[0] is not None:
            continue
        key = f"`{prefix}{name}`" + (f"<br>`{env}{name.upper()}`" if env else "")
        meaning = " ".join((field.description or "").split()).replace("|", "\\|")
        rows.append(f"| {key} | {_type(field.annotation)}{_limits(field)} | {_default(field)} "
                    f"| {meaning} |")
    return "\n".join(rows)


def _type(annotation: Any) -> str:
    origin, args = get_origin(annotation), get_args(annotation)
    if origin is Literal:
        return " \\| ".join(f"`{a}`" for a in args)
    if origin in (typing.Union, types.UnionType):
        return " \\| ".join(_type(a) for a in args if a is not type(None)) + " (optional)"
    if origin in (list, dict):
        return f"{origin.__name__} of " + " to ".join(_type(a) for a in args)
    if annotation is SecretStr:
        return "secret"
    if annotation is Path:
        return "path"
    return getattr(annotation, "__name__", str(annotation))


def _limits(field: FieldInfo) -> str:
    signs = {Ge: ">=", Gt: ">", Le: "<=", Lt: "<"}
    parts = [f"{sign} {getattr(m, kind.__name__.lower())}" for m in field.metadata
             for kind, sign in signs.items() if isinstance(m, kind)]
    return f", {', '.join(parts)}" if parts else ""


def _default(field: FieldInfo) -> str:
    if field.is_required():
        return "required"
    value = field.get_default(call_default_factory=True)
    if value is None:
        return "unset"
    if isinstance(value, str | Path):
        return f'`"{value}"`'
    return f"`{value!r}`"
