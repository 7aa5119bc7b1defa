"""Hebbian byte-level LM (after AGIFORMER), strictly causal at patch and byte level.

Bytes → patch latents (P bytes each) → hybrid blocks (sliding-window attention over patches +
normalised Hebbian fast weights) → reasoning loop → GRU local head. ``logits[:, t]`` predicts byte
t+1 from bytes ≤ t: the bytes of patch q are decoded from the latent of patch q−1 (a learned
"before the text" latent for q = 0) and, inside the patch, from the earlier bytes of patch q only.

Plasticity α follows the curriculum by step fraction (``plasticity_stages``, saved in the config,
so generation uses the α of the checkpoint's step); ``force_plasticity`` overrides it.
``lora_rank > 0`` adds LoRA adapters to every projection of the hybrid blocks (not the patch
encoder, reasoning loop or head), as on the dense baseline and Spiralformer.
aux: ``plasticity``, ``decay [L, H]``, ``reasoning_update [steps]``, ``memory_state`` (per layer).
"""
from __future__ import annotations

from typing import Literal

import flax.linen as nn
import jax
import jax.numpy as jnp
from pydantic import Field, model_validator

from spiraljax.config import AttentionConfig, DType, Dropout, LoraAlpha, LoraRank, Remat
from spiraljax.nn.hebbian import HybridBlock, LocalHead, PatchEncoder, ReasoningLoop
from spiraljax.nn.layers import lora_dense
from spiraljax.nn.precision import compute_dtype, maybe_remat

START = 256  # the local head's own start symbol (not byte 0)


class HebbianConfig(AttentionConfig):
    family: Literal["hebbian_lm"] = "hebbian_lm"
    seq_len: int = Field(1024, gt=0, description="training window length in bytes (a multiple of patch)")
    d_model: int = Field(256, gt=0, description="width of the patch latents")
    dropout: Dropout = 0.0
    patch: int = Field(4, gt=0, description="bytes per patch (P)")
    window: int = Field(128, gt=0, description="sliding-window attention span, in patches")
    reasoning_steps: int = Field(3, ge=0, description="iterations of the reasoning loop over the latents")
    head_hidden: int = Field(256, gt=0, description="hidden width of the GRU local head")
    memory_impl: Literal["chunked", "scan"] = Field("chunked", description="fast-weight memory: chunked "
                                                                           "parallel form or a sequential scan")
    memory_chunk: int = Field(64, gt=0, description="patches per chunk of the chunked memory")
    plasticity_stages: list[tuple[float, float]] = Field(
        [(0.15, 0.10), (0.40, 0.50), (1.0, 0.99)],
        description="curriculum [(end fraction of curriculum_steps, α), ...]; α of the last stage after that")
    curriculum_steps: int = Field(1000, gt=0, description="steps the plasticity curriculum spans")
    lora_rank: LoraRank = 0
    lora_alpha: LoraAlpha = 16.0
    # bfloat16: patch conv, hybrid blocks and reasoning MLP; fast weights and the GRU head stay float32
    dtype: DType = "float32"
    remat: Remat = False

    def build(self) -> nn.Module:
        return HebbianLM(self)

    @model_validator(mode="after")
    def _patches(self) -> "HebbianConfig":
        if self.seq_len % self.patch:
            raise ValueError(f"seq_len={self.seq_len} is not a multiple of patch={self.patch}")
        if not all(0 < a <= 1 for _, a in self.plasticity_stages):
            raise ValueError("plasticity_stages: every α must be in (0, 1]")
        return self


def plasticity(step, stages, total_steps: int) -> jax.Array:
    """α of the curriculum stage that contains ``step / total_steps`` (pure function of the step)."""
    frac = jnp.asarray(step, jnp.float32) / total_steps
    ends = jnp.asarray([e for e, _ in stages], jnp.float32)
    alphas = jnp.asarray([a for _, a in stages], jnp.float32)
    return alphas[jnp.minimum(jnp.searchsorted(ends, frac, side="right"), len(stages) - 1)]


class HebbianLM(nn.Module):
    cfg: HebbianConfig

    def setup(self):
        cfg = self.cfg
        dtype = compute_dtype(cfg.dtype)
        self.encoder = PatchEncoder(cfg.d_model, cfg.patch, cfg.dropout, dtype)
        dense = lora_dense(cfg.lora_rank, cfg.lora_alpha, dtype)
        block = maybe_remat(HybridBlock, cfg.remat, static_argnums=(4,))  # train: positional and static
        self.blocks = [block(cfg.n_heads, cfg.window, cfg.memory_impl, cfg.memory_chunk, cfg.dropout, dense, dtype,
                             name=f"block_{i}") for i in range(cfg.n_layers)]
        self.final_ln = nn.LayerNorm()
        self.reasoning = ReasoningLoop(cfg.reasoning_steps, dtype)
        self.head = LocalHead(cfg.head_hidden)
        self.empty_latent = self.param("empty_latent", nn.initializers.normal(0.02), (cfg.d_model,))

    def latents(self, tokens, alpha, memory_state=None, train: bool = False):
        """Patch latents after blocks + reasoning: ``[B, T/P, d]``, plus internals."""
        z = self.encoder(tokens, train)
        decays, states = [], []
        for i, block in enumerate(self.blocks):
            z, log_decay, state = block(z, alpha, None if memory_state is None else memory_state[i], train)
            decays.append(jnp.exp(log_decay))
            states.append(state)
        z, updates = self.reasoning(self.final_ln(z))
        return z, jnp.stack(decays), states, updates

    def decode(self, context, tokens):
        """Byte logits for next-patch decoding: ``context [B, Q, d]`` (latent before patch q),
        ``tokens [B, Q·P]`` teacher-forced → ``[B, Q, P, 256]``."""
        b, q, d = context.shape
        p = self.cfg.patch
        prev = tokens.reshape(b, q, p)[:, :, :-1]
        prev = jnp.concatenate([jnp.full((b, q, 1), START, tokens.dtype), prev], axis=-1)
        return self.head(context.reshape(b * q, d), prev.reshape(b * q, p)).reshape(b, q, p, 256)

    def alpha(self, step, force_plasticity=None) -> jax.Array:
        """Plasticity α: the curriculum's value at ``step``, or ``force_plasticity`` if given."""
        if force_plasticity is not None:
            return jnp.asarray(force_plasticity, jnp.float32)
        return plasticity(step, self.cfg.plasticity_stages, self.cfg.curriculum_steps)

    def __call__(self, tokens, *, train: bool = False, step=0, force_plasticity=None, memory_state=None):
        """Next-byte logits: patches → hybrid blocks (window attention + fast weights) → reasoning loop
        → GRU local head decoding each patch's bytes from the previous patch's latent.

        Args:
          tokens: ``[B, T]`` byte ids (0..255), T a multiple of ``patch``.
          train: apply dropout (needs a ``"dropout"`` rng).
          step: the training step: sets the plasticity α through the curriculum.
          force_plasticity: use this α instead of the curriculum's (the causality suite's intervention).
          memory_state: per-layer initial fast-weight states (a list of ``[B, H, D, D+1]``); None: zeros.

        Returns:
          ``(logits, aux)``: ``logits [B, T, 256]`` float32, position t predicting byte t+1 from bytes ≤ t;
          ``aux`` holds ``plasticity`` (α), ``decay`` (per-layer fast-weight decays), ``reasoning_update``
          (update size per reasoning step), ``memory_state`` (per-layer final fast-weight states) and
          ``metrics``.
        """
        cfg = self.cfg
        b, t = tokens.shape
        p = cfg.patch
        alpha = self.alpha(step, force_plasticity)
        z, decays, states, updates = self.latents(tokens, alpha, memory_state, train)
        # context for patch q is the latent of patch q−1; q = 0 gets the learned empty latent
        context = jnp.concatenate([self.start_latent(b)[:, None], z[:, :-1]], axis=1)
        byte_logits = self.decode(context, tokens).reshape(b, t, 256)  # logits for byte j, j = 0..T−1
        # logits[:, t] must predict byte t+1: shift by one; the last position is decoded from the
        # final latent with the start symbol (the first byte of the next, unseen patch)
        nxt = self.head(z[:, -1], jnp.full((b, p), START, tokens.dtype))[:, 0]
        logits = jnp.concatenate([byte_logits[:, 1:], nxt[:, None]], axis=1).astype(jnp.float32)
        aux = {"plasticity": alpha, "decay": decays, "reasoning_update": updates, "memory_state": states,
               "metrics": {"plasticity": alpha, "decay_mean": jnp.mean(decays),
                           **{f"decay_l{i}": jnp.mean(d) for i, d in enumerate(decays)},
                           **{f"reason_{i}": u for i, u in enumerate(updates)}}}
        return logits, aux

    # --- streaming generation: carry fast weights and the attention window, never re-read the prefix ---

    def init_cache(self, batch: int) -> dict:
        """Empty stream state: per-layer block inputs of the last ``window − 1`` patches (+ which slots
        are filled), per-layer fast-weight states ``[B, H, D, D+1]`` and the next patch index."""
        cfg = self.cfg
        hd = cfg.d_model // cfg.n_heads
        slots = cfg.window - 1
        return {"history": jnp.zeros((cfg.n_layers, batch, slots, cfg.d_model), jnp.float32),
                "valid": jnp.zeros((batch, slots), bool),
                "memory": jnp.zeros((cfg.n_layers, batch, cfg.n_heads, hd, hd + 1), jnp.float32),
                "pos": jnp.zeros((), jnp.int32)}

    def advance(self, tokens, cache: dict, step=0, force_plasticity=None):
        """Feed whole patches ``tokens [B, n·P]`` after the cached stream → ``(latent of the last
        patch [B, d], new cache)``. Equal to the full pass over the whole stream (tested)."""
        alpha = self.alpha(step, force_plasticity)
        z = self.encoder(tokens, offset=cache["pos"])
        slots = cache["history"].shape[2]
        histories, states = [], []
        for i, block in enumerate(self.blocks):
            full = jnp.concatenate([cache["history"][i], z], axis=1)
            z, _, state = block(z, alpha, cache["memory"][i], False, history=cache["history"][i],
                                history_valid=cache["valid"])
            histories.append(full[:, full.shape[1] - slots:])
            states.append(state)
        z, _ = self.reasoning(self.final_ln(z))
        valid = jnp.concatenate([cache["valid"], jnp.ones(z.shape[:2], bool)], axis=1)
        new = {"history": jnp.stack(histories), "valid": valid[:, valid.shape[1] - slots:],
               "memory": jnp.stack(states), "pos": cache["pos"] + z.shape[1]}
        return z[:, -1], new

    def start_latent(self, batch: int) -> jax.Array:
        """The context used before any patch has been read ``[B, d]``."""
        return jnp.broadcast_to(self.empty_latent, (batch, self.cfg.d_model))

    def patch_logits(self, context, patch_bytes):
        """Logits ``[B, P, 256]`` for the bytes of one patch from the previous patch's latent; byte j
        sees only bytes < j of ``patch_bytes [B, P]`` (later entries are ignored)."""
        return self.decode(context[:, None], patch_bytes)[:, 0]
