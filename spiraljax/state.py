"""Carried state across windows (docs/carried_state.md): helpers shared by training, evaluation and
notebooks. A state is a pytree of arrays whose every leaf is batch-first ``[B, ...]``."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

State = Any


def reset_rows(state: State, initial: State, reset: jax.Array) -> State:
    """``state`` with the rows where ``reset [B]`` is True replaced by ``initial``'s rows:
    ``leaf_b ← initial_b if reset_b else leaf_b`` for every leaf ``[B, ...]``."""
    reset = jnp.asarray(reset, bool)

    def one(s, i):
        mask = reset.reshape(reset.shape + (1,) * (jnp.ndim(s) - 1))
        return jnp.where(mask, jnp.asarray(i, s.dtype), s)

    return jax.tree.map(one, state, initial)


def stop_state(state: State) -> State:
    """The state with no gradient through it (truncated back-propagation through time)."""
    return jax.tree.map(jax.lax.stop_gradient, state)


def check_state(state: State, batch_size: int, where: str = "state") -> None:
    """Raise ``ValueError`` (one line) unless every leaf is an array with leading axis ``batch_size``."""
    for path, leaf in jax.tree_util.tree_leaves_with_path(state):
        shape = getattr(leaf, "shape", None)
        if shape is None or len(shape) == 0 or shape[0] != batch_size:
            raise ValueError(
                f"{where}{jax.tree_util.keystr(path)}: every state leaf must be batch-first "
                f"[{batch_size}, ...], got shape {shape}"
            )


def check_state_like(state: State, expected: State, where: str = "state") -> None:
    """Raise ``ValueError`` (one line) unless ``state`` has the keys, shapes and dtypes of ``expected``
    (e.g. ``model.initial_state(B)``), naming the first leaf that differs."""
    want = dict(jax.tree_util.tree_leaves_with_path(expected))
    got = dict(jax.tree_util.tree_leaves_with_path(state))
    for path in [*want, *(p for p in got if p not in want)]:
        name = f"{where}{jax.tree_util.keystr(path)}"
        if path not in got:
            raise ValueError(f"{name}: missing (expected the structure of the model's initial_state)")
        if path not in want:
            raise ValueError(f"{name}: not part of this model's state")
        g, w = got[path], want[path]
        if getattr(g, "shape", None) != w.shape or getattr(g, "dtype", None) != w.dtype:
            raise ValueError(
                f"{name}: expected {w.dtype}{list(w.shape)}, got "
                f"{getattr(g, 'dtype', type(g).__name__)}{list(getattr(g, 'shape', ()))}"
            )


def stream(
    model, variables, tokens: jax.Array, window: int, state: State | None = None, **kwargs
) -> tuple[jax.Array, State]:
    """Read ``tokens [B, L]`` window by window with the state carried: ``(logits [B, L, V], state)``.

    The same as ``logits_k, aux = model.apply(variables, w_k, state=s_{k-1}); s_k = aux["state"]``
    for the windows ``w_k`` of ``window`` tokens in turn (the last one may be shorter), starting from
    ``state`` (None: ``model.initial_state(B)``); every full window runs in one ``lax.scan``.
    ``kwargs`` go to every ``model.apply`` (e.g. ``train=False``). Rows are not reset: give each row
    one document, or reset rows between calls with :func:`reset_rows`.
    """
    tokens = jnp.asarray(tokens)
    b, length = tokens.shape
    state = model.initial_state(b) if state is None else state
    n_full = length // window
    pieces = []
    if n_full:
        windows = jnp.swapaxes(tokens[:, : n_full * window].reshape(b, n_full, window), 0, 1)  # [K, B, T]

        def one(s, w):
            logits, aux = model.apply(variables, w, state=s, **kwargs)
            return aux["state"], logits

        state, logits = jax.lax.scan(one, state, windows)
        pieces.append(jnp.swapaxes(logits, 0, 1).reshape(b, n_full * window, -1))
    if length % window:
        logits, aux = model.apply(variables, tokens[:, n_full * window :], state=state, **kwargs)
        state = aux["state"]
        pieces.append(logits)
    return jnp.concatenate(pieces, axis=1), state
