#!/usr/bin/env python
"""spiraljax vs PyTorch, side by side: full train steps timed interleaved (one side's step, the other's,
…) so machine noise hits both sides alike.

  pip install -e '.[bench]'              # torch is a benchmark-only extra
  python benchmarks/peer.py              # spiraljax vs the torch ports of benchmarks/torch_reference.py
  python benchmarks/peer.py --agiformer-src ../shared/peers/agiformer --nanogpt-src ../shared/peers/nanogpt \\
      --spiralformer-src ../shared/peers/spiralformer      # + rows against the original programs
  python benchmarks/peer.py --only nanoGPT --repeats 30 --json

Three kinds of row:

* **port** rows: spiraljax against ``benchmarks/torch_reference.py`` (the same architecture written in
  torch from the math, parameter counts asserted equal);
* **original** rows (each needs its ``--*-src`` folder; without it the rows are skipped, one line
  says so): spiraljax against the original program's own model class, loss, optimizer and clipping
  as its training script sets them (``benchmarks/originals.py``): the Hebbian LM against AGIFORMER
  at the 2-core shape (d 256, 4 layers) and at AGIFORMER's training shape (d 512, 6 layers), the
  dense baseline against nanoGPT's ``model.py`` at about equal parameters, the Spiralformer femto
  against ``MycelialSpiralformer`` (batch 16 and 1);
* the **port check**: the dense torch port in nanoGPT's configuration (GELU MLP 4d, no smeared keys,
  learned absolute positions) against nanoGPT's ``model.py``, same optimizer and step — a reference
  port must be at least as fast as the original it stands for (ratio ≥ 1); a second row keeps the
  port's RoPE (work nanoGPT does not do: its cost).

torch runs on ``--threads`` intra-op threads (default 2); JAX uses what XLA uses. ratio = peer ms /
ours ms: > 1 means the "ours" side (spiraljax, or the port in the port check) is faster. Both
parameter counts are printed. Rows whose step takes seconds use ``--slow-repeats``.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
MISSING_TORCH = "benchmarks/peer.py needs PyTorch (benchmark-only extra): pip install -e '.[bench]'"

Step = Callable[[], object]


@dataclass(frozen=True)
class Workload:
    """One row: ``build(args) -> (ours_step, ours_params, peer_step, peer_params)``."""

    name: str
    ours: str
    peer: str
    build: Callable
    needs: str | None = None  # "agiformer" | "nanogpt" | "spiralformer": the --*-src folder the row needs
    slow: bool = False  # seconds per step: timed with --slow-repeats


def require_torch() -> None:
    """Exit with a one-line message when torch is not importable (``SPIRALJAX_BENCH_NO_TORCH=1`` simulates it)."""
    if os.environ.get("SPIRALJAX_BENCH_NO_TORCH") == "1" or importlib.util.find_spec("torch") is None:
        sys.exit(MISSING_TORCH)


def silence_ids():
    try:
        from spiraljax.glyph_table import SILENCE_IDS
    except ImportError:
        from spiraljax.data.glyphs import SILENCE_IDS
    return SILENCE_IDS


# --------------------------------------------------------------------------- the two sides
def data_batch(cfg_path: str, overrides: list[str]) -> dict:
    """The first training batch of a config (numpy arrays)."""
    from spiraljax import config
    from spiraljax.data.base import build_dataset

    return build_dataset(config.load(str(ROOT / cfg_path), overrides)).train_batch(0)


def jax_side(cfg_path: str, overrides: list[str]):
    """(step, n_params, batch, cfg): spiraljax's jitted train step as the training loop runs it."""
    import jax

    from spiraljax import config
    from spiraljax.train.setup import setup

    cfg = config.load(str(ROOT / cfg_path), overrides)
    s = setup(cfg, mesh=False)
    batch = s.batch(0)
    state = s.init_state(seed=0)
    step = s.jit_step()  # as the training loop runs it
    holder = {"state": state}

    def jax_step():
        holder["state"], out = step(holder["state"], batch)
        return jax.block_until_ready(out["loss"])

    n_params = sum(int(x.size) for x in jax.tree.leaves(state["params"]))
    return jax_step, n_params, batch, cfg


def torch_batch(batch) -> dict:
    """The spiraljax batch as torch tensors (token ids as int64)."""
    import numpy as np
    import torch

    out = {k: torch.from_numpy(np.asarray(v)) for k, v in batch.items()}
    out["inputs"], out["targets"] = out["inputs"].long(), out["targets"].long()
    return out


def port_pair(cfg_path: str, overrides: list[str]):
    """spiraljax vs its torch port (benchmarks/torch_reference.py), parameter counts asserted equal."""

    def build(args):
        import torch
        from torch_reference import build_reference, make_torch_step, param_count

        jax_step, n_jax, batch, cfg = jax_side(cfg_path, overrides)
        torch.manual_seed(0)
        ref = build_reference(cfg.model, silence_ids())
        n_torch = param_count(ref)
        assert n_torch == n_jax, f"{cfg_path}: torch reference has {n_torch} parameters, spiraljax {n_jax}"
        tb = torch_batch(batch)
        step = make_torch_step(ref, cfg.train)
        return jax_step, n_jax, lambda: step(tb)["loss"].item(), n_torch

    return build


# AGIFORMER's settings that are not shape: dropout 0.1, AdamW lr 3e-4 / wd 0.01, clip 0.5 (both sides)
HEBBIAN_AS_AGIFORMER = [
    "train.batch_size=4",
    "model.seq_len=1024",
    "model.patch=4",
    "model.window=128",
    "model.head_hidden=256",
    "model.reasoning_steps=3",
    "model.memory_chunk=64",
    "model.dropout=0.1",
    "train.lr=3e-4",
    "train.weight_decay=0.01",
    "train.clip_norm=0.5",
]


def agiformer_pair(d_model: int, n_layers: int, n_heads: int):
    """Hebbian LM vs AGIFORMER at one shape (batch 4 × 1024 bytes, window 128 patches, patch 4)."""

    def build(args):
        import originals

        sets = [
            *HEBBIAN_AS_AGIFORMER,
            f"model.d_model={d_model}",
            f"model.n_layers={n_layers}",
            f"model.n_heads={n_heads}",
        ]
        jax_step, n_jax, batch, cfg = jax_side("configs/hebbian_shakespeare.yaml", sets)
        tb = torch_batch(batch)
        step, n_peer = originals.agiformer_step(
            args.agiformer_src,
            tb["inputs"],
            tb["targets"],
            d_model=d_model,
            n_layers=n_layers,
            n_heads=n_heads,
            window=cfg.model.window,
            patch=cfg.model.patch,
            dropout=cfg.model.dropout,
        )
        return jax_step, n_jax, step, n_peer

    return build


NANOGPT_SHAPE = dict(vocab_size=256, block_size=128, n_layer=4, n_head=4, n_embd=128, dropout=0.0, bias=False)


def nanogpt_pair(args):
    """The dense baseline (transformer_tiny, b32 × T128) vs nanoGPT's model.py at about equal parameters."""
    import originals

    jax_step, n_jax, batch, _ = jax_side("configs/transformer_tiny.yaml", ["train.batch_size=32"])
    tb = torch_batch(batch)
    step, n_peer = originals.nanogpt_step(args.nanogpt_src, tb["inputs"], tb["targets"], **NANOGPT_SHAPE)
    return jax_step, n_jax, step, n_peer


def port_check_pair(rope: bool = False):
    """torch_reference.DenseLM in nanoGPT's configuration (GELU MLP 4d, no smeared keys, learned absolute
    positions; ``rope``: RoPE instead, the port's own) vs nanoGPT's model.py: same batch, optimizer, step."""

    def build(args):
        import torch
        import torch.nn.functional as F
        from torch_reference import DenseLM

        import originals

        tb = torch_batch(data_batch("configs/transformer_tiny.yaml", ["train.batch_size=32"]))
        s = NANOGPT_SHAPE
        torch.manual_seed(0)
        port = DenseLM(
            s["vocab_size"],
            s["n_embd"],
            s["n_layer"],
            s["n_head"],
            mlp_ratio=4.0,
            mlp_kind="gelu_exact",
            tie_embeddings=True,
            smear_keys=False,
            learned_positions=0 if rope else s["block_size"],
        )

        def port_loss(x, y):
            logits, _ = port(x)
            return F.cross_entropy(logits.reshape(-1, logits.size(-1)), y.reshape(-1))

        port_step = originals.nanogpt_train_step(
            port, port_loss, originals.decay_adamw(port), tb["inputs"], tb["targets"]
        )
        nano_step, n_nano = originals.nanogpt_step(args.nanogpt_src, tb["inputs"], tb["targets"], **s)
        return port_step, originals.count_params(port), nano_step, n_nano

    return build


def spiralformer_pair(batch_size: int):
    """Spiralformer femto vs the original MycelialSpiralformer (femto_mycelial_cpu), same batch."""

    def build(args):
        import originals

        jax_step, n_jax, batch, _ = jax_side("configs/spiralformer_femto.yaml", [f"train.batch_size={batch_size}"])
        tb = torch_batch(batch)
        step, n_peer = originals.spiralformer_step(args.spiralformer_src, tb["inputs"], tb["targets"], tb["conditions"])
        return jax_step, n_jax, step, n_peer

    return build


def matmul_pair(b: int, m: int, k: int, n: int):
    """A plain float32 ``[b, m, k] @ [b, k, n]`` (b 1: one 2-D product), jitted XLA vs ``torch.matmul``: the
    matrix-product rate each framework's CPU backend (XLA's own kernels vs torch's oneDNN/MKL) gets at one of
    the dense step's shapes, without any model around it. Parameter columns hold 0."""

    def build(args):
        import jax
        import numpy as np
        import torch

        rng = np.random.default_rng(0)
        shape_x, shape_w = ((m, k), (k, n)) if b == 1 else ((b, m, k), (b, k, n))
        x, w = (rng.standard_normal(s_).astype(np.float32) for s_ in (shape_x, shape_w))
        f = jax.jit(lambda x, w: x @ w)
        xj, wj = jax.device_put(x), jax.device_put(w)
        xt, wt = torch.from_numpy(x), torch.from_numpy(w)
        return (lambda: jax.block_until_ready(f(xj, wj))), 0, (lambda: torch.matmul(xt, wt)), 0

    return build


FEMTO = "configs/spiralformer_femto.yaml"
# Spiralformer's model.spiral.impl is "auto": spiraljax runs what spiraljax.ops.impl picks (dense-masked at
# T 32 on the CPU), the torch port the original's sparse algorithm; "both dense" runs dense-masked on both.
WORKLOADS = [
    Workload(
        "dense baseline b32 T128",
        "spiraljax",
        "torch port",
        port_pair("configs/transformer_tiny.yaml", ["train.batch_size=32"]),
    ),
    Workload("Spiralformer femto b16 T32", "spiraljax", "torch port", port_pair(FEMTO, ["train.batch_size=16"])),
    Workload(
        "Spiralformer femto b16 T32, both dense",
        "spiraljax",
        "torch port",
        port_pair(FEMTO, ["train.batch_size=16", "model.spiral.impl=dense"]),
    ),
    Workload("Spiralformer femto b1 T32", "spiraljax", "torch port", port_pair(FEMTO, ["train.batch_size=1"])),
    Workload(
        "Hebbian LM vs AGIFORMER d256 L4 H4 b4x1024",
        "spiraljax",
        "AGIFORMER",
        agiformer_pair(256, 4, 4),
        needs="agiformer",
        slow=True,
    ),
    Workload(
        "Hebbian LM vs AGIFORMER d512 L6 H8 b4x1024 (its training shape)",
        "spiraljax",
        "AGIFORMER",
        agiformer_pair(512, 6, 8),
        needs="agiformer",
        slow=True,
    ),
    Workload("dense baseline vs nanoGPT d128 L4 b32 T128", "spiraljax", "nanoGPT", nanogpt_pair, needs="nanogpt"),
    Workload(
        "Spiralformer femto b16 vs original", "spiraljax", "Mycelial", spiralformer_pair(16), needs="spiralformer"
    ),
    Workload("Spiralformer femto b1 vs original", "spiraljax", "Mycelial", spiralformer_pair(1), needs="spiralformer"),
    Workload(
        "port check: torch DenseLM (nanoGPT config) vs nanoGPT",
        "torch port",
        "nanoGPT",
        port_check_pair(),
        needs="nanogpt",
    ),
    # the matrix-product rate of each side at the dense step's shapes (2·b·m·k·n FLOPs per call)
    Workload("matmul [4096,128]x[128,512] (MLP up at 4d, 0.54 GFLOP)", "XLA", "torch", matmul_pair(1, 4096, 128, 512)),
    Workload("matmul [4096,128]x[128,384] (qkv, 0.40 GFLOP)", "XLA", "torch", matmul_pair(1, 4096, 128, 384)),
    Workload(
        "matmul [128: 128,32]x[32,128] (attention scores, 0.13 GFLOP)", "XLA", "torch", matmul_pair(128, 128, 32, 128)
    ),
    Workload(
        "port check, RoPE instead of learned positions",
        "torch port",
        "nanoGPT",
        port_check_pair(rope=True),
        needs="nanogpt",
    ),
]


# --------------------------------------------------------------------------- timing
def interleaved(a, b, repeats: int, warmup: int) -> tuple[list[float], list[float]]:
    """Seconds per call of ``a`` and ``b``, alternating a, b, a, b, … after ``warmup`` calls of each."""
    for _ in range(warmup):
        a()
        b()
    ta, tb = [], []
    for i in range(repeats):
        for fn, out in ((a, ta), (b, tb)) if i % 2 == 0 else ((b, tb), (a, ta)):
            t0 = time.perf_counter()
            fn()
            out.append(time.perf_counter() - t0)
    return ta, tb


def selected(workloads: list[Workload], only: list[str] | None, args) -> tuple[list[Workload], list[str]]:
    """(rows to run, one line per source folder that was not given and the rows that need it)."""
    rows = [w for w in workloads if not only or any(s in w.name for s in only)]
    skipped = {}
    for w in rows:
        if w.needs and not getattr(args, f"{w.needs}_src"):
            skipped.setdefault(w.needs, []).append(w.name)
    lines = [f"skipped (no --{need}-src PATH): {'; '.join(names)}" for need, names in skipped.items()]
    return [w for w in rows if not (w.needs and w.needs in skipped)], lines


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=15, help="timed steps per side (≥ 10 recommended)")
    p.add_argument("--slow-repeats", type=int, default=5, help="timed steps per side of the AGIFORMER rows")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps per side (compile, allocator)")
    p.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    p.add_argument("--only", nargs="*", default=None, help="workload names (substring match)")
    for name in ("agiformer", "spiralformer", "nanogpt"):
        p.add_argument(
            f"--{name}-src",
            metavar="PATH",
            help=f"folder of the original {name} sources (e.g. ../shared/peers/{name}); rows against it need it",
        )
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    require_torch()
    sys.path.insert(0, str(HERE))
    from common import emit

    from spiraljax.errors import UserError

    import torch

    torch.set_num_threads(args.threads)
    todo, skipped = selected(WORKLOADS, args.only, args)
    for line in skipped:
        print(line, file=sys.stderr)
    import originals

    try:  # a wrong folder stops the run before anything is built
        for need in dict.fromkeys(w.needs for w in todo if w.needs):
            originals.check_src(need, getattr(args, f"{need}_src"))
    except UserError as e:
        sys.exit(f"benchmarks/peer.py: {e}")
    rows = []
    for w in todo:
        try:
            ours, n_ours, peer, n_peer = w.build(args)
        except UserError as e:
            sys.exit(f"benchmarks/peer.py: {e}")
        repeats = args.slow_repeats if w.slow else args.repeats
        t_ours, t_peer = interleaved(ours, peer, repeats, min(args.warmup, 2) if w.slow else args.warmup)
        mo, mp = statistics.median(t_ours) * 1e3, statistics.median(t_peer) * 1e3
        rows.append(
            {
                "workload": w.name,
                "ours": w.ours,
                "ours_params": n_ours,
                "peer": w.peer,
                "peer_params": n_peer,
                "peer_ms": mp,
                "ours_ms": mo,
                "ratio": mp / mo,
                "repeats": repeats,
                "load_avg_1m": os.getloadavg()[0],
            }
        )
        print(f"  {w.name}: {w.peer} {mp:.1f} ms / {w.ours} {mo:.1f} ms = {mp / mo:.2f}", file=sys.stderr, flush=True)
    if not rows:
        return
    emit(
        rows,
        args.json,
        ["workload", "ours", "ours_params", "peer", "peer_params", "peer_ms", "ours_ms", "ratio", "load_avg_1m"],
        f"train step, side by side (torch {args.threads} threads, medians, interleaved; "
        f"ratio = peer ms / ours ms, > 1: ours faster)",
    )


if __name__ == "__main__":
    main()
