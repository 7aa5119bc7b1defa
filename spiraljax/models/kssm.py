"""K-SSM: Kuramoto oscillator state-space language models whose order parameter R is the only path.

One model, three presets that differ by fields only:

* ``kssm_v1`` — one oscillator layer (``n_layers: 1``), softplus coupling, multi-scale readout → MLP → logits.
* ``kssm_v2`` — stacked layers (``n_layers: 4``): each layer's readout MLP drives the next layer's
  oscillators; no residual path bypasses the oscillators and no normalisation follows a readout.
* ``kssm_v3`` — v2 with the bistable 10-parameter core (``core: bistable``: u ∈ [0.1, 10],
  K = coupling_scale·σ(u)), its regulariser as ``aux_loss`` (``reg_weight``) and phase noise in
  training only (``noise: 0.01``).

The oscillators reach the logits only through the multi-scale order parameters of G banks
(``n_groups``), [|Z_n|, cos arg Z_n, sin arg Z_n] for n = 1..H. The global R is one function of them,
not the only one: the causality suite's R share measures how much of the output's token dependence
goes through R. A bank of M = N/G oscillators must have M > 2H: its H complex power sums are 2H real
numbers, and for phases on the unit circle they determine all M phases whenever M ≤ 2H (the
polynomial with those roots is self-inversive, so e_1..e_⌈M/2⌉ fix it) — the readout would see the
full phase state. Such a config must say so with ``full_phase_readout: true``.

aux: ``R [B, T]`` (last layer), ``R_layers [L, B, T]``, ``R_readout [B, T]`` (R recomputed from the
last readout's features: equals a forced R), ``u [B, T]`` (v3, last layer), ``metrics``.
Keywords: ``force_R`` (float or [B, T] in [0, 1]) sets the R every readout sees; ``cut_R=True`` is the
control.

Carried state (docs/carried_state.md): ``initial_state(B) = {"theta": [B, L, N] phases of every layer,
"started": [B] bool}``; a row with ``started`` False starts from the learned θ₀. ``state=`` starts
each layer's scan from the carried phases and ``aux["state"]`` holds the phases after the window
(wrapped to [0, 2π): the model reads only e^{iθ}), so two carried windows equal one of twice the length.
"""

from __future__ import annotations

from typing import Literal

import flax.linen as nn
import jax.numpy as jnp
from pydantic import Field, model_validator

from spiraljax.config import DModel, DType, ModelConfig, NLayers, Remat
from spiraljax.nn.kuramoto import OscillatorLayer, check_forced_R
from spiraljax.nn.precision import compute_dtype, maybe_remat
from spiraljax.ops.kuramoto import zone_counts


class KSSMConfig(ModelConfig):
    """Fields of every K-SSM (softplus coupling); the registered presets are the subclasses below."""

    d_model: DModel = 128
    n_layers: NLayers = 4
    core: Literal["softplus"] = Field("softplus", description="coupling core: K = softplus(W h) per bank")
    n_oscillators: int = Field(128, gt=0, description="oscillators per layer (N)")
    n_harmonics: int = Field(8, gt=0, description="order parameters Z_1..Z_H read out per bank (H)")
    dt: float = Field(0.1, gt=0, description="Kuramoto integration step")
    noise: float = Field(0.0, ge=0, description="phase noise scale in training (0 = none)")
    readout_hidden: int = Field(256, gt=0, description="hidden width of each layer's readout MLP")
    unroll: int = Field(4, gt=0, description="lax.scan unroll of the oscillator recurrence")
    n_groups: int = Field(1, gt=0, description="independent oscillator banks (G), each with its own order parameters")
    remat_chunk: int | None = Field(
        None, gt=0, description="jax.checkpoint every C steps of the scan (long T; null = off)"
    )
    global_mix: float = Field(0.0, ge=0, le=1, description="share of each bank's coupling acting on all N oscillators")
    full_phase_readout: bool = Field(
        False,
        description="declare a config whose banks have ≤ 2·n_harmonics oscillators (the readout sees every phase)",
    )
    # bfloat16 runs the readout MLPs only: the oscillator layer (phases, Z_n, R) stays float32
    dtype: DType = "float32"
    remat: Remat = False

    def build(self) -> nn.Module:
        return KSSM(self)

    @property
    def bank_size(self) -> int:
        return self.n_oscillators // self.n_groups

    @property
    def population_readout(self) -> bool:
        """Banks of more than 2H oscillators: the H complex power sums (2H real numbers) of a bank
        cannot determine its M phases, so the readout sees population-level summaries, not the phase
        state (M ≤ 2H: they determine every phase, see the module docstring)."""
        return self.bank_size > 2 * self.n_harmonics

    @model_validator(mode="after")
    def _banks(self) -> "KSSMConfig":
        if self.n_oscillators % self.n_groups:
            raise ValueError(f"n_oscillators={self.n_oscillators} is not divisible by n_groups={self.n_groups}")
        if not self.population_readout and not self.full_phase_readout:
            raise ValueError(
                f"banks of {self.bank_size} oscillators (n_oscillators={self.n_oscillators} / n_groups="
                f"{self.n_groups}) with n_harmonics={self.n_harmonics}: the power sums determine every phase, so "
                f"the readout sees the full phase state, not a population summary; use banks of more than "
                f"2·n_harmonics oscillators or set full_phase_readout=true to say so"
            )
        return self


class KSSMv1Config(KSSMConfig):
    family: Literal["kssm_v1"] = "kssm_v1"
    n_layers: NLayers = 1


class KSSMv2Config(KSSMConfig):
    family: Literal["kssm_v2"] = "kssm_v2"


class KSSMv3Config(KSSMConfig):
    family: Literal["kssm_v3"] = "kssm_v3"
    core: Literal["bistable"] = Field(
        "bistable",
        description="coupling core: K = coupling_scale·σ(u) from the "
        "bistable core: u = (d·g − c·h)/(a·g − c·e + ε) from "
        "10 scalars a..j = Linear(h), clamped to [0.1, 10]",
    )
    n_harmonics: int = Field(32, gt=0, description="order parameters Z_1..Z_H read out per bank (H)")
    noise: float = Field(0.01, ge=0, description="phase noise scale in training (0 = none)")
    reg_weight: float = Field(
        1.0,
        ge=0,
        description="multiplies the bistable regulariser λ_reg·(λ1/(mean|Δ| + ε) "
        "+ λ2·(−log(ū + ε))), Δ = b·g − c·f, added to the loss",
    )
    coupling_scale: float = Field(2.0, gt=0, description="K = coupling_scale·σ(u) (2 in the original)")


class KSSM(nn.Module):
    cfg: KSSMConfig

    def initial_state(self, batch_size: int) -> dict:
        """The state before any text: ``theta [B, L, N]`` (unused until ``started``), ``started [B]`` False."""
        cfg = self.cfg
        return {
            "theta": jnp.zeros((batch_size, cfg.n_layers, cfg.n_oscillators), jnp.float32),
            "started": jnp.zeros((batch_size,), bool),
        }

    @nn.compact
    def __call__(self, tokens, *, train: bool = False, step=0, force_R=None, cut_R: bool = False, state=None):
        """Next-token logits through ``n_layers`` oscillator layers.

        Args:
          tokens: ``[B, T]`` int token ids.
          train: add phase noise (``noise``; needs a ``"noise"`` rng).
          step: the training step; unused here (every family takes it).
          force_R: set every layer's global order parameter R to this value in [0, 1] (scalar or
            broadcastable to ``[B, T]``): the causality suite's intervention.
          cut_R: replace every |Z_n| the readout sees by a constant (the control; ignores ``force_R``).
          state: a carried state (:meth:`initial_state`): every layer's scan starts from its phases.

        Returns:
          ``(logits, aux)``: ``logits [B, T, vocab_size]`` float32 (causal); ``aux`` holds ``R`` ``[B, T]``
          (last layer), ``R_layers`` ``[L, B, T]``, ``R_readout`` / ``R_readout_layers`` (R as the readout
          sees it: the forced value when forcing), ``coupling`` ``[B, T]``, ``metrics`` (R mean/sd, tone-zone
          counts), for the bistable core ``u`` and ``aux_loss`` (``reg_weight`` × the regulariser), and
          ``state`` (the phases after the window) when a state was given.
        """
        cfg = self.cfg
        bistable = cfg.core == "bistable"
        scale = {"coupling_scale": cfg.coupling_scale} if bistable else {}  # a field of the bistable core only
        dtype = compute_dtype(cfg.dtype)
        h = nn.Embed(cfg.vocab_size, cfg.d_model, embedding_init=nn.initializers.normal(0.5), name="embed")(tokens)
        if force_R is not None and not cut_R:
            check_forced_R(force_R)  # here: under remat a Python float reaches the layer as a tracer

        def layer(mdl, h, force_R, train, cut_R, i, theta_start, started):
            """Layer i: LayerNorm → oscillators (float32) → readout MLP (``dtype``); its modules belong to
            ``mdl`` (the KSSM), so the parameter tree is the same with and without remat."""
            osc = OscillatorLayer(
                cfg.n_oscillators,
                cfg.n_harmonics,
                cfg.dt,
                cfg.noise,
                unroll=cfg.unroll,
                remat_chunk=cfg.remat_chunk,
                n_groups=cfg.n_groups,
                global_mix=cfg.global_mix,
                core=cfg.core,
                **scale,
                name=f"osc_{i}",
                parent=mdl,
            )
            feats, inner = osc(
                nn.LayerNorm(name=f"ln_in_{i}", parent=mdl)(h),
                train=train,
                force_R=force_R,
                cut_R=cut_R,
                theta_start=theta_start,
                started=started,
            )
            h = nn.Dense(cfg.readout_hidden, dtype=dtype, name=f"readout_{i}", parent=mdl)(feats)
            return nn.Dense(cfg.d_model, dtype=dtype, name=f"readout_out_{i}", parent=mdl)(nn.gelu(h)), inner

        layer = maybe_remat(layer, cfg.remat, static_argnums=(3, 4, 5))  # train, cut_R, i
        rs, seen, internals = [], [], []
        started = None if state is None else jnp.asarray(state["started"], bool)
        for i in range(cfg.n_layers):
            h, inner = layer(
                self, h, force_R, train, cut_R, i, None if state is None else state["theta"][:, i], started
            )
            rs.append(inner["R"])
            seen.append(inner["R_readout"])
            internals.append(inner)
        logits = nn.Dense(cfg.vocab_size, name="head")(nn.gelu(h)).astype(jnp.float32)
        r = rs[-1]
        aux = {
            "R": r,
            "R_layers": jnp.stack(rs),
            "R_readout": seen[-1],
            "R_readout_layers": jnp.stack(seen),
            "coupling": internals[-1]["coupling"],
        }
        metrics = {"R_mean": jnp.mean(r), "R_std": jnp.std(r), "zone_counts": zone_counts(r)}
        if bistable:
            u = internals[-1]["u"]
            reg = sum(x["reg"] for x in internals) / cfg.n_layers
            aux.update(u=u, aux_loss=cfg.reg_weight * reg)
            metrics.update(u_mean=jnp.mean(u), u_clamp_frac=jnp.mean(internals[-1]["u_saturated"]), reg=reg)
        aux["metrics"] = metrics
        if state is not None:
            aux["state"] = {
                "theta": jnp.stack([x["theta_end"] for x in internals], axis=1),
                "started": jnp.ones_like(started),
            }
        return logits, aux
