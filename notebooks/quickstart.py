# %% [markdown]
# # spiraljax quickstart
# Build a model from a config, train it for a few steps, reload the run, evaluate and sample.
# Runs as a plain script (`python notebooks/quickstart.py`) or cell by cell in Jupyter/VS Code.

# %%
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent) if "__file__" in globals() else "..")

import jax
import jax.numpy as jnp

import spiraljax
from spiraljax.data.base import build_dataset
from spiraljax.eval.generation import sample_text
from spiraljax.eval.lm import evaluate_lm
from spiraljax.train.loop import train

# %% A config with overrides, a model, one forward pass
cfg = spiraljax.config.load(spiraljax.config.PROJECT_ROOT / "configs" / "transformer_tiny.yaml",
                            overrides=["model.d_model=64", "model.n_layers=2", "train.steps=40",
                                       "train.eval_every=20", "train.progress=false", "eval.sample_tokens=60"])
model = spiraljax.models.build(cfg.model)
tokens = jnp.zeros((2, cfg.model.seq_len), jnp.int32)
variables = model.init(jax.random.key(0), tokens)
logits, aux = model.apply(variables, tokens)
print("logits", logits.shape, "params", sum(x.size for x in jax.tree.leaves(variables)))

# %% Train in a temporary run directory, then load it back like a saved experiment
run_dir = Path(tempfile.mkdtemp()) / "quickstart"
result = train(cfg, run_dir)
cfg, variables = spiraljax.load_run(run_dir, checkpoint="best")

# %% Validation metrics and a sample
dataset = build_dataset(cfg)
print(evaluate_lm(model, variables["params"], dataset))
print(sample_text(model, variables, dataset, cfg, jax.random.key(1)))
