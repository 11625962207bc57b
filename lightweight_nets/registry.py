"""Name -> constructor registry for the network zoo, in the style of timm's ``create_model``."""

from __future__ import annotations

from collections.abc import Callable

import torch.nn as nn

_REGISTRY: dict[str, Callable[..., nn.Module]] = {}


def register_net(name: str, **defaults) -> Callable:
    """Register a network class (or factory) under ``name``; ``defaults`` are keyword arguments it gets
    unless the caller overrides them, so one class can be registered as several named variants."""

    def decorator(factory: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _REGISTRY:
            raise ValueError(f"network name {name!r} is already registered")
        _REGISTRY[name] = lambda **kwargs: factory(**{**defaults, **kwargs})
        return factory

    return decorator


def list_nets() -> list[str]:
    """Names of all registered networks, sorted."""
    return sorted(_REGISTRY)


def create_net(name: str, **kwargs) -> nn.Module:
    """Build the registered network ``name``; ``kwargs`` override its defaults
    (e.g. ``spatial_dims=3``, ``in_channels=1``)."""
    if name not in _REGISTRY:
        raise KeyError(f"unknown network {name!r}; known: {', '.join(list_nets())}")
    return _REGISTRY[name](**kwargs)
