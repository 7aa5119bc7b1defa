"""Contemplative generation: entropy-gated silence over the glyph vocabulary, as a sampler policy.

Per step (:class:`ContemplativePolicy`, inside the :class:`~spiraljax.eval.sampler.Sampler` step):
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
from spiraljax.eval.sampler import Sampler, sample_token
from spiraljax.ops.soma import field_charge, resonance_label

# per-row policy state: (silence run length, active glyphs emitted, urgent)
ContemplativeState = tuple[jax.Array, jax.Array, jax.Array]


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


@dataclass(frozen=True)
class ContemplativePolicy:
    """The contemplative rules as a sampler policy; flags = gated silences."""

    settings: ContemplativeSettings = ContemplativeSettings()

    @staticmethod
    def initial_state(conditions: jax.Array) -> ContemplativeState:
        """No silence run, no active glyphs yet; *urgent* from the Soma's reading of ``conditions [B, 5]``."""
        b = conditions.shape[0]
        urgent = resonance_label(field_charge(conditions)) == 1
        return jnp.zeros(b, jnp.int32), jnp.zeros(b, jnp.int32), urgent

    def __call__(
        self, key: jax.Array, logits: jax.Array, state: ContemplativeState
    ) -> tuple[jax.Array, jax.Array, ContemplativeState]:
        run, active, urgent = state
        token, gated = _decide(key, logits, run, active, urgent, self.settings)
        silent = jnp.isin(token, jnp.asarray(glyphs.SILENCE_IDS))
        return token, gated, (jnp.where(silent, run + 1, 0), active + (~silent).astype(jnp.int32), urgent)


def contemplative_sampler(model, seq_len: int, settings: ContemplativeSettings = ContemplativeSettings()) -> Sampler:
    """A window sampler with the contemplative policy; pass it to :func:`contemplative_generate` to
    generate for many conditions with one compile."""
    return Sampler(model, ContemplativePolicy(settings), seq_len)


def contemplative_generate(
    model,
    variables,
    conditions: np.ndarray,
    n_new: int,
    key: jax.Array,
    seq_len: int,
    settings: ContemplativeSettings = ContemplativeSettings(),
    prompt: np.ndarray | None = None,
    step: int = 0,
    sampler: Sampler | None = None,
):
    """Generate ``n_new`` glyphs per conditions row. Returns ``(ids [B, P + n_new], gated [B, n_new])``.
    ``sampler``: one from :func:`contemplative_sampler` for this model, seq_len and settings, reused
    across calls; default: a new one."""
    conditions = jnp.asarray(np.atleast_2d(conditions), jnp.float32)
    b = conditions.shape[0]
    prompt = np.zeros((b, 1), np.int32) if prompt is None else np.atleast_2d(prompt).astype(np.int32)
    policy = ContemplativePolicy(settings)
    if sampler is None:
        sampler = contemplative_sampler(model, seq_len, settings)
    elif (sampler.model, sampler.policy, sampler.seq_len) != (model, policy, seq_len):
        raise ValueError("the sampler was built for another model, seq_len or settings")
    return sampler(variables, prompt, n_new, key, policy.initial_state(conditions), step, conditions=conditions)
