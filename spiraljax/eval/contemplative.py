"""Contemplative generation: entropy-gated silence over the glyph vocabulary.

Per step (one jit-compiled function, fixed window of ``seq_len``):
* if the next-token entropy (nats) exceeds ``threshold`` → emit silence "…" instead of sampling;
* after ``max_silence_run`` silences in a row → force a non-silence sample;
* when the Soma says *urgent*, silence is not allowed until ``min_active_urgent`` active glyphs
  have been emitted;
* PAD is never emitted; temperature / top-k / top-p as in :func:`sample_token`.
"""
from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

from spiraljax.data import glyphs
from spiraljax.eval.generation import sample_token
from spiraljax.ops.soma import field_charge, resonance_label


@dataclass(frozen=True)
class ContemplativeSettings:
    threshold: float = 0.7
    max_silence_run: int = 2
    min_active_urgent: int = 2
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0


def entropy(logits: jax.Array) -> jax.Array:
    """Shannon entropy in nats of softmax(logits) along the last axis."""
    logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    p = jnp.exp(logp)
    return -jnp.sum(jnp.where(p > 0, p * logp, 0.0), axis=-1)  # masked (-inf) entries contribute 0


def _decide(key, logits, silence_run, active, urgent, s: ContemplativeSettings):
    """Next glyph ids ``[B]`` and whether each was a gated silence."""
    silent_ids = jnp.asarray(glyphs.SILENCE_IDS)
    is_silent_vocab = jnp.zeros(logits.shape[-1], bool).at[silent_ids].set(True)
    logits = logits.at[:, glyphs.PAD_ID].set(-jnp.inf)
    must_speak = (silence_run >= s.max_silence_run) | (urgent & (active < s.min_active_urgent))
    speak_logits = jnp.where(is_silent_vocab[None, :], -jnp.inf, logits)
    sampled = sample_token(key, jnp.where(must_speak[:, None], speak_logits, logits), s.temperature, s.top_k, s.top_p)
    gated = (entropy(logits) > s.threshold) & ~must_speak
    token = jnp.where(gated, glyphs.SILENCE_ID, sampled)
    return token, gated


def contemplative_generate(model, variables, conditions: np.ndarray, n_new: int, key: jax.Array, seq_len: int,
                           settings: ContemplativeSettings = ContemplativeSettings(), prompt: np.ndarray | None = None,
                           step: int = 0):
    """Generate ``n_new`` glyphs per conditions row. Returns ``(ids [B, P + n_new], gated [B, n_new])``."""
    conditions = jnp.asarray(np.atleast_2d(conditions), jnp.float32)
    b = conditions.shape[0]
    prompt = np.zeros((b, 1), np.int32) if prompt is None else np.atleast_2d(prompt).astype(np.int32)
    p = prompt.shape[1]
    urgent = resonance_label(field_charge(conditions)) == 1
    step_fn = _step_fn(model, settings)
    total = np.zeros((b, p + n_new), np.int32)
    total[:, :p] = prompt
    run = np.zeros(b, np.int32)
    active = np.zeros(b, np.int32)
    gated_all = np.zeros((b, n_new), bool)
    for i in range(p, p + n_new):
        start = max(0, i - seq_len)
        window = np.zeros((b, seq_len), np.int32)
        window[:, : i - start] = total[:, start:i]
        tok, gated = step_fn(variables, jnp.asarray(window), i - start - 1, jax.random.fold_in(key, i), conditions,
                             jnp.asarray(run), jnp.asarray(active), urgent, step)
        tok = np.asarray(tok)
        total[:, i] = tok
        gated_all[:, i - p] = np.asarray(gated)
        silent = glyphs.is_silence(tok)
        run = np.where(silent, run + 1, 0)
        active = active + (~silent).astype(np.int32)
    return total, gated_all


_CACHE: dict = {}


def _step_fn(model, settings: ContemplativeSettings):
    key = (id(model), settings)
    if key not in _CACHE:
        @jax.jit
        def step_fn(variables, window, pos, rng, conditions, run, active, urgent, step):
            logits, _ = model.apply(variables, window, train=False, step=step, conditions=conditions)
            last = jax.lax.dynamic_index_in_dim(logits, pos, axis=1, keepdims=False)
            return _decide(rng, last, run, active, urgent, settings)

        _CACHE[key] = (model, step_fn)
    return _CACHE[key][1]
