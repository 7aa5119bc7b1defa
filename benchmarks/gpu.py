#!/usr/bin/env python
"""One prepared GPU run (issue #26 §4), a few minutes on one H100/H200; ``--quick`` runs tiny sizes on any
backend (the test suite runs it on the CPU).

  bash benchmarks/gpu.sh                 # on the lent machine (checks the packages, writes $OUT/gpu.json)
  python benchmarks/gpu.py --quick       # the same code at toy sizes, any device

Prints three tables:

1. **MFU** of the dense baseline and of the Hebbian LM train steps at a chip-filling size (bfloat16):
   achieved FLOP/s (``cost_analysis()``, or the dot count of ``benchmarks/flops.py`` where larger) over
   (a) the chip's nominal dense bf16 peak (:data:`PEAK_BF16`, by device kind) and (b) a plain XLA
   matmul measured in the same loop (8192³ bf16, and the step's own dominant dot shape).
2. **Spiral vs dense attention**, fwd+bwd of one layer at T = 8k … 64k (B 1, H 8, D 64, bf16):
   spiral sparse (``spiraljax.ops.spiral``, O(T log T)), spiraljax's dense causal attention (O(T²)
   scores in memory: "OOM" where it does not fit) and ``jax.nn.dot_product_attention(is_causal=True)``
   (XLA's / cuDNN's fused kernel where the platform has one).
3. **Chunked fast weights vs the scan**, fwd+bwd (``spiraljax.ops.hebbian.fast_weights``), per T.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from functools import partial
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

import flops  # noqa: E402
from common import emit  # noqa: E402

# nominal dense (no sparsity) bf16 tensor-core peaks, FLOP/s, by a substring of jax's device_kind
PEAK_BF16 = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L4": 121e12}

# (name, config, overrides): chip-filling on an 80 GB H100 in bfloat16; --quick: toy sizes
FULL = {
    "mfu": [
        (
            "dense baseline d1024 L12 b32x1024",
            "configs/transformer_tiny.yaml",
            [
                "model.d_model=1024",
                "model.n_layers=12",
                "model.n_heads=16",
                "model.seq_len=1024",
                "train.batch_size=32",
                "model.dtype=bfloat16",
            ],
        ),
        (
            "Hebbian LM d1024 L8 b16x4096",
            "configs/hebbian_shakespeare.yaml",
            [
                "model.d_model=1024",
                "model.n_layers=8",
                "model.n_heads=8",
                "model.seq_len=4096",
                "train.batch_size=16",
                "model.window=128",
                "model.head_hidden=512",
                "model.memory_chunk=64",
                "model.dtype=bfloat16",
            ],
        ),
    ],
    "attention_T": [8192, 16384, 32768, 65536],
    "fast_weights_T": [4096, 16384],  # the scan's backward keeps one [B, H, D, D+1] state per step
    "fast_weights_shape": (8, 8, 64),  # B, H, D
    "big": flops.DotShape(1, 8192, 8192, 8192),
    "repeats": 10,
}
QUICK = {
    "mfu": [
        (
            "dense baseline (quick)",
            "configs/transformer_tiny.yaml",
            [
                "model.d_model=32",
                "model.n_layers=1",
                "model.n_heads=2",
                "model.seq_len=32",
                "train.batch_size=2",
                "model.dtype=bfloat16",
            ],
        ),
        ("Hebbian LM (quick)", "configs/hebbian_tiny.yaml", ["model.dtype=bfloat16"]),
    ],
    "attention_T": [64, 128],
    "fast_weights_T": [64],
    "fast_weights_shape": (1, 2, 8),
    "big": flops.DotShape(1, 64, 64, 64),
    "repeats": 2,
}


def peak_bf16(kind: str) -> float | None:
    return next((v for k, v in PEAK_BF16.items() if k in kind), None)


def time_call(fn, repeats: int) -> float:
    """Median seconds of ``fn()`` (blocked on) after one warm-up call (the compile)."""
    (sec,) = flops.interleaved_medians([fn], repeats, warmup=1)
    return sec


def _oom(e: Exception) -> bool:
    text = str(e)
    return "RESOURCE_EXHAUSTED" in text or "Out of memory" in text or "out of memory" in text


def mfu_rows(sizes: dict, kind: str) -> list[dict]:
    from spiraljax import config

    peak = peak_bf16(kind)
    rows = []
    for name, path, sets in sizes["mfu"]:
        cfg = config.load(str(ROOT / path), sets)
        try:
            r = flops.step_row(cfg, sizes["repeats"], big=sizes["big"])
        except Exception as e:
            rows.append({"model": name, "error": "OOM" if _oom(e) else f"{type(e).__name__}: {str(e)[:80]}"})
            continue
        rate = r["GFLOPs"] * 1e9
        rows.append(
            {
                "model": name,
                **r,
                "peak_TFLOPs": peak / 1e12 if peak else None,
                "MFU_peak": rate / peak if peak else None,
                "MFU_big_matmul": r["GFLOPs"] / r["big_matmul_GFLOPs"],
            }
        )
        print(f"  {name}: {r['GFLOPs']:.1f} GFLOP/s", file=sys.stderr, flush=True)
    return rows


def attention_rows(lengths: list[int], repeats: int, heads: int = 8, dim: int = 64) -> list[dict]:
    from spiraljax.ops.attention import causal_attention
    from spiraljax.ops.spiral import spiral_attention

    rows = []
    for t in lengths:
        ks = jax.random.split(jax.random.key(t), 3)
        q, k, v = (jax.random.normal(kk, (1, t, heads, dim), jnp.bfloat16) for kk in ks)
        variants = {
            "spiral_sparse": partial(spiral_attention, impl="sparse"),
            "dense_spiraljax": causal_attention,
            "dense_fused": partial(jax.nn.dot_product_attention, is_causal=True),
        }
        row = {"T": t}
        for name, f in variants.items():
            g = jax.jit(jax.grad(lambda q, k, v, f=f: jnp.sum(f(q, k, v).astype(jnp.float32) ** 2), argnums=(0, 1, 2)))
            try:
                row[f"{name}_ms"] = time_call(lambda g=g: g(q, k, v), repeats) * 1e3
            except Exception as e:
                row[f"{name}_ms"] = "OOM" if _oom(e) else type(e).__name__
        for name in ("dense_spiraljax", "dense_fused"):
            d, s = row[f"{name}_ms"], row["spiral_sparse_ms"]
            row[f"{name}_over_spiral"] = d / s if isinstance(d, float) and isinstance(s, float) else None
        rows.append(row)
        print(f"  attention T {t}: {row}", file=sys.stderr, flush=True)
    return rows


def fast_weight_rows(lengths: list[int], shape: tuple[int, int, int], repeats: int, chunk: int = 64) -> list[dict]:
    from spiraljax.ops.hebbian import fast_weights

    b, h, d = shape
    rows = []
    for t in lengths:
        q, k, v = (jax.random.normal(jax.random.key(i), (b, t, h, d)) * 0.1 for i in range(3))
        g = jnp.log(jnp.full((h,), 0.99))
        row = {"T": t, "B": b, "H": h, "D": d, "chunk": min(chunk, t)}
        for impl in ("scan", "chunked"):
            loss = lambda q, k, v, impl=impl: jnp.sum(fast_weights(q, k, v, g, impl=impl, chunk=chunk)[0] ** 2)  # noqa: E731
            grad = jax.jit(jax.grad(loss, argnums=(0, 1, 2)))
            try:
                row[f"{impl}_ms"] = time_call(lambda grad=grad: grad(q, k, v), repeats) * 1e3
            except Exception as e:
                row[f"{impl}_ms"] = "OOM" if _oom(e) else type(e).__name__
        s, c = row["scan_ms"], row["chunked_ms"]
        row["scan_over_chunked"] = s / c if isinstance(s, float) and isinstance(c, float) else None
        rows.append(row)
        print(f"  fast weights T {t}: {row}", file=sys.stderr, flush=True)
    return rows


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="toy sizes (runs on a CPU in a minute)")
    p.add_argument(
        "--parts", nargs="*", default=["mfu", "attention", "fast_weights"], choices=["mfu", "attention", "fast_weights"]
    )
    p.add_argument("--json-out", help="also write every table to this JSON file")
    args = p.parse_args(argv)
    sizes = QUICK if args.quick else FULL
    dev = jax.devices()[0]
    kind = getattr(dev, "device_kind", dev.platform)
    print(
        f"# gpu.py on {kind} ({dev.platform}, jax {jax.__version__}), {'quick' if args.quick else 'full'} sizes",
        flush=True,
    )
    t0 = time.perf_counter()
    out = {"device": kind, "platform": dev.platform, "jax": jax.__version__, "quick": args.quick}
    if "mfu" in args.parts:
        out["mfu"] = mfu_rows(sizes, kind)
        emit(
            out["mfu"],
            False,
            [
                "model",
                "batch",
                "dtype",
                "ms_per_step",
                "xla_GFLOP",
                "dot_GFLOP",
                "GFLOPs",
                "peak_TFLOPs",
                "MFU_peak",
                "big_matmul_GFLOPs",
                "MFU_big_matmul",
                "dominant_dot",
                "matmul_GFLOPs",
                "x_matmul",
                "error",
            ],
            "train-step MFU (achieved FLOP/s over the nominal bf16 peak and over a measured "
            f"{sizes['big']} bf16 matmul)",
        )
    if "attention" in args.parts:
        out["attention"] = attention_rows(sizes["attention_T"], sizes["repeats"])
        emit(
            out["attention"],
            False,
            [
                "T",
                "spiral_sparse_ms",
                "dense_spiraljax_ms",
                "dense_fused_ms",
                "dense_spiraljax_over_spiral",
                "dense_fused_over_spiral",
            ],
            "attention fwd+bwd, B 1 H 8 D 64 bf16 (ratio > 1: spiral faster)",
        )
    if "fast_weights" in args.parts:
        out["fast_weights"] = fast_weight_rows(sizes["fast_weights_T"], sizes["fast_weights_shape"], sizes["repeats"])
        emit(
            out["fast_weights"],
            False,
            ["T", "B", "H", "D", "chunk", "scan_ms", "chunked_ms", "scan_over_chunked"],
            "fast weights fwd+bwd: scan (reference) vs chunked",
        )
    out["seconds"] = time.perf_counter() - t0
    print(f"# done in {out['seconds']:.0f} s", flush=True)
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(out, indent=2, default=str))


if __name__ == "__main__":
    main()
