"""Checkpoints saved with version 0.1.0's parameter names: their layout, and reading them today.

Every family now spells its MLP ``…/mlp/up``, ``…/mlp/down`` (``…/mlp/gate`` for SwiGLU) and stores
every kernel ``[in…, out…]``. Runs saved by 0.1.0 differ in two ways, values unchanged:

* the Spiralformer and the Hebbian LM had their GELU MLP as layers of the block, ``…/mlp_up`` and
  ``…/mlp_down``;
* the Spiralformer stored its attention kernels flat: ``attn/qkv/kernel`` ``[d, 3·H·D]`` for
  ``[d, 3, H, D]`` and ``attn/out/kernel`` ``[H·D, d]`` for ``[H, D, d]``.

:func:`old_forms` gives the 0.1.0 forms of a state tree (the restore target of such a checkpoint),
:func:`rename_from_old` turns a tree read in one of them back into today's names, and
:func:`unflatten_attention` restores the kernels' shapes when no target tree is at hand. Version
0.2.0 stops reading this layout (docs/training.md).
"""

from __future__ import annotations

import math
from typing import Any, Callable

OLD_MLP = "mlp_"  # 0.1.0: mlp/up → mlp_up, mlp/down → mlp_down
GELU_LAYERS = {"up", "down"}
FLAT_KERNELS = {("attn", "qkv", "kernel"), ("attn", "out", "kernel")}  # 0.1.0: stored 2-D by the Spiralformer


def _rebuild(node: Any, walk: Callable[[Any], Any]) -> Any:
    """``node`` with ``walk`` applied to the children of a list, a tuple or a named tuple."""
    if isinstance(node, tuple) and hasattr(node, "_fields"):
        return type(node)(*(walk(c) for c in node))
    if isinstance(node, (list, tuple)):
        return type(node)(walk(c) for c in node)
    return node


def _flat_kernel(layer: str, kernel: Any, reshape: Callable[[Any, tuple[int, ...]], Any]) -> Any:
    """0.1.0's 2-D form of an attention kernel: ``qkv`` ``[d, …] → [d, ∏…]``, ``out`` ``[…, d] → [∏…, d]``."""
    shape = tuple(kernel.shape)
    if len(shape) < 3:
        return kernel
    if layer == "qkv":
        return reshape(kernel, (shape[0], math.prod(shape[1:])))
    return reshape(kernel, (math.prod(shape[:-1]), shape[-1]))


def to_old(tree: Any, flat: bool, reshape: Callable[[Any, tuple[int, ...]], Any]) -> Any:
    """``tree`` (params, or an optimizer state mirroring them) in 0.1.0's names: every GELU
    ``mlp/{up,down}`` becomes ``mlp_{up,down}``, and with ``flat`` the ``attn/{qkv,out}/kernel`` leaves
    are reshaped to 2-D by ``reshape(leaf, shape)``."""

    def walk(node: Any, path: tuple[str, ...]) -> Any:
        if flat and path[-3:] in FLAT_KERNELS:
            return _flat_kernel(path[-2], node, reshape)
        if not isinstance(node, dict):
            return _rebuild(node, lambda c: walk(c, path))
        out = {}
        for key, child in node.items():
            if key == "mlp" and isinstance(child, dict) and set(child) == GELU_LAYERS:
                out.update({OLD_MLP + layer: walk(sub, (*path, key, layer)) for layer, sub in child.items()})
            else:
                out[key] = walk(child, (*path, key))
        return out

    return walk(tree, ())


def old_forms(tree: Any, reshape: Callable[[Any, tuple[int, ...]], Any]) -> list[Any]:
    """The 0.1.0 forms ``tree`` may have been saved in (the Hebbian LM's: names only; the
    Spiralformer's: names and flat attention kernels) that differ from ``tree`` itself."""
    return [to_old(tree, flat, reshape) for flat in (False, True)]


def rename_from_old(tree: Any) -> Any:
    """Inverse of :func:`to_old`'s renaming: ``mlp_up`` / ``mlp_down`` → ``mlp/up`` / ``mlp/down``
    (shapes unchanged)."""

    def walk(node: Any) -> Any:
        if not isinstance(node, dict):
            return _rebuild(node, walk)
        out: dict = {}
        for key, child in node.items():
            layer = key[len(OLD_MLP) :] if key.startswith(OLD_MLP) else None
            if layer in GELU_LAYERS:
                out.setdefault("mlp", {})[layer] = walk(child)
            else:
                out[key] = walk(child)
        return out

    return walk(tree)


def has_old_names(paths: Any) -> bool:
    """Whether any ``"/"``-joined path (e.g. of a saved tree's signature) uses 0.1.0's MLP names."""
    return any(f"/{OLD_MLP}{layer}/" in f"/{p}/" for p in paths for layer in GELU_LAYERS)


def unflatten_attention(params: dict, n_heads: int) -> dict:
    """0.1.0's flat Spiralformer attention kernels back to ``qkv [d, 3, H, D]`` and ``out [H, D, d]``
    (``n_heads`` = H); every other leaf unchanged."""

    def walk(node: Any, path: tuple[str, ...]) -> Any:
        if isinstance(node, dict):
            return {key: walk(child, (*path, key)) for key, child in node.items()}
        if path[-3:] in FLAT_KERNELS and node.ndim == 2:
            d_in, d_out = node.shape
            return node.reshape((d_in, 3, n_heads, -1) if path[-2] == "qkv" else (n_heads, -1, d_out))
        return node

    return walk(params, ())
