# ---
# jupyter:
#   jupytext:
#     cell_metadata_filter: title,-all
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
# # spiraljax quickstart
# Build a model from a config, train it for a few steps, reload the run, evaluate and sample.
# Runs as a plain script (`python notebooks/quickstart.py`) or cell by cell in Jupyter/VS Code.

# %%
import tempfile
from pathlib import Path

import jax
import jax.numpy as jnp

import spiraljax
from spiraljax.data.base import build_dataset
from spiraljax.eval.generation import sample_text
from spiraljax.eval.lm import evaluate_lm
from spiraljax.experiment import run

# %% A config with overrides, a model, one forward pass
# A relative config path is looked up in the working directory, then in the project root, and so is the
# corpus (data.path): this runs from notebooks/ (where Jupyter starts) as well as from the project root.
cfg = spiraljax.config.load(
    "configs/transformer_tiny.yaml",
    overrides=[
        "model.d_model=64",
        "model.n_layers=2",
        "train.steps=40",
        "train.eval_every=20",
        "train.progress=false",
        "eval.sample_tokens=60",
    ],
)
model = spiraljax.models.build(cfg.model)
tokens = jnp.zeros((2, cfg.model.seq_len), jnp.int32)
variables = model.init(jax.random.key(0), tokens)
logits, aux = model.apply(variables, tokens)
print("logits", logits.shape, "params", sum(x.size for x in jax.tree.leaves(variables)))

# %% Train in a temporary run directory (what train.py runs), then load it back like a saved experiment
run_dir = Path(tempfile.mkdtemp()) / "quickstart"
result = run(cfg, run_dir)  # RunResult(run_dir, step, interrupted, val, seconds, unit)
cfg, variables = spiraljax.load_run(run_dir, checkpoint="best")

# %% Validation metrics and a sample
dataset = build_dataset(cfg)
print(evaluate_lm(model, variables["params"], dataset))
print(sample_text(model, variables, dataset, cfg, jax.random.key(1)))
