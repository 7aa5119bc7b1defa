"""Text generation wrappers over :class:`spiraljax.eval.sampler.Sampler` with plain sampling
(:class:`~spiraljax.eval.sampler.SamplePolicy`: temperature / top-k / top-p), and the ``generate``
eval suite.

Window models are re-run on the last ``seq_len`` tokens for every new token (``Sampler(model, policy,
seq_len)``); a model that offers a stream state (``init_cache`` / ``advance`` / ``patch_logits``, the
Hebbian byte LM) is sampled by ``generate_streaming``: the prompt is read once, then each new patch
updates the carried fast weights and attention window — the prefix is never recomputed. Each call
builds (and compiles) one sampler; hold a ``Sampler`` to sample repeatedly with one compile.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import numpy as np

from spiraljax.eval.sampler import Sampler, SamplePolicy, filter_logits, sample_token  # noqa: F401  (re-exported)
from spiraljax.eval.suites import EvalContext, Option, SuiteResult, register_suite


def generate_streaming(
    model: nn.Module,
    variables: Any,
    prompt: np.ndarray,
    n_new: int,
    key: jax.Array,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    step: int = 0,
) -> np.ndarray:
    """Patch-streaming sampler: whole prompt patches are read once with ``advance``; bytes of the
    current patch are sampled one by one from ``patch_logits`` (the local head), and a completed
    patch is fed to ``advance``, which carries the fast-weight state and attention window on."""
    return Sampler(model, SamplePolicy(temperature, top_k, top_p))(variables, prompt, n_new, key, step=step)[0]


def text_sampler(model: nn.Module, cfg) -> Sampler:
    """A sampler with the ``cfg.eval`` sampling settings and ``cfg.model.seq_len`` window."""
    return Sampler(model, SamplePolicy(cfg.eval.temperature, cfg.eval.top_k, cfg.eval.top_p), cfg.model.seq_len)


def sample_text(
    ctx_model,
    variables,
    dataset,
    cfg,
    key: jax.Array,
    step: int = 0,
    n_tokens: int | None = None,
    prompt_text: str | None = None,
    sampler: Sampler | None = None,
) -> str:
    """One sample from ``prompt_text`` (default ``cfg.eval.sample_prompt``), decoded with the dataset's
    tokenizer. A prompt the tokenizer cannot encode (an unknown glyph) raises a one-line DataError.
    ``sampler``: reuse one (from :func:`text_sampler`) across calls to compile once; default: a new one."""
    text = cfg.eval.sample_prompt if prompt_text is None else prompt_text
    prompt = dataset.encode(text) if text else np.zeros(1, np.int32)
    if len(prompt) == 0:
        prompt = np.zeros(1, np.int32)
    prompt = prompt[-(cfg.model.seq_len - 1) :]
    if sampler is None:
        sampler = text_sampler(ctx_model, cfg)
    elif (sampler.model, sampler.policy, sampler.seq_len) != (
        ctx_model,
        text_sampler(ctx_model, cfg).policy,
        cfg.model.seq_len,
    ):
        raise ValueError("the sampler was built for another model, seq_len or sampling settings than cfg.eval's")
    ids, _ = sampler(variables, prompt[None], n_tokens or cfg.eval.sample_tokens, key, step=step)
    return dataset.decode(ids[0])


@register_suite(
    "generate", options={"tokens": Option(int, minimum=1), "samples": Option(int, 2, minimum=1), "prompt": str}
)
def generate_suite(ctx: EvalContext, *, tokens: int | None, samples: int, prompt: str | None) -> SuiteResult:
    """``--opt prompt=TEXT`` (default ``eval.sample_prompt``; glyph models: space-separated glyphs),
    ``tokens=N`` new tokens (default ``eval.sample_tokens``), ``samples=N``."""
    n = tokens or ctx.cfg.eval.sample_tokens
    if prompt is not None:
        ctx.dataset.encode(prompt)  # an unknown glyph fails here in one line, before any compile
    sampler = text_sampler(ctx.model, ctx.cfg)
    samples = [
        sample_text(
            ctx.model, ctx.variables, ctx.dataset, ctx.cfg, jax.random.key(ctx.seed + i), ctx.step, n, prompt, sampler
        )
        for i in range(samples)
    ]
    text = "\n".join(f"--- sample {i} ---\n{s}" for i, s in enumerate(samples))
    return SuiteResult({"samples": samples}, text)
