"""One sampler for every family: a per-token loop whose choice of the next token is a *policy*.

A policy is a pure function ``policy(key, logits [B, V], state) -> (ids [B], flags [B], state)``
called inside the jitted step: :class:`SamplePolicy` is plain temperature / top-k / top-p sampling
(flags always False); the contemplative rules (``spiraljax.eval.contemplative``) are another.

:class:`Sampler` binds a model and a policy and jit-compiles its step functions once per instance
(no module-level cache): reuse one instance to sample many times without recompiling. A window
model is re-run on the last ``seq_len`` tokens for every new token (works for every family, no
cache needed); a model with a stream state (``init_cache`` / ``advance`` / ``patch_logits``, the
Hebbian byte LM) reads the prompt once and then carries its fast weights and attention window on.
Token ``i`` of the output is always drawn with ``jax.random.fold_in(key, i)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Protocol

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np


def filter_logits(logits: jax.Array, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0) -> jax.Array:
    """Scale by 1/temperature, keep the top-k logits and the smallest nucleus with mass ≥ top_p
    (always at least the argmax); dropped entries become −inf. ``temperature=0`` keeps only the
    maximum (greedy); ``top_k=0`` / ``top_k ≥ V`` and ``top_p=1`` are no-ops."""
    logits = logits.astype(jnp.float32)
    if temperature == 0:
        return jnp.where(logits < jnp.max(logits, axis=-1, keepdims=True), -jnp.inf, logits)
    logits = logits / temperature
    if 0 < top_k < logits.shape[-1]:
        kth = jax.lax.top_k(logits, top_k)[0][..., -1:]
        logits = jnp.where(logits < kth, -jnp.inf, logits)
    if top_p < 1.0:
        sorted_logits = jnp.sort(logits, axis=-1)[..., ::-1]
        probs = jax.nn.softmax(sorted_logits, axis=-1)
        before = jnp.cumsum(probs, axis=-1) - probs  # mass strictly above each candidate
        keep = (before < top_p) | (jnp.arange(logits.shape[-1]) == 0)  # the argmax is always kept
        cutoff = jnp.min(jnp.where(keep, sorted_logits, jnp.inf), axis=-1, keepdims=True)
        logits = jnp.where(logits < cutoff, -jnp.inf, logits)
    return logits


def sample_token(
    key: jax.Array, logits: jax.Array, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0
) -> jax.Array:
    """Sample ids ``[B]`` from ``logits [B, V]``."""
    return jax.random.categorical(key, filter_logits(logits, temperature, top_k, top_p), axis=-1)


class Policy(Protocol):
    """Chooses the next token from one step's logits; runs inside the jitted step."""

    def __call__(self, key: jax.Array, logits: jax.Array, state: Any) -> tuple[jax.Array, jax.Array, Any]:
        """Next ids ``[B]``, a per-row flag ``[B]`` (e.g. a gated silence) and the next state."""
        ...


@dataclass(frozen=True)
class SamplePolicy:
    """Plain sampling: temperature / top-k / top-p. Stateless; flags are always False."""

    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0

    def __call__(self, key: jax.Array, logits: jax.Array, state: Any) -> tuple[jax.Array, jax.Array, Any]:
        token = sample_token(key, logits, self.temperature, self.top_k, self.top_p)
        return token, jnp.zeros(token.shape, bool), state


def _last(logits: jax.Array, pos: jax.Array) -> jax.Array:
    """``logits[:, pos]`` for a traced position."""
    return jax.lax.dynamic_index_in_dim(logits, pos, axis=1, keepdims=False)


class Sampler:
    """Generation for one model and policy; its jitted steps are built here and reused by every call."""

    def __init__(self, model: nn.Module, policy: Policy, seq_len: int | None = None):
        self.model, self.policy, self.seq_len = model, policy, seq_len
        self.streaming = hasattr(model, "advance")
        if not self.streaming and seq_len is None:
            raise ValueError("a window model needs seq_len")
        self._window_step = jax.jit(_window_step_fn(model, policy))
        self._patch_step = jax.jit(_patch_step_fn(model, policy))
        self._advance = jax.jit(lambda v, toks, cache, step: model.apply(v, toks, cache, step, method="advance"))

    def __call__(
        self,
        variables: Any,
        prompt: np.ndarray,
        n_new: int,
        key: jax.Array,
        state: Any = None,
        step: int = 0,
        **extras: Any,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Continue ``prompt`` ([B, P] ids, P ≥ 1) by ``n_new`` tokens. ``state``: the policy's initial
        state; ``extras`` go to ``model.apply`` (window models only). Returns ``(ids [B, P + n_new],
        flags [B, n_new])``."""
        prompt = np.atleast_2d(np.asarray(prompt, np.int32))
        if self.streaming:
            if extras:
                raise ValueError(f"a streaming model takes no model extras, got {sorted(extras)}")
            return self._stream(variables, prompt, n_new, key, state, step)
        return self._window(variables, prompt, n_new, key, state, step, extras)

    def _window(
        self, variables: Any, prompt: np.ndarray, n_new: int, key: jax.Array, state: Any, step: int, extras: dict
    ) -> tuple[np.ndarray, np.ndarray]:
        """Re-run the model on the last ``seq_len`` tokens for every new token."""
        b, p = prompt.shape
        total, flags = _outputs(prompt, n_new)
        for i in range(p, p + n_new):
            start = max(0, i - self.seq_len)
            window = np.zeros((b, self.seq_len), np.int32)
            window[:, : i - start] = total[:, start:i]
            token, flag, state = self._window_step(
                variables, jnp.asarray(window), i - start - 1, jax.random.fold_in(key, i), state, step, extras
            )
            total[:, i], flags[:, i - p] = np.asarray(token), np.asarray(flag)
        return total, flags

    def _stream(
        self, variables: Any, prompt: np.ndarray, n_new: int, key: jax.Array, state: Any, step: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """Whole prompt patches are read once with ``advance``; bytes of the current patch are drawn
        one by one from ``patch_logits``, and a completed patch is fed to ``advance``."""
        b, n = prompt.shape
        p = self.model.cfg.patch
        full = (n // p) * p
        cache = self.model.apply(variables, b, method="init_cache")
        if full:
            context, cache = self._advance(variables, jnp.asarray(prompt[:, :full]), cache, step)
        else:
            context = self.model.apply(variables, b, method="start_latent")
        total, flags = _outputs(prompt, n_new)
        patch = np.zeros((b, p), np.int32)
        patch[:, : n - full] = prompt[:, full:]
        for i in range(n, n + n_new):
            j = i % p
            token, flag, state = self._patch_step(
                variables, context, jnp.asarray(patch), j, jax.random.fold_in(key, i), state
            )
            patch[:, j] = total[:, i] = np.asarray(token)
            flags[:, i - n] = np.asarray(flag)
            if j == p - 1 and i + 1 < n + n_new:
                context, cache = self._advance(variables, jnp.asarray(patch), cache, step)
        return total, flags


def _outputs(prompt: np.ndarray, n_new: int) -> tuple[np.ndarray, np.ndarray]:
    """The id buffer (prompt copied in) and the flag buffer."""
    b, p = prompt.shape
    total = np.zeros((b, p + n_new), np.int32)
    total[:, :p] = prompt
    return total, np.zeros((b, n_new), bool)


def _window_step_fn(model: nn.Module, policy: Policy) -> Callable:
    """The (unjitted) window step: logits at ``pos`` of the window, then the policy."""

    def step_fn(variables, window, pos, key, state, step, extras):
        logits, _ = model.apply(variables, window, train=False, step=step, **extras)
        return policy(key, _last(logits, pos), state)

    return step_fn


def _patch_step_fn(model: nn.Module, policy: Policy) -> Callable:
    """The (unjitted) streaming step: byte ``j`` of the current patch from the local head, then the policy."""

    def step_fn(variables, context, patch, j, key, state):
        logits = model.apply(variables, context, patch, method="patch_logits")
        return policy(key, _last(logits, j), state)

    return step_fn
