"""Hebbian byte-level LM (after AGIFORMER), strictly causal at patch and byte level.

Bytes → patch latents (P bytes each) → hybrid blocks (sliding-window attention over patches +
normalised Hebbian fast weights) → reasoning loop → GRU local head. ``logits[:, t]`` predicts byte
t+1 from bytes ≤ t: the bytes of patch q are decoded from the latent of patch q−1 (a learned
"before the text" latent for q = 0) and, inside the patch, from the earlier bytes of patch q only.

Plasticity α follows the curriculum by step fraction (``plasticity_stages``, saved in the config,
so generation uses the α of the checkpoint's step); ``force_plasticity`` overrides it.
``lora_rank > 0`` adds LoRA adapters to every projection of the hybrid blocks (not the patch
encoder, reasoning loop or head), as on the dense baseline and Spiralformer.
aux: ``plasticity``, ``decay [L, H]``, ``reasoning_update [steps]``, ``memory_state`` (per layer), and
``state`` when a carried state was passed.

Carried state across windows (docs/carried_state.md, layout in docs/fast_weights.md): ``state=`` a
dict of batch-first arrays from :meth:`HebbianLM.initial_state`; streaming generation
(``init_cache`` / ``advance``) runs on the same state.
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
from spiraljax.state import check_state

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
    head_context_norm: bool = Field(
        True,
        description="LayerNorm (no parameters) on the head's context latent; "
        "false: the pre-stability head (docs/results/hebbian.md)",
    )
    head_embed_std: float = Field(
        1.0, gt=0, description="init std of the head's byte embedding (0.02 before the stability fix)"
    )
    memory_impl: Literal["chunked", "scan"] = Field(
        "chunked", description="fast-weight memory: chunked parallel form or a sequential scan"
    )
    memory_chunk: int = Field(64, gt=0, description="patches per chunk of the chunked memory")
    memory_rule: Literal["hebbian", "shifted", "delta"] = Field(
        "hebbian",
        description="fast-weight write rule: hebbian (k_t ⊗ v_t, normalised), shifted (keys from a "
        "causal convolution over positions t−K+1…t, started as k_{t−1}), delta (DeltaNet "
        "error-correcting write, learned β_t, L2-normalised q and k)",
    )
    shift_kernel: int = Field(2, ge=2, description="width K of the shifted rule's causal key convolution")
    plasticity_stages: list[tuple[float, float]] = Field(
        [(0.15, 0.10), (0.40, 0.50), (1.0, 0.99)],
        description="curriculum [(end fraction of curriculum_steps, α), ...]; α of the last stage after that",
    )
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
        self.blocks = [
            block(
                cfg.n_heads,
                cfg.window,
                cfg.memory_impl,
                cfg.memory_chunk,
                cfg.dropout,
                dense,
                dtype,
                cfg.memory_rule,
                cfg.shift_kernel,
                name=f"block_{i}",
            )
            for i in range(cfg.n_layers)
        ]
        self.final_ln = nn.LayerNorm()
        self.reasoning = ReasoningLoop(cfg.reasoning_steps, dtype)
        self.head = LocalHead(cfg.head_hidden, cfg.head_context_norm, cfg.head_embed_std)
        self.empty_latent = self.param("empty_latent", nn.initializers.normal(0.02), (cfg.d_model,))

    def latents(self, tokens, alpha, state=None, train: bool = False):
        """Patch latents after blocks + reasoning: ``[B, T/P, d]``, plus internals: the per-layer decays,
        the per-layer memory carries and the reasoning updates; with a carried ``state`` also the new
        state (attention history, memory, positions, last latent)."""
        if state is None:
            z = self.encoder(tokens, train)
        else:
            z = self.encoder(tokens, train, offset=state["pos"])
        decays, carries, histories = [], [], []
        for i, block in enumerate(self.blocks):
            if state is None:
                z, log_decay, carry = block(z, alpha, None, train)
            else:
                full = jnp.concatenate([state["history"][:, i], z.astype(jnp.float32)], axis=1)
                histories.append(full[:, full.shape[1] - state["history"].shape[2] :])  # inputs of the last S
                z, log_decay, carry = block(
                    z, alpha, self._layer_carry(state, i), train, state["history"][:, i], state["valid"]
                )
            decays.append(jnp.exp(log_decay))
            carries.append(carry)
        z, updates = self.reasoning(self.final_ln(z))
        new = None
        if state is not None:
            slots = state["history"].shape[2]
            valid = jnp.concatenate([state["valid"], jnp.ones(z.shape[:2], bool)], axis=1)
            new = {
                **state,
                "memory": jnp.stack([c["memory"] for c in carries], axis=1),
                "history": jnp.stack(histories, axis=1),
                "valid": valid[:, valid.shape[1] - slots :],
                "pos": state["pos"] + z.shape[1],
                "latent": z[:, -1].astype(jnp.float32),
                "started": jnp.ones_like(state["started"]),
            }
            if "keys" in state:
                new["keys"] = jnp.stack([c["keys"] for c in carries], axis=1)
            new = jax.tree.map(lambda a, ref: a.astype(ref.dtype), new, state)
        return z, jnp.stack(decays), carries, updates, new

    @staticmethod
    def _layer_carry(state: dict, i: int) -> dict:
        """Layer i's memory carry from the model state (``memory``, and ``keys`` for the shifted rule)."""
        return {name: state[name][:, i] for name in ("memory", "keys") if name in state}

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

    def __call__(self, tokens, *, train: bool = False, step=0, force_plasticity=None, state=None):
        """Next-byte logits: patches → hybrid blocks (window attention + fast weights) → reasoning loop
        → GRU local head decoding each patch's bytes from the previous patch's latent.

        Args:
          tokens: ``[B, T]`` byte ids (0..255), T a multiple of ``patch``.
          train: apply dropout (needs a ``"dropout"`` rng).
          step: the training step: sets the plasticity α through the curriculum.
          force_plasticity: use this α instead of the curriculum's (the causality suite's intervention).
          state: carried state from :meth:`initial_state` or a previous window's ``aux["state"]``
            (docs/carried_state.md); None: a fresh start (today's model, no ``aux["state"]``).

        Returns:
          ``(logits, aux)``: ``logits [B, T, 256]`` float32, position t predicting byte t+1 from bytes ≤ t;
          ``aux`` holds ``plasticity`` (α), ``decay`` (per-layer fast-weight decays), ``reasoning_update``
          (update size per reasoning step), ``memory_state`` (per-layer final fast-weight states),
          ``metrics``, and ``state`` (the state after this window) when ``state`` was given.
        """
        cfg = self.cfg
        b, t = tokens.shape
        p = cfg.patch
        if state is not None:
            check_state(state, b, "hebbian_lm state")
        alpha = self.alpha(step, force_plasticity)
        z, decays, carries, updates, new_state = self.latents(tokens, alpha, state, train)
        # context for patch q is the latent of patch q−1; q = 0 gets the learned empty latent (or, with a
        # carried state that has started, the last latent of the previous window)
        first = self.start_latent(b)
        if state is not None:
            first = jnp.where(state["started"][:, None], state["latent"].astype(first.dtype), first)
        context = jnp.concatenate([first[:, None], z[:, :-1]], axis=1)
        byte_logits = self.decode(context, tokens).reshape(b, t, 256)  # logits for byte j, j = 0..T−1
        # logits[:, t] must predict byte t+1: shift by one; the last position is decoded from the
        # final latent with the start symbol (the first byte of the next, unseen patch)
        nxt = self.head(z[:, -1], jnp.full((b, p), START, tokens.dtype))[:, 0]
        logits = jnp.concatenate([byte_logits[:, 1:], nxt[:, None]], axis=1).astype(jnp.float32)
        aux = {
            "plasticity": alpha,
            "decay": decays,
            "reasoning_update": updates,
            "memory_state": [c["memory"] for c in carries],
            "metrics": {
                "plasticity": alpha,
                "decay_mean": jnp.mean(decays),
                **{f"decay_l{i}": jnp.mean(d) for i, d in enumerate(decays)},
                **{f"reason_{i}": u for i, u in enumerate(updates)},
            },
        }
        if state is not None:
            aux["state"] = new_state
        return logits, aux

    # --- carried state (docs/carried_state.md); streaming generation runs on the same state ---

    @nn.nowrap
    def initial_state(self, batch_size: int) -> dict:
        """The state before any text, every leaf batch-first (``L`` layers, ``H`` heads, ``D = d/H``,
        ``S = window − 1`` attention slots):

        * ``memory [B, L, H, D, D+1]`` fast weights with the normaliser as the last column (``delta``:
          ``[B, L, H, D, D]``, no normaliser), zeros;
        * ``keys [B, L, K−1, H, D]`` (``shifted`` only) the last K−1 key inputs of the convolution, zeros;
        * ``history [B, L, S, d]`` block inputs of the S previous patches per layer, ``valid [B, S]``
          which slots hold a patch (all False);
        * ``pos [B]`` int32 patch index of the next patch (the encoder's RoPE position), 0;
        * ``latent [B, d]`` the last patch latent (the head's context for the next window's first
          patch) and ``started [B]`` bool: False → the learned ``empty_latent`` is used instead.
        """
        cfg = self.cfg
        hd = cfg.d_model // cfg.n_heads
        width = hd if cfg.memory_rule == "delta" else hd + 1
        state = {
            "memory": jnp.zeros((batch_size, cfg.n_layers, cfg.n_heads, hd, width), jnp.float32),
            "history": jnp.zeros((batch_size, cfg.n_layers, cfg.window - 1, cfg.d_model), jnp.float32),
            "valid": jnp.zeros((batch_size, cfg.window - 1), bool),
            "pos": jnp.zeros((batch_size,), jnp.int32),
            "latent": jnp.zeros((batch_size, cfg.d_model), jnp.float32),
            "started": jnp.zeros((batch_size,), bool),
        }
        if cfg.memory_rule == "shifted":
            state["keys"] = jnp.zeros((batch_size, cfg.n_layers, cfg.shift_kernel - 1, cfg.n_heads, hd), jnp.float32)
        return state

    @nn.nowrap
    def init_cache(self, batch: int) -> dict:
        """Empty stream state for generation: :meth:`initial_state`."""
        return self.initial_state(batch)

    def advance(self, tokens, cache: dict, step=0, force_plasticity=None):
        """Feed whole patches ``tokens [B, n·P]`` after the cached stream → ``(latent of the last
        patch [B, d], new cache)``. Equal to the full pass over the whole stream (tested)."""
        alpha = self.alpha(step, force_plasticity)
        z, _, _, _, new = self.latents(tokens, alpha, cache, False)
        return z[:, -1], new

    def start_latent(self, batch: int) -> jax.Array:
        """The context used before any patch has been read ``[B, d]``."""
        return jnp.broadcast_to(self.empty_latent, (batch, self.cfg.d_model))

    def patch_logits(self, context, patch_bytes):
        """Logits ``[B, P, 256]`` for the bytes of one patch from the previous patch's latent; byte j
        sees only bytes < j of ``patch_bytes [B, P]`` (later entries are ignored)."""
        return self.decode(context[:, None], patch_bytes)[:, 0]
