"""Mixed precision (``model.dtype``) and rematerialisation (``model.remat``) of every trainable family.

``model.dtype: bfloat16`` runs the matmuls and the activations between them in bfloat16 (Flax
``dtype=bfloat16``); the parameters are stored, differentiated and updated in float32 (``param_dtype``
stays float32, so the gradients and the AdamW moments are float32 too: the optimizer never sees a
bfloat16 array). ``float32`` (the default) is exactly the computation without this option (tested
bit for bit on fixed-seed runs).

What stays float32 under ``bfloat16``, because rounding there compounds or
decides the answer:

* every family: the parameters, gradients and optimizer state; the token embedding lookup and the
  residual stream between blocks (a block computes in bfloat16 and its output is added to the float32
  stream); LayerNorm statistics (Flax reduces in float32) and the final LayerNorm; the output head,
  the logits and the cross-entropy;
* attention (dense baseline, Spiralformer, the Hebbian LM's sliding window): queries and keys after
  RoPE, hence the scores q·kᵀ/√D and the (masked) softmax; the probabilities are cast to bfloat16
  only for the product with the values;
* Spiralformer: the breath weights and gates, the Soma projection and the TowerMemory (query/key
  projections, its stored state and its read);
* K-SSM: the whole oscillator layer (ω and coupling projections, the bistable core, the phases θ of
  the Kuramoto scan, the multi-scale order parameters Z_n and R, the forced/cut R); only the readout
  MLPs after it run in bfloat16;
* Hebbian LM: the fast-weight memory (φ(q), φ(k), v after their bfloat16 projections, the decay λ,
  the state S and the normaliser), the reasoning loop's residual and the GRU byte head (its
  recurrent state produces the logits);
* holographic: not a Flax model and not trained by ``train.py``; its Cl(3,1) trace and registry are
  float32 always (no ``dtype`` field).

``model.remat: true`` wraps each block / layer in ``nn.remat`` (``jax.checkpoint``): its activations
are recomputed in the backward pass instead of stored, trading about one extra forward pass for
activation memory that no longer grows with the depth. Parameter trees are the same with and without
it (the remat'd modules keep their names), so checkpoints move freely between the two. K-SSM's
``remat_chunk`` is a different, finer axis (checkpoints inside one layer's scan over time) and combines
with ``remat``.
"""

from __future__ import annotations

from typing import Any, Callable

import flax.linen as nn
import jax.numpy as jnp


def compute_dtype(name: str) -> Any:
    """The jnp dtype of a config's ``dtype`` field (``"float32"`` or ``"bfloat16"``)."""
    return jnp.dtype(name)


def maybe_remat(target: Callable | type[nn.Module], enabled: bool, static_argnums: tuple[int, ...] = ()):
    """``nn.remat(target, static_argnums=...)`` if ``enabled``, else ``target`` unchanged.

    ``target`` is a Module class or a function ``fn(module, *args)`` (a Flax lifted function: the
    layers it creates with ``parent=module`` keep their names in ``module``'s parameter tree).
    ``static_argnums`` counts ``self`` / ``module`` as argument 0; Python flags such as ``train`` must
    be passed positionally and be listed there (keyword arguments are traced).
    """
    return nn.remat(target, static_argnums=static_argnums) if enabled else target
