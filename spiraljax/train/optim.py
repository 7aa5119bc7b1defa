"""Optimizer: AdamW (decay on matrices only) + warmup/cosine + global-norm clipping (+ frozen params)."""

from __future__ import annotations

import jax
import optax

from spiraljax.config import TrainConfig


def lr_schedule(cfg: TrainConfig) -> optax.Schedule:
    """Linear warmup to ``lr`` over ``warmup_steps``, then cosine decay to ``lr * min_lr_ratio``.

    With W = min(warmup_steps, steps − 1) and E = lr·min_lr_ratio:
    ``lr(s) = lr·s/W`` for s < W, ``E + (lr − E)·½(1 + cos(π·(s − W)/(steps − W)))`` for
    W ≤ s ≤ steps, and E after (W = 0: the peak at step 0).

    Args:
      cfg: ``lr``, ``warmup_steps``, ``steps``, ``min_lr_ratio``.

    Returns:
      An optax schedule: step (int) → learning rate (float32 scalar).
    """
    warmup = min(cfg.warmup_steps, max(cfg.steps - 1, 0))
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0,
        peak_value=cfg.lr,
        warmup_steps=warmup,
        decay_steps=max(cfg.steps, warmup + 1),
        end_value=cfg.lr * cfg.min_lr_ratio,
    )


def path_str(path) -> str:
    """A pytree key path as ``"a/b/c"`` (dict keys, attribute names or indices).

    Args:
      path: key path from ``jax.tree_util.tree_map_with_path``.

    Returns:
      The path joined with "/".
    """
    return jax.tree_util.keystr(path, simple=True, separator="/")


def decay_mask(params):
    """Weight decay on matrices (ndim ≥ 2: kernels and embedding tables) only; never on biases,
    norm scales, per-head vectors or scalars.

    Args:
      params: parameter pytree.

    Returns:
      Same tree of bools, True where the leaf is decayed.
    """
    return jax.tree.map(lambda p: p.ndim >= 2, params)


def trainable_labels(params, trainable: str):
    """'train' or 'freeze' per leaf: ``trainable='lora'`` trains only paths containing 'lora'.

    Args:
      params: parameter pytree.
      trainable: "all", or a substring of the parameter paths to train.

    Returns:
      Same tree of "train" / "freeze" labels.
    """
    if trainable == "all":
        return jax.tree.map(lambda _: "train", params)
    return jax.tree_util.tree_map_with_path(
        lambda path, _: "train" if trainable in path_str(path) else "freeze", params
    )


def make_optimizer(cfg: TrainConfig) -> optax.GradientTransformation:
    """``clip_by_global_norm(clip_norm)`` then AdamW(:func:`lr_schedule`, b1, b2) with decoupled
    weight decay ``p ← p − lr_t·weight_decay·p`` on the :func:`decay_mask` leaves; with
    ``trainable != "all"`` the frozen leaves get zero updates.

    Args:
      cfg: the train section (lr, schedule, betas, weight_decay, clip_norm, trainable).

    Returns:
      An optax ``GradientTransformation``.
    """
    tx = optax.chain(
        optax.clip_by_global_norm(cfg.clip_norm),
        optax.adamw(lr_schedule(cfg), b1=cfg.b1, b2=cfg.b2, weight_decay=cfg.weight_decay, mask=decay_mask),
    )
    if cfg.trainable != "all":
        tx = optax.multi_transform(
            {"train": tx, "freeze": optax.set_to_zero()}, lambda p: trainable_labels(p, cfg.trainable)
        )
    return tx
