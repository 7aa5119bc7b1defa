"""Optimizer: AdamW (decay on matrices only) + warmup/cosine + global-norm clipping (+ frozen params)."""
from __future__ import annotations

import jax
import optax

from spiraljax.config import TrainConfig


def lr_schedule(cfg: TrainConfig) -> optax.Schedule:
    """Linear warmup to ``lr`` over ``warmup_steps``, then cosine decay to ``lr * min_lr_ratio``."""
    warmup = min(cfg.warmup_steps, max(cfg.steps - 1, 0))
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0, peak_value=cfg.lr, warmup_steps=warmup,
        decay_steps=max(cfg.steps, warmup + 1), end_value=cfg.lr * cfg.min_lr_ratio)


def path_str(path) -> str:
    return "/".join(str(getattr(k, "key", getattr(k, "name", k))) for k in path)


def decay_mask(params):
    """Weight decay on matrices (ndim ≥ 2) only; never on biases, norms or scalars."""
    return jax.tree.map(lambda p: p.ndim >= 2, params)


def trainable_labels(params, trainable: str):
    """'train' or 'freeze' per leaf: ``trainable='lora'`` trains only paths containing 'lora'."""
    if trainable == "all":
        return jax.tree.map(lambda _: "train", params)
    return jax.tree_util.tree_map_with_path(
        lambda path, _: "train" if trainable in path_str(path) else "freeze", params)


def make_optimizer(cfg: TrainConfig, params=None) -> optax.GradientTransformation:
    tx = optax.chain(
        optax.clip_by_global_norm(cfg.clip_norm),
        optax.adamw(lr_schedule(cfg), b1=cfg.b1, b2=cfg.b2, weight_decay=cfg.weight_decay, mask=decay_mask),
    )
    if cfg.trainable != "all":
        tx = optax.multi_transform({"train": tx, "freeze": optax.set_to_zero()},
                                   lambda p: trainable_labels(p, cfg.trainable))
    return tx
