"""Sampling: temperature / top-k / top-p, and a fixed-window generator that jit-compiles one step.

The window generator re-runs the model on the last ``seq_len`` tokens for every new token,
which works for every family (no cache needed). A model that offers a stream state
(``init_cache`` / ``advance`` / ``patch_logits``, the Hebbian byte LM) is sampled by
``generate_streaming`` instead: the prompt is read once, then each new patch updates the carried
fast weights and attention window — the prefix is never recomputed.
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from spiraljax.eval.suites import EvalContext, SuiteResult, register_suite


def filter_logits(logits: jax.Array, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0) -> jax.Array:
    """Scale by 1/temperature, keep the top-k logits and the smallest nucleus with mass ≥ top_p."""
    logits = logits.astype(jnp.float32) / temperature
    if top_k:
        kth = jax.lax.top_k(logits, top_k)[0][..., -1:]
        logits = jnp.where(logits < kth, -jnp.inf, logits)
    if top_p < 1.0:
        sorted_logits = jnp.sort(logits, axis=-1)[..., ::-1]
        probs = jax.nn.softmax(sorted_logits, axis=-1)
        before = jnp.cumsum(probs, axis=-1) - probs  # mass strictly above each candidate
        cutoff = jnp.min(jnp.where(before < top_p, sorted_logits, jnp.inf), axis=-1, keepdims=True)
        logits = jnp.where(logits < cutoff, -jnp.inf, logits)
    return logits


def sample_token(key: jax.Array, logits: jax.Array, temperature: float = 1.0, top_k: int = 0,
                 top_p: float = 1.0) -> jax.Array:
    """Sample ids ``[B]`` from ``logits [B, V]``."""
    return jax.random.categorical(key, filter_logits(logits, temperature, top_k, top_p), axis=-1)


def generate(model: nn.Module, variables: Any, prompt: np.ndarray, n_new: int, key: jax.Array, seq_len: int,
             temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0, step: int = 0,
             **extras: Any) -> np.ndarray:
    """Continue ``prompt`` ([B, P] ids, P ≥ 1) by ``n_new`` tokens with a sliding window of ``seq_len``
    (or by ``generate_streaming`` when the model carries a stream state)."""
    if hasattr(model, "advance"):
        return generate_streaming(model, variables, prompt, n_new, key, temperature, top_k, top_p, step)
    prompt = np.atleast_2d(np.asarray(prompt, np.int32))
    b, p = prompt.shape
    total = np.zeros((b, p + n_new), np.int32)
    total[:, :p] = prompt
    next_token = _next_token_fn(model, temperature, top_k, top_p)
    for i in range(p, p + n_new):
        start = max(0, i - seq_len)
        window = np.zeros((b, seq_len), np.int32)
        window[:, : i - start] = total[:, start:i]
        total[:, i] = np.asarray(next_token(variables, jnp.asarray(window), i - start - 1,
                                            jax.random.fold_in(key, i), step, extras))
    return total


_STEP_FNS: dict[tuple, Any] = {}


def _next_token_fn(model: nn.Module, temperature: float, top_k: int, top_p: float):
    """One jit-compiled sampling step per (model, sampling settings), reused across calls."""
    cache_key = (id(model), temperature, top_k, top_p)
    if cache_key not in _STEP_FNS:
        @jax.jit
        def next_token(variables, window, pos, key, step, extras):
            logits, _ = model.apply(variables, window, train=False, step=step, **extras)
            last = jax.lax.dynamic_index_in_dim(logits, pos, axis=1, keepdims=False)
            return sample_token(key, last, temperature, top_k, top_p)

        _STEP_FNS[cache_key] = (model, next_token)  # keep the model alive so its id stays unique
    return _STEP_FNS[cache_key][1]


def generate_streaming(model: nn.Module, variables: Any, prompt: np.ndarray, n_new: int, key: jax.Array,
                       temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0, step: int = 0) -> np.ndarray:
    """Patch-streaming sampler: whole prompt patches are read once with ``advance``; bytes of the
    current patch are sampled one by one from ``patch_logits`` (the local head), and a completed
    patch is fed to ``advance``, which carries the fast-weight state and attention window on."""
    prompt = np.atleast_2d(np.asarray(prompt, np.int32))
    b, n = prompt.shape
    p = model.cfg.patch
    full = (n // p) * p
    cache = model.apply(variables, b, method="init_cache")
    advance, sample = _stream_fns(model, temperature, top_k, top_p)
    if full:
        context, cache = advance(variables, jnp.asarray(prompt[:, :full]), cache, step)
    else:
        context = model.apply(variables, b, method="start_latent")
    total = np.zeros((b, n + n_new), np.int32)
    total[:, :n] = prompt
    patch = np.zeros((b, p), np.int32)
    patch[:, : n - full] = prompt[:, full:]
    for i in range(n, n + n_new):
        j = i % p
        patch[:, j] = np.asarray(sample(variables, context, jnp.asarray(patch), j, jax.random.fold_in(key, i)))
        total[:, i] = patch[:, j]
        if j == p - 1 and i + 1 < n + n_new:
            context, cache = advance(variables, jnp.asarray(patch), cache, step)
    return total


def _stream_fns(model: nn.Module, temperature: float, top_k: int, top_p: float):
    """jit-compiled ``advance`` and one-byte ``sample`` per (model, sampling settings)."""
    cache_key = ("stream", id(model), temperature, top_k, top_p)
    if cache_key not in _STEP_FNS:
        advance = jax.jit(lambda v, toks, c, step: model.apply(v, toks, c, step, method="advance"))

        @jax.jit
        def sample(variables, context, patch, j, key):
            logits = model.apply(variables, context, patch, method="patch_logits")
            return sample_token(key, jax.lax.dynamic_index_in_dim(logits, j, axis=1, keepdims=False),
                                temperature, top_k, top_p)

        _STEP_FNS[cache_key] = (model, (advance, sample))
    return _STEP_FNS[cache_key][1]


def sample_text(ctx_model, variables, dataset, cfg, key: jax.Array, step: int = 0, n_tokens: int | None = None,
                prompt_text: str | None = None) -> str:
    """One sample from ``prompt_text`` (default ``cfg.eval.sample_prompt``), decoded with the dataset's
    tokenizer. A prompt the tokenizer cannot encode (an unknown glyph) raises a one-line DataError."""
    text = cfg.eval.sample_prompt if prompt_text is None else prompt_text
    prompt = dataset.encode(text) if text else np.zeros(1, np.int32)
    if len(prompt) == 0:
        prompt = np.zeros(1, np.int32)
    prompt = prompt[-(cfg.model.seq_len - 1):]
    ids = generate(ctx_model, variables, prompt[None], n_tokens or cfg.eval.sample_tokens, key, cfg.model.seq_len,
                   cfg.eval.temperature, cfg.eval.top_k, cfg.eval.top_p, step=step)
    return dataset.decode(ids[0])


@register_suite("generate", options={"tokens": int, "samples": int, "prompt": str})
def generate_suite(ctx: EvalContext) -> SuiteResult:
    """``--opt prompt=TEXT`` (default ``eval.sample_prompt``; glyph models: space-separated glyphs),
    ``tokens=N`` new tokens, ``samples=N``."""
    n = int(ctx.options.get("tokens", ctx.cfg.eval.sample_tokens))
    prompt = ctx.options.get("prompt")
    if prompt is not None:
        ctx.dataset.encode(prompt)  # an unknown glyph fails here in one line, before any compile
    samples = [sample_text(ctx.model, ctx.variables, ctx.dataset, ctx.cfg, jax.random.key(ctx.seed + i), ctx.step, n,
                           prompt)
               for i in range(int(ctx.options.get("samples", 2)))]
    text = "\n".join(f"--- sample {i} ---\n{s}" for i, s in enumerate(samples))
    return SuiteResult({"samples": samples}, text)
