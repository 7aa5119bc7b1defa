#!/usr/bin/env python
"""Fast-weight write rules: recurrent scan (reference) vs chunked form, and the chunked kernels
against the matmul rate of their own shapes.

  python benchmarks/hebbian.py [--rules hebbian shifted delta] [--lengths 1024 4096] [--chunk 32]
                               [--sweep-chunks 16 32 64 128] [--bound-length 4096] [--repeats 3] [--json]

1. **Rules** (per T): forward and forward+backward of ``impl="scan"`` and ``impl="chunked"`` for
   each rule (``ops/hebbian.py``, ``ops/shifted.py``, ``ops/delta.py``; per-head constant decay λ 0.99,
   the model's case), the two timed in alternation, and their ratios.
2. **Bound** (at ``--bound-length``, every chunk size of ``--sweep-chunks``): the chunked kernel's
   forward+backward time beside the time its matrix products would take at the rate a plain XLA
   batched matmul of the same shapes reaches in the same run (``[B·H·n, m, k] @ [B·H·n, k, n]`` for
   each (m, k, n) the kernel uses, n = T/C chunks). The matmul FLOPs are counted by hand from the
   kernels' equations (``cost_analysis`` skips loop bodies); ``bound`` = Σ FLOPs / rate of its shape,
   ``of_bound`` = bound / kernel time (1.0: the kernel runs at the batched-matmul rate of its shapes).
   Everything is interleaved in rounds, so load on a shared machine hits every column alike; the load
   average is printed with the tables.
3. **Forms** (at ``--bound-length``, chunk ``--chunk``): other ways to write the same kernels, each
   checked equal to the op (values and gradients) before it is timed beside it: for the Hebbian rule
   the shipped loop over chunks (``chunked_per_head``: per-chunk products inside the scan), the JAX-
   differentiated ``chunked_general``, every chunk-local product batched over all chunks with only
   the elementwise state recurrence sequential (``batched``), and that with each group of products
   summed into one matmul over a concatenated contraction axis (``concat``: forward 3, backward 5
   matmuls instead of 4 and 8); for the delta rule ``chunked_per_head`` and ``chunked_general``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from typing import Callable

import jax
import jax.numpy as jnp

from common import emit
from spiraljax.ops.delta import delta_rule
from spiraljax.ops.hebbian import _decay_tables, fast_weights
from spiraljax.ops.shifted import shifted_fast_weights

RULES = ("hebbian", "shifted", "delta")


def _phi(x):
    return jax.nn.elu(x) + 1.0


def inputs(rule: str, b: int, t: int, h: int, d: int) -> tuple:
    """The arguments each rule's op is differentiated in (q, k, v[, β])."""
    ks = jax.random.split(jax.random.key(t), 4)
    if rule == "delta":
        unit = lambda x: x / jnp.linalg.norm(x, axis=-1, keepdims=True)  # noqa: E731
        return (
            unit(jax.random.normal(ks[0], (b, t, h, d))),
            unit(jax.random.normal(ks[1], (b, t, h, d))),
            jax.random.normal(ks[2], (b, t, h, d)) * 0.1,
            jax.nn.sigmoid(jax.random.normal(ks[3], (b, t, h))),
        )
    return tuple(jax.random.normal(ks[i], (b, t, h, d)) * 0.1 for i in range(3))


def rule_fn(rule: str, impl: str, chunk: int, heads: int) -> Callable:
    """``f(*inputs) → o`` for one rule and implementation (decay λ = 0.99 per head; shifted: taps (0.3, 1)
    of width 2, feature ELU + 1)."""
    g = jnp.log(jnp.full((heads,), 0.99))
    if rule == "hebbian":
        return lambda q, k, v: fast_weights(q, k, v, g, impl=impl, chunk=chunk)[0]
    if rule == "shifted":
        taps = jnp.tile(jnp.array([[0.3, 1.0]]), (heads, 1))
        return lambda q, k, v: shifted_fast_weights(q, k, v, g, taps, _phi, impl=impl, chunk=chunk)[0]
    return lambda q, k, v, beta: delta_rule(q, k, v, beta, g, impl=impl, chunk=chunk)[0]


def fwd_and_grad(fn: Callable, n_args: int) -> tuple[Callable, Callable]:
    loss = lambda *a: jnp.sum(fn(*a) ** 2)  # noqa: E731
    return jax.jit(fn), jax.jit(jax.grad(loss, argnums=tuple(range(n_args))))


def time_interleaved(fns: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Median seconds per call, each function once per round (after one untimed warm-up call)."""
    for fn in fns.values():
        jax.block_until_ready(fn())
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            jax.block_until_ready(fn())
            times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(ts) for name, ts in times.items()}


# ----------------------------------------------------------------------------- matmul FLOP model
def matmuls(rule: str, c: int, d: int, e: int) -> list[tuple[int, int, int, float]]:
    """(m, k, n, count) of the products per chunk and head of the chunked kernel, forward + backward
    (``[m, k] @ [k, n]``; the per-head variants the model runs: ``chunked_per_head``)."""
    if rule in ("hebbian", "shifted"):  # ops/hebbian.py: 4 forward, 8 backward
        return [
            (c, d, c, 1),
            (c, e, c, 1),  # Q Kᵀ; dO Vᵀ
            (c, c, e, 2),
            (c, c, d, 2),  # A V, Aᵀ dO; dA K, dAᵀ Q
            (c, d, e, 2),
            (c, e, d, 2),  # Q S, K dS; dO Sᵀ, V dSᵀ
            (d, c, e, 2),
        ]  # Kᵀ V, Qᵀ dO
    # ops/delta.py chunked_per_head: forward 7 (+ the inverse), backward 13
    return [
        (c, d, c, 2),  # K Kᵀ (saved for the backward), Q Kᵀ
        (c, c, d + e, 2),  # T [Kb | Vb]; Tᵀ [dW | dU]
        (c, d + e, c, 1),  # dA = −[dKb | dVb] [W | U]ᵀ
        (c, c, c, 2 / 3),  # the block inverse ≈ (2/3)·C³·2 FLOPs
        (c, d, e, 3),
        (d, c, e, 3),  # W S, Q S, Kd dS; Kdᵀ U', Qᵀ dO, Wᵀ dU
        (c, c, e, 2),
        (c, e, c, 1),  # P U', Pᵀ dO; dO U'ᵀ
        (c, c, d, 3),
        (c, e, d, 3),
    ]  # dP K, dPᵀ Q, (X + Xᵀ) K; dO Sᵀ, dU Sᵀ, U' dSᵀ


def bound_rows(args, rules: list[str]) -> list[dict]:
    b, t, h, d = args.batch, args.bound_length, args.heads, args.head_dim
    fns, flop_shapes = {}, {}
    for rule in rules:
        args_ = inputs(rule, b, t, h, d)
        for c in args.sweep_chunks:
            _, grad = fwd_and_grad(rule_fn(rule, "chunked", c, h), len(args_))
            fns[(rule, c)] = lambda grad=grad, a=args_: grad(*a)
            flop_shapes[(rule, c)] = matmuls(rule, c, d, d)
    shapes = {(m, k, n, t // c) for (_, c), ms in flop_shapes.items() for (m, k, n, _) in ms}
    mm = {}
    for m, k, n, chunks in shapes:
        x = jax.random.normal(jax.random.key(1), (b * h * chunks, m, k))
        y = jax.random.normal(jax.random.key(2), (b * h * chunks, k, n))
        f = jax.jit(lambda x, y: x @ y)
        mm[(m, k, n, chunks)] = lambda f=f, x=x, y=y: f(x, y)
    med = time_interleaved(
        {**{("kernel", *key): fn for key, fn in fns.items()}, **{("matmul", *key): fn for key, fn in mm.items()}},
        args.repeats,
    )
    rows = []
    for (rule, c), ms in flop_shapes.items():
        chunks = t // c
        flops = sum(2 * m * k * n * cnt * b * h * chunks for m, k, n, cnt in ms)
        bound = sum(cnt * med[("matmul", m, k, n, chunks)] for m, k, n, cnt in ms)  # Σ FLOPs / rate
        kernel = med[("kernel", rule, c)]
        rows.append(
            {
                "rule": rule,
                "T": t,
                "chunk": c,
                "fwdbwd_ms": kernel * 1e3,
                "matmul_GFLOP": flops / 1e9,
                "GFLOP_per_s": flops / kernel / 1e9,
                "matmul_GFLOP_per_s": flops / bound / 1e9,
                "bound_ms": bound * 1e3,
                "of_bound": bound / kernel,
            }
        )
    return rows


# ----------------------------------------------------------------------------- alternative forms
def _chunks(x, c):
    """[B, T, H, D] → [B, H, n, C, D]."""
    b, t, h, d = x.shape
    return jnp.transpose(x, (0, 2, 1, 3)).reshape(b, h, t // c, c, d)


def _unchunk(x):
    b, h, n, c, d = x.shape
    return jnp.transpose(x.reshape(b, h, n * c, d), (0, 2, 1, 3))


def _tr(x):
    return jnp.swapaxes(x, -1, -2)


def batched_hebbian(concat: bool) -> Callable:
    """The per-head Hebbian kernel (decayed linear attention, constant decay g [H]) with every
    chunk-local product batched over all chunks; only ``S ← λ^C S + R`` (forward) and
    ``dS ← λ^C dS + G`` (backward) run as scans. ``concat``: ``O = [A | Q e^L] [V; S_prev]``,
    ``dQ = [dA | dO e^L] [K; S_prevᵀ]``, ``dK = [dAᵀ | V e^{L_C−L}] [Q; dSᵀ]``,
    ``dV = [Aᵀ | K e^{L_C−L}] [dO; dS]``: one matmul per group."""

    def tables(g, c):
        dm, eq, ek, ea = _decay_tables(g, c)
        return dm[:, None], eq[:, None], ek[:, None], ea

    def states(r, s0, ea, reverse=False):
        def step(s, rm):
            return ea * s + rm, s

        last, before = jax.lax.scan(step, s0, jnp.moveaxis(r, 2, 0), reverse=reverse)
        return last, jnp.moveaxis(before, 0, 2)

    def forward(q, k, v, g, s0, c):
        dm, eq, ek, ea = tables(g, c)
        qc, kc, vc = _chunks(q, c), _chunks(k, c), _chunks(v, c)
        final, prev = states(_tr(kc * ek) @ vc, s0, ea)
        att = (qc @ _tr(kc)) * dm
        if concat:
            out = jnp.concatenate([att, qc * eq], -1) @ jnp.concatenate([vc, prev], -2)
        else:
            out = att @ vc + (qc * eq) @ prev
        return (_unchunk(out), final), (q, k, v, g, final, prev, att)

    def backward(c, res, cts):
        q, k, v, g, final, prev, att = res
        d_out, d_final = cts
        dm, eq, ek, ea = tables(g, c)
        qc, kc, vc, doc = _chunks(q, c), _chunks(k, c), _chunks(v, c), _chunks(d_out, c)
        ds0, after = states(_tr(qc * eq) @ doc, d_final, ea, reverse=True)
        da = (doc @ _tr(vc)) * dm
        if concat:
            dq = jnp.concatenate([da, doc * eq], -1) @ jnp.concatenate([kc, _tr(prev)], -2)
            dk = jnp.concatenate([_tr(da), vc * ek], -1) @ jnp.concatenate([qc, _tr(after)], -2)
            dv = jnp.concatenate([_tr(att), kc * ek], -1) @ jnp.concatenate([doc, after], -2)
        else:
            dq = da @ kc + (doc @ _tr(prev)) * eq
            dk = _tr(da) @ qc + (vc @ _tr(after)) * ek
            dv = _tr(att) @ doc + (kc * ek) @ after
        dq, dk, dv = _unchunk(dq), _unchunk(dk), _unchunk(dv)
        t = q.shape[1]
        pos = jnp.arange(1, t + 1, dtype=jnp.float32)[None, :, None]
        dl = jnp.sum(q * dq, -1) - jnp.sum(k * dk, -1)
        dg = jnp.sum(pos * dl, axis=(0, 1)) + t * jnp.sum(d_final * final, axis=(0, 2, 3))
        return dq, dk, dv, dg, ds0

    kernel = jax.custom_vjp(lambda q, k, v, g, s0, c: forward(q, k, v, g, s0, c)[0], nondiff_argnums=(5,))
    kernel.defvjp(forward, backward)
    return kernel


def form_fns(rule: str, chunk: int, heads: int, d: int) -> dict[str, Callable]:
    g = jnp.log(jnp.full((heads,), 0.99))
    if rule == "delta":
        return {
            impl: (lambda q, k, v, beta, impl=impl: delta_rule(q, k, v, beta, g, impl=impl, chunk=chunk)[0])
            for impl in ("chunked_per_head", "chunked_general")
        }
    forms = {
        impl: (lambda q, k, v, impl=impl: fast_weights(q, k, v, g, impl=impl, chunk=chunk)[0])
        for impl in ("chunked_per_head", "chunked_general")
    }
    for name, concat in (("batched", False), ("concat", True)):
        kernel = batched_hebbian(concat)
        forms[name] = lambda q, k, v, kernel=kernel: kernel(q, k, v, g, jnp.zeros(q.shape[:1] + (heads, d, d)), chunk)[
            0
        ]
    return forms


def form_rows(args, rules: list[str]) -> list[dict]:
    rows = []
    b, t, h, d = args.batch, args.bound_length, args.heads, args.head_dim
    for rule in [r for r in rules if r != "shifted"]:  # shifted runs the Hebbian kernel
        forms = form_fns(rule, args.chunk, h, d)
        small = inputs(rule, b, 4 * args.chunk, h, d)
        ref = fwd_and_grad(rule_fn(rule, "scan", args.chunk, h), len(small))
        want = (ref[0](*small), ref[1](*small))
        fns = {}
        for name, fn in forms.items():
            fwd, grad = fwd_and_grad(fn, len(small))
            for got, exp in zip(jax.tree.leaves((fwd(*small), grad(*small))), jax.tree.leaves(want)):
                err = float(jnp.max(jnp.abs(got - exp)) / (jnp.max(jnp.abs(exp)) + 1e-30))
                if err > 1e-4:
                    raise AssertionError(f"{rule} form {name} differs from the scan: relative error {err:.2e}")
            full = inputs(rule, b, t, h, d)
            fns[name] = lambda grad=grad, full=full: grad(*full)
        med = time_interleaved(fns, args.repeats)
        base = med["chunked_per_head"]
        rows += [
            {"rule": rule, "T": t, "chunk": args.chunk, "form": name, "fwdbwd_ms": sec * 1e3, "vs_shipped": base / sec}
            for name, sec in med.items()
        ]
    return rows


def rule_rows(args, rules: list[str]) -> list[dict]:
    rows = []
    b, h, d = args.batch, args.heads, args.head_dim
    for t in args.lengths:
        for rule in rules:
            args_ = inputs(rule, b, t, h, d)
            fns = {}
            for impl in ("scan", "chunked"):
                fwd, grad = fwd_and_grad(rule_fn(rule, impl, args.chunk, h), len(args_))
                fns[f"{impl}_fwd"] = lambda fwd=fwd: fwd(*args_)
                fns[f"{impl}_fwdbwd"] = lambda grad=grad: grad(*args_)
            med = time_interleaved(fns, args.repeats)
            row = {"rule": rule, "T": t, **{f"{k}_ms": v * 1e3 for k, v in med.items()}}
            row["fwd_speedup"] = med["scan_fwd"] / med["chunked_fwd"]
            row["fwdbwd_speedup"] = med["scan_fwdbwd"] / med["chunked_fwdbwd"]
            rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rules", nargs="*", choices=RULES, default=list(RULES))
    p.add_argument("--lengths", type=int, nargs="*", default=[4096])
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--head-dim", type=int, default=64)
    p.add_argument("--chunk", type=int, default=32, help="chunk size of the rules table")
    p.add_argument(
        "--sweep-chunks",
        type=int,
        nargs="*",
        default=[16, 32, 64, 128],
        help="chunk sizes of the bound table (none: skip it)",
    )
    p.add_argument("--bound-length", type=int, default=4096)
    p.add_argument("--no-forms", action="store_true", help="skip the table of alternative forms")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    shape = f"B={args.batch} H={args.heads} D={args.head_dim}"
    load = lambda: " ".join(f"{x:.1f}" for x in os.getloadavg())  # noqa: E731
    if args.lengths:
        before = load()
        rows = rule_rows(args, args.rules)
        emit(
            rows,
            args.json,
            [
                "rule",
                "T",
                "scan_fwd_ms",
                "chunked_fwd_ms",
                "fwd_speedup",
                "scan_fwdbwd_ms",
                "chunked_fwdbwd_ms",
                "fwdbwd_speedup",
            ],
            f"fast-weight rules, scan vs chunked, {shape} chunk={args.chunk}, load avg {before} → {load()}",
        )
    if args.sweep_chunks:
        before = load()
        rows = bound_rows(args, args.rules)
        emit(
            rows,
            args.json,
            [
                "rule",
                "T",
                "chunk",
                "fwdbwd_ms",
                "matmul_GFLOP",
                "GFLOP_per_s",
                "matmul_GFLOP_per_s",
                "bound_ms",
                "of_bound",
            ],
            f"chunked kernels fwd+bwd vs the batched-matmul rate of their shapes, {shape}, "
            f"load avg {before} → {load()}",
        )
    if not args.no_forms:
        before = load()
        rows = form_rows(args, args.rules)
        emit(
            rows,
            args.json,
            ["rule", "T", "chunk", "form", "fwdbwd_ms", "vs_shipped"],
            f"forms of the chunked kernels, fwd+bwd, {shape}, load avg {before} → {load()}",
        )


if __name__ == "__main__":
    main()
