"""An oscillator layer whose only output is the multi-scale order parameter of its phases."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from spiraljax.ops.kuramoto import (
    bistable_regulariser,
    bistable_u,
    force_global_order_parameter,
    global_order_parameter,
    kuramoto_scan,
    multiscale_features,
)


class OscillatorLayer(nn.Module):
    """h ``[B, T, d]`` drives N oscillators in G banks of N/G (mean-field coupling within a bank, and a
    share ``global_mix`` of it across all N); returns readout features ``[B, T, 3·G·H]`` and internals.

    ω_t = ω₀ + W_ω h_t;  K_t = softplus(W_K h_t) per bank (v1/v2) or k·σ(u_t) from the bistable core
    (v3, k = ``coupling_scale``).
    Features: [|Z_n|, cos arg Z_n, sin arg Z_n] of every bank for n = 1..H — the only path onward.
    With N/G > 2H these are population-level summaries; with N/G ≤ 2H the H power sums of a bank
    determine every phase in it (Newton's identities plus |e^{iθ}| = 1) and the readout sees the full
    phase state.
    ``R`` is the order parameter of all N oscillators, |mean_j e^{iθ_j}| = |mean_g Z_1,g|.
    ``force_R`` turns every bank into a phase mixture whose global R is exactly the forced value
    (:func:`force_global_order_parameter`); ``R_readout`` is R recomputed from the features the
    readout receives (= the forced value when forcing). ``cut_R`` replaces every |Z_n| by a constant
    and ignores ``force_R`` (the control whose R path is cut). G = 1 is a single population.
    """

    n_osc: int
    n_harmonics: int
    dt: float = 0.1
    noise: float = 0.0
    core: str = "softplus"  # "softplus" | "bistable"
    unroll: int = 4
    remat_chunk: int | None = None
    n_groups: int = 1
    global_mix: float = 0.0
    coupling_scale: float = 2.0

    @nn.compact
    def __call__(self, h, *, train: bool = False, force_R=None, cut_R: bool = False, theta_start=None, started=None):
        """``theta_start [B, N]`` / ``started [B]`` (carried state): rows with ``started`` begin from
        ``theta_start``, the others from the learned θ₀ (None: every row from θ₀). The internals hold
        ``theta_end [B, N]``, the phases after the last position, wrapped to [0, 2π)."""
        b, t, _ = h.shape
        g, m = self.n_groups, self.n_osc // self.n_groups
        h = h.astype(jnp.float32)
        omega0 = self.param("omega0", nn.initializers.normal(1.0), (self.n_osc,))
        theta0 = self.param("theta0", lambda k, s: jax.random.uniform(k, s, maxval=2 * jnp.pi), (self.n_osc,))
        omega = (omega0 + nn.Dense(self.n_osc, name="omega")(h)).reshape(b, t, g, m)
        internals = {}
        if self.core == "bistable":
            p = nn.Dense(
                10,
                name="core",
                kernel_init=nn.initializers.normal(0.1),
                bias_init=lambda k, s, d=jnp.float32: jnp.array([1, 0.5, 0.2, 1, 0.2, 0.5, 1, 0.2, 0, 0], d),
            )(h)
            u, sat = bistable_u(p)
            coupling = jnp.broadcast_to(self.coupling_scale * jax.nn.sigmoid(u)[..., None], (b, t, g))
            internals.update(u=u, u_saturated=sat.astype(jnp.float32), reg=bistable_regulariser(p, u))
        else:
            coupling = jax.nn.softplus(nn.Dense(g, name="coupling")(h) + 1.0)
        noise = None
        if train and self.noise > 0:
            noise = self.noise * jnp.sqrt(self.dt) * jax.random.normal(self.make_rng("noise"), (b, t, g, m))
        start = jnp.broadcast_to(theta0, (b, self.n_osc))
        if theta_start is not None:
            start = jnp.where(started[:, None], theta_start.astype(jnp.float32), start)
        theta, theta_end = kuramoto_scan(
            start.reshape(b, g, m), omega, coupling, self.dt, noise, self.unroll, self.remat_chunk, self.global_mix
        )
        internals["theta_end"] = jnp.mod(theta_end.reshape(b, self.n_osc), 2 * jnp.pi)  # exact: only e^{iθ} is read
        mag, cos, sin = multiscale_features(theta, self.n_harmonics)  # [B, T, G, H] each
        r = global_order_parameter(mag, cos, sin)  # R of all N oscillators, a function of the features
        if cut_R:
            mag = jnp.full_like(mag, 0.5)
        elif force_R is not None:
            check_forced_R(force_R)
            mag, cos, sin = force_global_order_parameter(mag, cos, sin, force_R)
        feats = jnp.concatenate([mag, cos, sin], axis=-1).reshape(b, t, -1)
        return feats, {
            "R": r,
            "R_readout": global_order_parameter(mag, cos, sin),
            "coupling": jnp.mean(coupling, axis=-1),
            **internals,
        }


def check_forced_R(value) -> None:
    """A concrete forced R outside [0, 1] is an error (no order parameter has it); traced values pass."""
    if isinstance(value, jax.core.Tracer):
        return
    v = jnp.asarray(value)
    if bool(jnp.any((v < 0) | (v > 1))):
        raise ValueError(f"force_R must lie in [0, 1], got {value}")
