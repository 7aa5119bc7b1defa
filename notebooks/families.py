# ---
# jupyter:
#   jupytext:
#     cell_metadata_filter: -all
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # spiraljax model families, from a notebook
# The pure ops and the models of each family (Spiralformer, K-SSM, Hebbian, holographic) on tiny shapes.
# Runs as a plain script (`python notebooks/families.py`) or cell by cell in Jupyter/VS Code; no training.

# %%
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import spiraljax
from spiraljax import holographic as H
from spiraljax.data import glyphs
from spiraljax.eval.generation import generate_streaming
from spiraljax.ops import rhythm
from spiraljax.ops.hebbian import fast_weights
from spiraljax.ops.kuramoto import order_parameter
from spiraljax.ops.spiral import spiral_attention, spiral_mask

# The project root of the editable install: configs resolve whatever the working directory is
# (Jupyter starts in notebooks/, `python notebooks/families.py` in the root).
ROOT = Path(spiraljax.__file__).resolve().parent.parent
CONFIGS = ROOT / "configs"
key = jax.random.key(0)


def load(name, *overrides):
    cfg = spiraljax.config.load(CONFIGS / name, overrides=list(overrides))
    return cfg, spiraljax.models.build(cfg.model)


# %% [markdown]
# ## 1. Spiral attention and the breath clock
# Query i sees key j iff i − j ∈ {0, 1, 2, 4, ...}. The sparse (shifted-offset) and dense (masked n×n)
# implementations agree; the breath clock maps a position to inhale/hold/exhale/pause and a weight.

# %%
print("\n".join(" ".join(str(int(x)) for x in row) for row in np.asarray(spiral_mask(8))))
q, k, v = jax.random.normal(key, (3, 2, 16, 2, 8))  # [B, T, H, D] each
diff = jnp.abs(spiral_attention(q, k, v, impl="sparse") - spiral_attention(q, k, v, impl="dense")).max()
print(f"sparse vs dense max |diff| = {float(diff):.2e}")
t = jnp.arange(12)
for i, (p, w) in enumerate(zip(np.asarray(rhythm.phase(t)), np.asarray(rhythm.phase_weight(t)))):
    print(f"t={i:2d} {rhythm.PHASES[p]:7s} weight={w:.2f}")

# %% [markdown]
# ## 2. Spiralformer on glyph ids
# `conditions` is a `[B, 5]` vector of field conditions (Soma); aux carries the breath weight, silence gate,
# field charge and TowerMemory statistics. Glyph symbols round-trip through `glyphs.encode`/`decode`.

# %%
cfg, model = load("spiralformer_femto.yaml", "model.d_model=32", "model.n_heads=2", "model.n_layers=2")
tokens = jax.random.randint(key, (2, 16), 0, cfg.model.vocab_size)
conditions = jax.random.uniform(jax.random.key(1), (2, 5))
variables = model.init(key, tokens, conditions=conditions)
logits, aux = model.apply(variables, tokens, conditions=conditions)
print("logits", logits.shape, "| aux keys", sorted(aux))
print("breath_weight[0]", np.round(np.asarray(aux["breath_weight"][0]), 2))
print(
    "field_charge", np.round(np.asarray(aux["field_charge"]), 3), "| memory_queries", np.asarray(aux["memory_queries"])
)
ids = glyphs.encode(["🌐ping", "💧08", "…", "🌙rest"])
print("glyph ids", ids.tolist(), "->", glyphs.decode(ids), "| silence?", glyphs.is_silence(ids).tolist())

# %% [markdown]
# ## 3. K-SSM: the Kuramoto order parameter R is the only path to the logits
# R = |mean e^{iθ}| is 1 for synchronised phases and ≈0 for uniform ones. Forcing R changes the logits;
# `cut_R=True` is the control that removes it.

# %%
print(
    "R(sync) =",
    float(order_parameter(jnp.full((64,), 0.3))[0]),
    "| R(uniform) =",
    round(float(order_parameter(jnp.linspace(0, 2 * jnp.pi, 64, endpoint=False))[0]), 6),
)
cfg, model = load("kssm_v3_tiny.yaml")
tokens = jax.random.randint(key, (2, 16), 0, cfg.model.vocab_size)
variables = model.init(key, tokens)
logits, aux = model.apply(variables, tokens)
print(
    "aux['R']", aux["R"].shape, "R_layers", aux["R_layers"].shape, "R_mean", round(float(aux["metrics"]["R_mean"]), 3)
)
lo, _ = model.apply(variables, tokens, force_R=0.1)
hi, _ = model.apply(variables, tokens, force_R=0.9)
cut, _ = model.apply(variables, tokens, cut_R=True)
print(
    f"mean |Δlogits| force_R 0.1 vs 0.9 = {float(jnp.abs(hi - lo).mean()):.4f}"
    f" | cut_R vs normal = {float(jnp.abs(cut - logits).mean()):.4f}"
)

# %% [markdown]
# ## 4. Hebbian fast weights and the byte LM
# S_t = e^{g_t} S_{t−1} + k_tᵀ v_t: the recurrent scan and the chunk-parallel form agree. The byte LM is
# sampled by `generate_streaming`, which reads the prompt once and carries the fast-weight state on.

# %%
q, k, v = jax.random.normal(key, (3, 1, 12, 2, 4))
log_decay = -jax.nn.softplus(jax.random.normal(jax.random.key(2), (1, 12, 2)))
o_scan, s_scan = fast_weights(q, k, v, log_decay, impl="scan")
o_chunk, s_chunk = fast_weights(q, k, v, log_decay, impl="chunked", chunk=4)
print(
    f"scan vs chunked: max |Δo| = {float(jnp.abs(o_scan - o_chunk).max()):.2e},"
    f" max |ΔS| = {float(jnp.abs(s_scan - s_chunk).max()):.2e}"
)
cfg, model = load("hebbian_tiny.yaml")
variables = model.init(key, jnp.zeros((1, cfg.model.seq_len), jnp.int32))
prompt = np.frombuffer(b"spiral", np.uint8).astype(np.int32)[None]  # [1, 6]
out = generate_streaming(model, variables, prompt, 10, jax.random.key(3), temperature=1.0)
print("generated (untrained):", repr(bytes(out[0].astype(np.uint8).tolist()).decode("utf-8", errors="replace")))

# %% [markdown]
# ## 5. Holographic Cl(3,1) memory: pure functions over a state dict (no Flax, no gradients)
# `learn` binds context products to target embeddings, `retrieve` unbinds them (a context it does not
# hold is answered by similarity over the registry of stored contexts); `dream` decodes the stored
# answers jointly (non-REM descent + seeded REM kicks) until no answer changes or ⌈φ⁵⌉ = 12 iterations,
# then writes a consolidation layer that retrieval reads.

# %%
cfg = spiraljax.config.load(CONFIGS / "holographic.yaml", overrides=["model.capacity=4096"]).model
contexts = jax.random.randint(key, (50, cfg.context_len), 0, cfg.vocab_size)
targets = jax.random.randint(jax.random.key(4), (50,), 0, cfg.vocab_size)
state = jax.jit(H.learn, static_argnums=3)(H.init(cfg), contexts, targets, cfg.capacity)
tok, conf = H.retrieve(state, contexts, cfg.capacity)
print(
    f"recall accuracy {float(jnp.mean(tok == targets)):.2f}, mean confidence {float(conf.mean()):.3f},"
    f" stability {float(H.stability(state)):.3f}"
)
dreamt, stats = jax.jit(H.dream)(state, jax.random.key(5))
tok, _ = H.retrieve(dreamt, contexts, cfg.capacity)
print(
    f"dream: {int(stats['iterations'])} iterations, stability {float(stats['stability']):.3f},"
    f" recall after {float(jnp.mean(tok == targets)):.2f}"
)
