"""Resolve "module:attribute" names from YAML into Python objects."""

from __future__ import annotations

import importlib
from typing import Any


def load_object(path: str, *, what: str = "object") -> Any:
    """Import `module:attr` (or `module.attr`), with an error that says which name failed."""
    if ":" in path:
        module_name, _, attr = path.partition(":")
    else:
        module_name, _, attr = path.rpartition(".")
    if not module_name or not attr:
        raise ValueError(f"{what} {path!r}: expected 'module:name'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(f"{what} {path!r}: cannot import module {module_name!r}: {exc}") from None
    except Exception as exc:  # the module itself is broken (SyntaxError, a raise at import)
        raise ValueError(
            f"{what} {path!r}: importing module {module_name!r} failed: {type(exc).__name__}: {exc}"
        ) from None
    obj: Any = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ValueError(f"{what} {path!r}: module {module_name!r} has no {attr!r}") from None
    return obj
