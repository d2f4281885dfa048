"""Small helpers between OmegaConf nodes and the typed objects the components take."""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, OmegaConf


def to_container(node: Any) -> Any:
    """Plain Python containers of a (possibly OmegaConf) node, interpolations resolved."""
    if isinstance(node, DictConfig) or OmegaConf.is_config(node):
        return OmegaConf.to_container(node, resolve=True)
    return node
