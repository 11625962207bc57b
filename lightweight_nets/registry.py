"""Name -> constructor registry for the network zoo, in the style of timm's ``create_model`` / ``list_models``."""

from __future__ import annotations

import fnmatch
import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch.nn as nn

__all__ = ["register_net", "list_nets", "create_net"]


@dataclass(frozen=True)
class _Entry:
    factory: Callable[..., nn.Module]
    fixed: Mapping[str, Any] = field(default_factory=dict)
    defaults: Mapping[str, Any] = field(default_factory=dict)


_REGISTRY: dict[str, _Entry] = {}


def _accepted(factory: Callable[..., nn.Module]) -> set[str] | None:
    """Keyword names ``factory`` takes, or ``None`` when it takes any (``**kwargs``) or has no signature."""
    try:
        parameters = inspect.signature(factory).parameters.values()
    except (TypeError, ValueError):
        return None
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        return None
    return {p.name for p in parameters if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}


def register_net(name: str, fixed: Mapping[str, Any] | None = None, **defaults) -> Callable:
    """Register a network class (or factory) under ``name``, as a decorator.

    One class can be registered as several named variants. ``fixed`` holds the arguments that define the variant
    (e.g. ``conv_kind="separable"``): :func:`create_net` refuses to override them, since that would build another
    net under this name. ``defaults`` are arguments the caller may override (e.g. ``group_size``).
    """
    fixed = dict(fixed or {})
    both = sorted(set(fixed) & set(defaults))
    if both:
        raise ValueError(f"register_net({name!r}): {', '.join(both)} given both as fixed and as default")

    def decorator(factory: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _REGISTRY:
            raise ValueError(f"network name {name!r} is already registered")
        accepted = _accepted(factory)
        unknown = [] if accepted is None else sorted((set(fixed) | set(defaults)) - accepted)
        if unknown:
            raise ValueError(
                f"register_net({name!r}): {getattr(factory, '__name__', factory)} takes no "
                f"argument(s) {', '.join(unknown)}"
            )
        _REGISTRY[name] = _Entry(factory, fixed, dict(defaults))
        return factory

    return decorator


def list_nets(filter: str = "") -> list[str]:
    """Names of the registered networks, sorted; ``filter`` keeps those matching an ``fnmatch`` pattern
    (e.g. ``"thin_*"``), as in timm's ``list_models``."""
    names = sorted(_REGISTRY)
    return [n for n in names if fnmatch.fnmatchcase(n, filter)] if filter else names


def create_net(name: str, **kwargs) -> nn.Module:
    """Build the registered network ``name``.

    ``kwargs`` override its defaults (e.g. ``spatial_dims=3``, ``in_channels=1``) but not the arguments that define
    the variant: overriding one of those raises ``ValueError``.
    """
    if name not in _REGISTRY:
        raise KeyError(f"unknown network {name!r}; known: {', '.join(list_nets())}")
    entry = _REGISTRY[name]
    clash = sorted(set(kwargs) & set(entry.fixed))
    if clash:
        fixed = ", ".join(f"{k}={entry.fixed[k]!r}" for k in clash)
        raise ValueError(
            f"{name!r} is defined by {fixed}, which cannot be overridden; build "
            f"{getattr(entry.factory, '__name__', 'the class')} directly or pick another registered net "
            f"({', '.join(list_nets())})"
        )
    return entry.factory(**{**entry.defaults, **kwargs, **entry.fixed})
