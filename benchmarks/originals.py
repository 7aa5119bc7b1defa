"""Train steps of the original programs (AGIFORMER, nanoGPT's ``model.py``, the original Spiralformer),
loaded from a folder given on the command line — for ``benchmarks/peer.py`` only.

Nothing of the originals is copied here: each loader puts the folder the user names on ``sys.path``
and imports the original's own model class from there. Each step is the original's full training
step as its training script sets it up (see ``shared/peers/README.md`` of the lead's tree):

* AGIFORMER (``src/models/agiformer.py``): ``AGIFORMER(d_model, n_layers, num_heads, patch_size=4,
  window_size, dropout=0.1)``, ``logits = model(x, target_bytes=y)`` ``[B, N, P, 256]``, cross-entropy
  over the bytes, AdamW(lr 3e-4, weight decay 0.01), ``clip_grad_norm_(…, 0.5)``; plasticity α = 1
  (``set_plasticity`` only scales λ, the work is the same).
* nanoGPT (``model.py``): ``GPT(GPTConfig(block_size, vocab_size, n_layer, n_head, n_embd, dropout,
  bias))``, ``logits, loss = model(x, y)``, ``configure_optimizers(weight_decay 0.1, lr 6e-4,
  betas (0.9, 0.95), "cpu")`` (AdamW, decay on ≥ 2-D tensors), ``clip_grad_norm_(…, 1.0)`` — the
  defaults of its ``train.py`` (float32 on the CPU, so its GradScaler is off).
* Spiralformer (``core/mycelial_model.py``): ``MycelialSpiralformer(vocab_size, d_model, n_heads,
  num_layers, seq_len, condition_dim)`` of the YAML's ``femto_mycelial_cpu`` entry,
  ``RhythmicLossWrapper(CrossEntropyLoss(ignore_index=0), BreathClock(**breath_clock))``, Adam at the
  entry's learning rate, no clipping. Its breath clock reads the wall clock; the step fixes
  ``t = 0.0``, an inhale phase on both of its clocks (every layer attends, loss weight 1).

Each ``*_step`` returns ``(step, n_params)``: ``step()`` runs one full train step on a fixed batch and
returns the loss as a float.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import sys
from pathlib import Path
from typing import Callable

from spiraljax.errors import ConfigError

# what each --*-src folder must hold (relative path), and the module imported from it
LAYOUT = {
    "agiformer": ("src/models/agiformer.py", "src.models.agiformer"),
    "nanogpt": ("model.py", "model"),
    "spiralformer": ("core/mycelial_model.py", "core.mycelial_model"),
}


def count_params(model) -> int:
    """Parameters of a torch module, each tensor once (tied weights, e.g. nanoGPT's wte = lm_head, count once)."""
    return sum(p.numel() for p in model.parameters())


def check_src(name: str, src: str | Path) -> Path:
    """The resolved folder ``src`` if it holds the original ``name``; else :class:`ConfigError` (one line)."""
    rel = LAYOUT[name][0]
    root = Path(src).expanduser().resolve()
    if not (root / rel).is_file():
        raise ConfigError(f"--{name}-src {src}: no {rel} in that folder (expected the original {name} sources)")
    return root


def load(name: str, src: str | Path):
    """Import the original ``name`` (a key of :data:`LAYOUT`) from the folder ``src``.

    Raises :class:`ConfigError` (one line naming the folder) when the folder does not hold it.
    """
    root, module = check_src(name, src), LAYOUT[name][1]
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            return importlib.import_module(module)
    except ImportError as e:
        raise ConfigError(f"--{name}-src {src}: importing {module} failed: {e}") from None


def agiformer_step(
    src,
    inputs,
    targets,
    *,
    d_model: int,
    n_layers: int,
    n_heads: int,
    window: int,
    patch: int = 4,
    dropout: float = 0.1,
    seed: int = 0,
) -> tuple[Callable[[], float], int]:
    """AGIFORMER's train step on ``inputs``/``targets`` (``[B, T]`` int64 torch tensors)."""
    import torch
    import torch.nn.functional as F

    mod = load("agiformer", src)
    torch.manual_seed(seed)
    model = mod.AGIFORMER(
        d_model=d_model, n_layers=n_layers, num_heads=n_heads, patch_size=patch, window_size=window, dropout=dropout
    )
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-4, weight_decay=0.01)

    def step() -> float:
        logits = model(inputs, target_bytes=targets)  # [B, N, P, 256]
        loss = F.cross_entropy(logits.reshape(-1, 256), targets.reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 0.5)
        opt.step()
        return loss.item()

    return step, count_params(model)


def nanogpt_model(
    src,
    *,
    vocab_size: int,
    block_size: int,
    n_layer: int,
    n_head: int,
    n_embd: int,
    dropout: float = 0.0,
    bias: bool = False,
    seed: int = 0,
):
    """nanoGPT's ``GPT`` built from its own ``GPTConfig`` (its prints silenced)."""
    import torch

    mod = load("nanogpt", src)
    torch.manual_seed(seed)
    conf = mod.GPTConfig(
        block_size=block_size,
        vocab_size=vocab_size,
        n_layer=n_layer,
        n_head=n_head,
        n_embd=n_embd,
        dropout=dropout,
        bias=bias,
    )
    with contextlib.redirect_stdout(io.StringIO()):
        return mod.GPT(conf)


def nanogpt_optimizer(model):
    """nanoGPT ``train.py``'s optimizer: ``configure_optimizers(0.1, 6e-4, (0.9, 0.95), "cpu")``."""
    with contextlib.redirect_stdout(io.StringIO()):
        return model.configure_optimizers(0.1, 6e-4, (0.9, 0.95), "cpu")


def decay_adamw(model, lr: float = 6e-4, weight_decay: float = 0.1, betas=(0.9, 0.95)):
    """The optimizer nanoGPT's ``configure_optimizers`` builds on the CPU, for any module: AdamW with weight
    decay on ≥ 2-D tensors only (for the port check, whose model has no such method)."""
    import torch

    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=lr, betas=betas)


def nanogpt_train_step(model, forward, opt, inputs, targets, clip: float = 1.0) -> Callable[[], float]:
    """nanoGPT ``train.py``'s inner step around ``forward(x, y) -> loss``: backward, clip, step, zero_grad."""
    import torch

    model.train()

    def step() -> float:
        loss = forward(inputs, targets)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss.item()

    return step


def nanogpt_step(src, inputs, targets, **shape) -> tuple[Callable[[], float], int]:
    """nanoGPT's train step (``shape``: the keywords of :func:`nanogpt_model`)."""
    model = nanogpt_model(src, **shape)
    step = nanogpt_train_step(model, lambda x, y: model(x, y)[1], nanogpt_optimizer(model), inputs, targets)
    return step, count_params(model)


def spiralformer_femto_entry(src) -> tuple[dict, dict]:
    """(``models.femto_mycelial_cpu``, ``shared.contemplative``) of the original's parameter YAML."""
    import yaml

    path = Path(src).expanduser() / "spiralformer_parameters.yml"
    try:
        doc = yaml.safe_load(path.read_text())
        return doc["models"]["femto_mycelial_cpu"], doc["shared"]["contemplative"]
    except (OSError, KeyError, TypeError, yaml.YAMLError) as e:
        raise ConfigError(f"--spiralformer-src {src}: cannot read femto_mycelial_cpu from {path.name}: {e}") from None


def spiralformer_step(
    src, inputs, targets, conditions, t: float = 0.0, seed: int = 0
) -> tuple[Callable[[], float], int]:
    """The original ``MycelialSpiralformer`` femto train step at breath time ``t`` (0.0: inhale)."""
    import random

    import torch

    mod = load("spiralformer", src)
    from utils.breath_clock import BreathClock  # the original's, importable once its folder is on sys.path
    from utils.rhythmic_loss import RhythmicLossWrapper

    entry, shared = spiralformer_femto_entry(src)
    torch.manual_seed(seed)
    random.seed(seed)
    model = mod.MycelialSpiralformer(
        vocab_size=shared["vocab_size"],
        d_model=entry["d_model"],
        n_heads=entry["n_heads"],
        seq_len=entry["seq_len"],
        num_layers=entry["num_layers"],
        condition_dim=entry["condition_dim"],
    )
    model.train()
    clock = BreathClock(**shared["breath_clock"])
    if model.breath.phase_at(t).name != "inhale" or clock.phase_at(t).name != "inhale":
        raise ConfigError(f"spiralformer original: t={t} is not an inhale phase of its breath clocks")
    criterion = RhythmicLossWrapper(torch.nn.CrossEntropyLoss(ignore_index=0), clock)
    opt = torch.optim.Adam(model.parameters(), lr=entry["training"]["learning_rate"])
    vocab = shared["vocab_size"]

    def step() -> float:
        opt.zero_grad(set_to_none=True)
        logits = model(inputs, conditions, t)
        loss = criterion(logits.reshape(-1, vocab), targets.reshape(-1), t=t)
        loss.backward()
        opt.step()
        return loss.item()

    return step, count_params(model)
