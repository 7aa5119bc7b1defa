"""The embedded default experiment run by a bare ``python train.py``.

Spiralformer femto (SPEC §1.12) on freshly generated mycelial glyph data — about 3 minutes on a
2-core CPU. Same content as ``configs/spiralformer_femto.yaml`` with more steps.
"""
from __future__ import annotations

DEFAULT_EXPERIMENT: dict = {
    "name": "spiralformer_femto_default",
    "model": {"family": "spiralformer", "vocab_size": 65, "seq_len": 32, "d_model": 128, "n_heads": 4,
              "n_layers": 4},
    "data": {"source": "mycelial", "num_echoes": 4000, "chaos_mode": True, "seed": 0},
    "train": {"steps": 800, "batch_size": 32, "lr": 2e-3, "warmup_steps": 30, "eval_every": 200, "log_every": 10},
    "eval": {"sample_tokens": 24, "sample_prompt": "…"},
    "checkpoint": {"every": 200},
}
