"""Cl(3,1) as real 4×4 matrices: basis blades, grades, reverse, Grace operator, token embeddings.

Generators (mutually anticommuting; three square to +1, one to −1), built from 2×2 blocks
σx = [[0,1],[1,0]], σz = [[1,0],[0,−1]], ε = [[0,1],[−1,0]]:
    e1 = σx⊗I,  e2 = σz⊗I,  e3 = ε⊗ε,  e4 = ε⊗σx  (e4² = −1).
The 16 blades e_S (ordered products over subsets S, grade |S|) form a trace-orthogonal basis of
M4(ℝ): coefficient of blade b in M is tr(bᵀ M)/4. φ = (1+√5)/2 is the only constant.

In this representation the transpose is a Clifford operation: e1, e2, e3 are symmetric and e4 is
skew, so Mᵀ = M† (reversion followed by e4 → −e4). Hence the Frobenius product is the positive-definite
Clifford inner product ⟨A, B⟩ = ⟨A† B⟩₀ = tr(Aᵀ B)/4 = Σ_b a_b b_b over blade coefficients.
"""

from __future__ import annotations

from itertools import combinations

import chex
import jax
import jax.numpy as jnp
import numpy as np

from spiraljax.ops.constants import PHI

GRACE_SCALES = (1.0, PHI**-1, PHI**-2, PHI**-3, PHI**-1)  # grades 0..4

_sx = np.array([[0.0, 1.0], [1.0, 0.0]])
_sz = np.array([[1.0, 0.0], [0.0, -1.0]])
_ep = np.array([[0.0, 1.0], [-1.0, 0.0]])
_I2 = np.eye(2)
GENERATORS = np.stack([np.kron(_sx, _I2), np.kron(_sz, _I2), np.kron(_ep, _ep), np.kron(_ep, _sx)])


def _blades() -> tuple[np.ndarray, np.ndarray]:
    mats, grades = [], []
    for g in range(5):
        for subset in combinations(range(4), g):
            m = np.eye(4)
            for i in subset:
                m = m @ GENERATORS[i]
            mats.append(m)
            grades.append(g)
    return np.stack(mats), np.array(grades)


BLADES_NP, GRADES_NP = _blades()
BLADES = jnp.asarray(BLADES_NP, jnp.float32)  # [16, 4, 4]
GRADES = jnp.asarray(GRADES_NP)  # [16]


def coefficients(m: jax.Array) -> jax.Array:
    """Blade coefficients c_b = tr(bᵀ M)/4.

    Args:
      m: ``[..., 4, 4]`` multivectors.

    Returns:
      ``[..., 16]`` in blade order (grades 0..4).
    """
    chex.assert_shape(m, (..., 4, 4))
    return jnp.einsum("kij,...ij->...k", BLADES, m) / 4.0


def from_coefficients(c: jax.Array) -> jax.Array:
    """``M = Σ_b c_b e_b`` (inverse of :func:`coefficients`).

    Args:
      c: ``[..., 16]`` blade coefficients.

    Returns:
      ``[..., 4, 4]``.
    """
    chex.assert_axis_dimension(c, -1, 16)
    return jnp.einsum("...k,kij->...ij", c, BLADES)


def reverse(m: jax.Array) -> jax.Array:
    """Reverse M†: grade g picks up the sign (−1)^{g(g−1)/2}.

    Args:
      m: ``[..., 4, 4]`` multivectors.

    Returns:
      ``[..., 4, 4]``.
    """
    sign = jnp.asarray([(-1.0) ** (g * (g - 1) // 2) for g in GRADES_NP], jnp.float32)
    return from_coefficients(coefficients(m) * sign)


def inverse(m: jax.Array) -> jax.Array:
    """M⁻¹ (matrix inverse: the representation is faithful).

    Args:
      m: ``[..., 4, 4]`` multivectors.

    Returns:
      ``[..., 4, 4]``.
    """
    chex.assert_shape(m, (..., 4, 4))
    return jnp.linalg.inv(m)


def grace(m: jax.Array, scales=GRACE_SCALES) -> jax.Array:
    """Grace operator: scale grade g by [1, φ⁻¹, φ⁻², φ⁻³, φ⁻¹][g].

    Args:
      m: ``[..., 4, 4]`` multivectors.
      scales: one factor per grade 0..4.

    Returns:
      ``[..., 4, 4]``.
    """
    return from_coefficients(coefficients(m) * jnp.asarray(scales, jnp.float32)[GRADES])


def inner(a: jax.Array, b: jax.Array) -> jax.Array:
    """⟨A† B⟩₀ = tr(Aᵀ B)/4 (the scalar part of A†B) over the last two axes, broadcasting the rest.

    Args:
      a: ``[..., 4, 4]``.
      b: ``[..., 4, 4]`` (leading axes broadcast with ``a``'s).

    Returns:
      ``[...]``.
    """
    chex.assert_shape([a, b], (..., 4, 4))
    return jnp.sum(a * b, axis=(-1, -2)) / 4.0


def position_cosines(emb: jax.Array, queries: jax.Array, stored: jax.Array) -> jax.Array:
    """``[Q, S, n]``: cos of the angle between the position-i multivectors of every query and stored
    context, ⟨E(q_i)† E(s_i)⟩₀ / (|E(q_i)| |E(s_i)|) — one ``[Q, 16] @ [16, S]`` matmul per position.

    Unlike the ordered product (for orthogonal embeddings ⟨A X B, A Y B⟩ = ⟨X, Y⟩, so products that share
    all but one token are no closer than unrelated ones), position-wise angles grow with every shared token.

    Args:
      emb: ``[V, 4, 4]`` orthogonal token embeddings (:func:`token_embeddings`).
      queries: ``[Q, n]`` token ids.
      stored: ``[S, n]`` token ids.

    Returns:
      ``[Q, S, n]`` cosines.
    """
    chex.assert_rank([queries, stored], 2)
    chex.assert_shape(emb, (None, 4, 4))
    chex.assert_axis_dimension(stored, 1, queries.shape[1])
    q = emb[queries].reshape(*queries.shape, 16)
    s = emb[stored].reshape(*stored.shape, 16)
    # embeddings are orthogonal, so |E|²_F = tr(EᵀE) = 4 and the cosine is the Frobenius product / 4
    return jnp.stack([q[:, i] @ s[:, i].T for i in range(queries.shape[-1])], axis=-1) / 4.0


def token_embeddings(vocab: int, seed: int = 0) -> jax.Array:
    """Fixed, seeded orthogonal matrices (QR of a Gaussian, sign-fixed so ``diag R > 0``; condition
    number 1, so contexts stay invertible).

    Args:
      vocab: V.
      seed: PRNG seed.

    Returns:
      ``[V, 4, 4]`` float32.
    """
    a = jax.random.normal(jax.random.key(seed), (vocab, 4, 4))
    q, r = jnp.linalg.qr(a)
    return q * jnp.sign(jnp.diagonal(r, axis1=-2, axis2=-1))[..., None, :]


def context_product(emb: jax.Array, tokens: jax.Array) -> jax.Array:
    """Ordered product ``E(t_1) E(t_2) … E(t_n)`` (order matters).

    Args:
      emb: ``[V, 4, 4]`` token embeddings.
      tokens: ``[..., n]`` token ids, n ≥ 1.

    Returns:
      ``[..., 4, 4]``.
    """
    chex.assert_shape(emb, (None, 4, 4))
    mats = emb[tokens]
    out = mats[..., 0, :, :]
    for i in range(1, tokens.shape[-1]):
        out = out @ mats[..., i, :, :]
    return out
