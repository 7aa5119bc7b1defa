"""Kuramoto oscillators along a sequence: order parameters, O(N) mean-field coupling, scans, bistable u.

Per layer, phases θ_t ∈ ℝ^N (fp32) evolve along the sequence:

    θ_t = θ_{t−1} + dt·(ω_t + (K_t/N)·Σ_j sin(θ_{t−1,j} − θ_{t−1,i})) [+ noise]

Mean-field identity: Σ_j sin(θ_j − θ_i) = cos θ_i·S − sin θ_i·C with S = Σ sin θ_j, C = Σ cos θ_j,
i.e. N·R·sin(ψ − θ_i) where R e^{iψ} = (C + iS)/N. A general coupling matrix uses
cos θ_i (K sin θ)_i − sin θ_i (K cos θ)_i.
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp

from spiraljax.ops.impl import Impl, resolve

# Lower bounds of R of the tone zones 1..6 (zone 0 starts at R = 0); their names and symbols are
# presentation and live in spiraljax.eval.tone.
ZONE_BOUNDS = (0.1, 0.3, 0.5, 0.7, 0.85, 0.95)


def order_parameter(theta: jax.Array, n: int = 1) -> tuple[jax.Array, jax.Array]:
    """``Z_n = mean_j e^{i n θ_j}`` over the last axis → ``(R = |Z_n|, ψ = arg Z_n)``.

    Args:
      theta: ``[..., N]`` phases.
      n: harmonic.

    Returns:
      ``(R [...], ψ [...])``.
    """
    c = jnp.mean(jnp.cos(n * theta), axis=-1)
    s = jnp.mean(jnp.sin(n * theta), axis=-1)
    return jnp.sqrt(c**2 + s**2), jnp.arctan2(s, c)


def polar(c: jax.Array, s: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """``Z = c + i s`` → ``(|Z|, cos arg Z, sin arg Z)`` (|Z| floored at 1e-6 so Z = 0 gives finite features).

    Args:
      c: ``[...]`` real part.
      s: ``[...]`` imaginary part.

    Returns:
      ``(|Z|, cos arg Z, sin arg Z)``, each ``[...]``.
    """
    mag = jnp.sqrt(c**2 + s**2 + 1e-12)
    return mag, c / mag, s / mag


def multiscale_features(theta: jax.Array, n_harmonics: int) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Harmonics n = 1..H of ``Z_n = mean_j e^{i n θ_j}``: magnitudes ``|Z_n|`` and cos/sin arg Z_n.

    Args:
      theta: ``[..., N]`` phases.
      n_harmonics: H.

    Returns:
      ``(mag, cos, sin)``, each ``[..., H]``.
    """
    n = jnp.arange(1, n_harmonics + 1, dtype=theta.dtype)
    c = jnp.mean(jnp.cos(n[:, None] * theta[..., None, :]), axis=-1)
    s = jnp.mean(jnp.sin(n[:, None] * theta[..., None, :]), axis=-1)
    return polar(c, s)


def global_order_parameter(mag: jax.Array, cos: jax.Array, sin: jax.Array) -> jax.Array:
    """R of all oscillators from bank features ``[..., G, H]`` (equal banks):
    ``R = |mean_g Z_1,g| = |mean_g |Z_1,g| e^{i arg Z_1,g}|``. This is the R the readout sees.

    Args:
      mag: ``[..., G, H]`` magnitudes |Z_n| per bank (:func:`multiscale_features`).
      cos: ``[..., G, H]`` cos arg Z_n.
      sin: ``[..., G, H]`` sin arg Z_n.

    Returns:
      ``R [...]``.
    """
    chex.assert_equal_shape([mag, cos, sin])
    c = jnp.mean(mag[..., 0] * cos[..., 0], axis=-1)
    s = jnp.mean(mag[..., 0] * sin[..., 0], axis=-1)
    return jnp.sqrt(c**2 + s**2)


def force_global_order_parameter(
    mag: jax.Array, cos: jax.Array, sin: jax.Array, r_target: jax.Array
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Bank features ``[..., G, H]`` whose global R (:func:`global_order_parameter`) is exactly ``r_target``
    (``[...]`` or scalar, in [0, 1]).

    Every bank's phase distribution p_g becomes the mixture ``(1−λ)·p_g + λ·q``, so every harmonic
    becomes ``Z'_{g,n} = (1−λ)·Z_{g,n} + λ·Z_n(q)``:

    * lowering (r ≤ R): q is uniform (Z_n(q) = 0), λ = 1 − r/R — every |Z_n| scaled by r/R;
    * raising (r > R): q is locked at the global phase Ψ = arg mean_g Z_1,g (Z_n(q) = e^{inΨ}),
      λ = (r − R)/(1 − R) — this also pulls the banks' phases towards Ψ, without which R > mean_g|Z_1,g|
      is out of reach (scaling magnitudes alone, clipped at 1, left R near 0.15 on 32 banks).

    The global Z_1 becomes ``((1−λ)R + λ·[r > R])·e^{iΨ} = r·e^{iΨ}``. A mixture of phase distributions
    keeps every |Z'_n| ≤ 1, so nothing is clipped, and Ψ is kept.

    Args:
      mag: ``[..., G, H]`` magnitudes |Z_n| per bank.
      cos: ``[..., G, H]`` cos arg Z_n.
      sin: ``[..., G, H]`` sin arg Z_n.
      r_target: ``[...]`` or scalar target R in [0, 1].

    Returns:
      ``(mag', cos', sin')``, each ``[..., G, H]``.
    """
    chex.assert_equal_shape([mag, cos, sin])
    zc, zs = mag * cos, mag * sin
    c1, s1 = jnp.mean(zc[..., 0], axis=-1), jnp.mean(zs[..., 0], axis=-1)
    r = jnp.sqrt(c1**2 + s1**2)
    psi = jnp.arctan2(s1, c1)
    r_target = jnp.broadcast_to(jnp.asarray(r_target, jnp.float32), r.shape)
    raise_ = r_target > r
    lam = jnp.where(raise_, (r_target - r) / jnp.maximum(1.0 - r, 1e-6), 1.0 - r_target / jnp.maximum(r, 1e-6))
    lam = jnp.clip(lam, 0.0, 1.0)[..., None, None]
    n = jnp.arange(1, mag.shape[-1] + 1, dtype=jnp.float32)
    on = raise_[..., None, None].astype(jnp.float32)  # target Z_n(q): e^{inΨ} when raising, 0 when lowering
    qc, qs = on * jnp.cos(n * psi[..., None, None]), on * jnp.sin(n * psi[..., None, None])
    return polar((1.0 - lam) * zc + lam * qc, (1.0 - lam) * zs + lam * qs)


def coupling_meanfield(theta: jax.Array, axis: int | tuple[int, ...] = -1) -> jax.Array:
    """Σ_j sin(θ_j − θ_i) for every i in O(N): ``cos θ_i·S − sin θ_i·C``, j running over ``axis``
    (``(-2, -1)``: over every oscillator of all banks).

    Args:
      theta: ``[..., N]`` phases.
      axis: the axis (axes) j runs over.

    Returns:
      Same shape as ``theta``.
    """
    s = jnp.sum(jnp.sin(theta), axis=axis, keepdims=True)
    c = jnp.sum(jnp.cos(theta), axis=axis, keepdims=True)
    return jnp.cos(theta) * s - jnp.sin(theta) * c


def coupling_pairwise(theta: jax.Array, k_matrix: jax.Array | None = None) -> jax.Array:
    """Reference O(N²): Σ_j K_ij sin(θ_j − θ_i) (K = all ones if None).

    Args:
      theta: ``[..., N]`` phases.
      k_matrix: optional ``[N, N]`` (or broadcastable to ``[..., N, N]``) couplings K_ij.

    Returns:
      ``[..., N]``.
    """
    diff = jnp.sin(theta[..., None, :] - theta[..., :, None])  # [..., i, j] = sin(θ_j − θ_i)
    if k_matrix is not None:
        diff = diff * k_matrix
    return jnp.sum(diff, axis=-1)


def kuramoto_step(
    theta: jax.Array,
    omega: jax.Array,
    coupling: jax.Array,
    dt: float,
    noise: jax.Array | None = None,
    global_mix: float = 0.0,
) -> jax.Array:
    """One Euler step: ``θ + dt·(ω + (K/N)·Σ_j sin(θ_j − θ_i)) [+ noise]``; ``coupling`` is K per row.

    ``global_mix = γ`` for banked phases ``[..., G, M]``: a fraction γ of each bank's coupling acts on
    all G·M oscillators, ``(1−γ)·(K_g/M)·Σ_{j∈g} + γ·(K_g/(G·M))·Σ_{all j}`` (γ = 1: one population).

    Args:
      theta: ``[..., N]`` phases (``[B, G, M]`` for banks).
      omega: ``[..., N]`` natural frequencies, same shape as ``theta``.
      coupling: ``[...]`` = ``theta.shape[:-1]``, K per row.
      dt: Euler step.
      noise: optional, same shape as ``theta``.
      global_mix: γ in [0, 1].

    Returns:
      New phases, same shape as ``theta``.
    """
    chex.assert_equal_shape([theta, omega])
    chex.assert_shape(coupling, theta.shape[:-1])
    if noise is not None:
        chex.assert_equal_shape([theta, noise])
    n = theta.shape[-1]
    drive = coupling[..., None] / n * coupling_meanfield(theta)
    if global_mix:
        pooled = coupling[..., None] / (n * theta.shape[-2]) * coupling_meanfield(theta, axis=(-2, -1))
        drive = (1.0 - global_mix) * drive + global_mix * pooled
    new = theta + dt * (omega + drive)
    if noise is not None:
        new = new + noise
    return new


def kuramoto_scan(
    theta0: jax.Array,
    omega: jax.Array,
    coupling: jax.Array,
    dt: float,
    noise: jax.Array | None = None,
    unroll: int = 1,
    remat_chunk: int | None = None,
    global_mix: float = 0.0,
    impl: str | Impl = Impl.AUTO,
) -> tuple[jax.Array, jax.Array]:
    """Evolve phases along time: ``omega [B, T, ..., N]``, ``coupling [B, T, ...]`` → ``(θ [B, T, ..., N],
    θ_T)``; extra axes (e.g. oscillator banks) are batched, coupling acts within the last (plus the
    ``global_mix`` share across the last two, see :func:`kuramoto_step`).

    θ at position t has absorbed the drive of positions ≤ t only (causal). fp32 throughout.
    ``remat_chunk=C`` scans over chunks of C positions under ``jax.checkpoint`` (impl "remat"), so the
    backward pass stores one phase vector per chunk instead of every step's intermediates (long
    sequences); the result is identical. ``impl="auto"`` runs "remat" when C < T, else the plain
    "scan" (:func:`spiraljax.ops.impl.resolve`).

    Args:
      theta0: ``[B, ..., N]`` initial phases.
      omega: ``[B, T, ..., N]`` natural frequencies.
      coupling: ``[B, T, ...]`` = ``omega.shape[:-1]``, K per row and step.
      dt: Euler step.
      noise: optional ``[B, T, ..., N]``, added after each step.
      unroll: ``lax.scan`` unroll.
      remat_chunk: rematerialise every C steps (None: plain scan under "auto").
      global_mix: γ, see :func:`kuramoto_step`.
      impl: "auto", "scan" (one ``lax.scan``; ignores ``remat_chunk``) or "remat" (needs
        ``remat_chunk``; a C ≥ T checkpoints the whole scan as one chunk).

    Returns:
      ``(θ [B, T, ..., N], θ_T [B, ..., N])`` in fp32.
    """
    chex.assert_rank(omega, {3, 4, 5, 6})
    chex.assert_shape(coupling, omega.shape[:-1])
    chex.assert_shape(theta0, omega.shape[:1] + omega.shape[2:])
    if noise is not None:
        chex.assert_equal_shape([omega, noise])
    omega = omega.astype(jnp.float32)
    coupling = coupling.astype(jnp.float32)
    xs = (
        jnp.swapaxes(omega, 0, 1),
        jnp.swapaxes(coupling, 0, 1),
        None if noise is None else jnp.swapaxes(noise.astype(jnp.float32), 0, 1),
    )

    def body(theta, x):
        om, k, nz = x
        theta = kuramoto_step(theta, om, k, dt, nz, global_mix)
        return theta, theta

    theta0 = theta0.astype(jnp.float32)
    t = omega.shape[1]
    if resolve("kuramoto_scan", impl, length=t, chunk=remat_chunk) is Impl.SCAN:
        final, thetas = jax.lax.scan(body, theta0, xs, unroll=unroll)
        return jnp.swapaxes(thetas, 0, 1), final
    c = min(remat_chunk, t)
    pad = -t % c  # padded steps come after every real one, so they never affect it
    xs = jax.tree.map(lambda x: jnp.pad(x, [(0, pad)] + [(0, 0)] * (x.ndim - 1)), xs)
    xs = jax.tree.map(lambda x: x.reshape(-1, c, *x.shape[1:]), xs)

    @jax.checkpoint
    def chunk_body(theta, xc):
        return jax.lax.scan(body, theta, xc, unroll=unroll)

    _, thetas = jax.lax.scan(chunk_body, theta0, xs)
    thetas = thetas.reshape(-1, *thetas.shape[2:])[:t]
    return jnp.swapaxes(thetas, 0, 1), thetas[-1]


@jax.custom_vjp
def inward_clamp(x: jax.Array, lo: float, hi: float) -> jax.Array:
    """``clip(x, lo, hi)`` whose gradient, outside the interval, passes only the part that moves x
    back inside (a plain clip passes none, so a value stuck at the edge can never leave it).

    Args:
      x: any shape.
      lo: lower bound.
      hi: upper bound.

    Returns:
      ``clip(x, lo, hi)``, same shape as ``x``.
    """
    return jnp.clip(x, lo, hi)


def _inward_clamp_fwd(x, lo, hi):
    return jnp.clip(x, lo, hi), (x, lo, hi)


def _inward_clamp_bwd(res, g):
    x, lo, hi = res
    # descent moves x by −g: below lo only g < 0 moves it up, above hi only g > 0 moves it down
    keep = ((x >= lo) & (x <= hi)) | ((x < lo) & (g < 0)) | ((x > hi) & (g > 0))
    return jnp.where(keep, g, 0.0), None, None


inward_clamp.defvjp(_inward_clamp_fwd, _inward_clamp_bwd)


def bistable_u(p: jax.Array, eps: float = 1e-4, lo: float = 0.1, hi: float = 10.0) -> tuple[jax.Array, jax.Array]:
    """v3 reduced variable from 10 scalars [a..j] (last axis): ``u = (d·g − c·h)/(a·g − c·e + ε)``
    clamped to [lo, hi] with :func:`inward_clamp`, so the regulariser's −log ū can lift a u that
    sits at the 0.1 clamp (the original's u stayed pinned there).

    Args:
      p: ``[..., 10]`` the scalars a..j.
      eps: denominator guard.
      lo: lower clamp.
      hi: upper clamp.

    Returns:
      ``(u [...], saturated [...] bool)``.
    """
    chex.assert_axis_dimension(p, -1, 10)
    a, c, d, e, g, h = p[..., 0], p[..., 2], p[..., 3], p[..., 4], p[..., 6], p[..., 7]
    raw = (d * g - c * h) / (a * g - c * e + eps)
    u = inward_clamp(raw, lo, hi)
    return u, (raw <= lo) | (raw >= hi)


def bistable_regulariser(
    p: jax.Array, u: jax.Array, lam1: float = 0.1, lam2: float = 0.5, lam_reg: float = 0.5, eps: float = 1e-4
) -> jax.Array:
    """``λ_reg·(λ1/(mean|Δ| + ε) + λ2·(−log(ū + ε)))`` with ``Δ = b·g − c·f``.

    Args:
      p: ``[..., 10]`` the scalars a..j.
      u: ``[...]`` = ``p.shape[:-1]``, from :func:`bistable_u`.
      lam1: weight of the 1/mean|Δ| term.
      lam2: weight of the −log ū term.
      lam_reg: overall weight.
      eps: guard.

    Returns:
      Scalar loss.
    """
    chex.assert_axis_dimension(p, -1, 10)
    chex.assert_shape(u, p.shape[:-1])
    b, c, f, g = p[..., 1], p[..., 2], p[..., 5], p[..., 6]
    delta = b * g - c * f
    return lam_reg * (lam1 / (jnp.mean(jnp.abs(delta)) + eps) + lam2 * (-jnp.log(jnp.mean(u) + eps)))


def tone_zone(r: jax.Array) -> jax.Array:
    """Zone index 0..6 of order parameter values (∅ Unformed … 🜂 Ache): the number of
    ``ZONE_BOUNDS`` that are ≤ r.

    Args:
      r: ``[...]`` order parameters.

    Returns:
      ``[...]`` int zone indices.
    """
    return jnp.searchsorted(jnp.asarray(ZONE_BOUNDS), r, side="right")


def zone_counts(r: jax.Array) -> jax.Array:
    """Visits per tone zone over all entries of ``r``: ``count_z = Σ [tone_zone(r) = z]``.

    Args:
      r: ``[...]`` order parameters.

    Returns:
      ``[7]`` float counts.
    """
    return jnp.sum(jax.nn.one_hot(tone_zone(r).ravel(), len(ZONE_BOUNDS) + 1), axis=0)
