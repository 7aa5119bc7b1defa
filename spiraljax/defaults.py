"""The embedded default experiment run by a bare ``python train.py``."""
from __future__ import annotations

# Until the Spiralformer family lands this is the tiny dense baseline on byte-level TinyShakespeare.
DEFAULT_EXPERIMENT: dict = {
    "name": "transformer_tiny",
    "model": {"family": "transformer", "vocab_size": 256, "seq_len": 128, "d_model": 128, "n_layers": 4,
              "n_heads": 4},
    "data": {"source": "text", "path": "data/tinyshakespeare.txt", "tokenizer": "byte"},
    "train": {"steps": 600, "batch_size": 32, "lr": 3e-3, "warmup_steps": 50, "eval_every": 200},
    "checkpoint": {"every": 200},
}
