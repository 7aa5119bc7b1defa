"""FLOP accounting of a compiled XLA program and the rate of a plain matmul, for "how near the machine's
limit is this step" (``train_step.py --flops``, ``gpu.py``).

``compiled.cost_analysis()["flops"]`` counts the body of a ``while`` loop (``lax.scan``) **once**, whatever
its trip count (checked: a 10-step scan of a 64×128×128 matmul reports 2.1 MFLOP, not 21). Steps with
scans (the Hebbian LM's chunked fast weights) are therefore under-counted. :func:`dot_flops` reads the
optimized HLO text instead and counts every ``dot`` — ``2 · |output| · |contracted|`` FLOPs — times the
trip counts of the loops around it (XLA writes ``known_trip_count`` on each ``while``; on a GPU the cuBLAS
gemm custom calls count as dots too): the matrix-product
work the step really does. :func:`dominant_dot` is the product shape with the most of that work, and
:func:`matmul_rate` times a plain jitted ``[b, m, k] @ [b, k, n]`` of that shape: the rate the step
could reach if all its FLOPs ran like its biggest matmul.
"""

from __future__ import annotations

import json
import math
import re
import statistics
import time
from collections import defaultdict
from dataclasses import dataclass
from typing import Callable

_HEADER = re.compile(r"^(?:ENTRY\s+)?%?([\w.\-]+)\s*\(.*\)\s*->\s*.*\{\s*$")
_INSTR = re.compile(
    r"^\s*(?:ROOT\s+)?%?([\w.\-]+)\s*=\s*"  # name =
    r"(\([^=]*?\)|\w+\[[^\]]*\](?:\{[^}]*\})?|\w+\[\])\s+([\w\-]+)\((.*)$"
)  # shape op(operands
_PARAM = re.compile(r"([\w.\-]+):\s*(\w+\[[^\]]*\])")
_SHAPE = re.compile(r"^\w+\[([^\]]*)\]")


@dataclass(frozen=True)
class DotShape:
    """A (batched) matrix product ``[batch, m, k] @ [batch, k, n]`` (dims flattened into these four)."""

    batch: int
    m: int
    k: int
    n: int

    @property
    def flops(self) -> int:
        return 2 * self.batch * self.m * self.k * self.n

    def __str__(self) -> str:
        lead = f"{self.batch}×" if self.batch > 1 else ""
        return f"{lead}[{self.m},{self.k}]@[{self.k},{self.n}]"


def _dims(shape: str) -> list[int]:
    m = _SHAPE.match(shape.strip())
    if not m:
        return []
    return [int(x) for x in m.group(1).split(",") if x.strip()]


def _attr_dims(rest: str, key: str) -> list[int]:
    m = re.search(key + r"=\{([^}]*)\}", rest)
    return [int(x) for x in m.group(1).split(",") if x.strip()] if m else []


def parse_hlo(text: str) -> dict[str, list[dict]]:
    """Computations of an HLO module text: ``{name: [instruction, ...]}`` with each instruction's
    ``name``, ``shape``, ``op``, operand names and the rest of its line (attributes)."""
    comps: dict[str, list[dict]] = {}
    current = None
    shapes: dict[str, str] = {}
    for line in text.splitlines():
        h = _HEADER.match(line)
        if h and not line.startswith(" "):
            current = h.group(1)
            comps[current] = []
            shapes = {n: s for n, s in _PARAM.findall(line.split("->")[0])}
            continue
        if current is None:
            continue
        if line.strip() == "}":
            current = None
            continue
        m = _INSTR.match(line)
        if not m:
            continue
        name, shape, op, rest = m.groups()
        shapes[name] = shape
        args = rest.split(")", 1)[0]
        operands = re.findall(r"%([\w.\-]+)", args)
        comps[current].append(
            {
                "name": name,
                "shape": shape,
                "op": op,
                "operands": operands,
                "rest": rest,
                "operand_shapes": [shapes.get(o, "") for o in operands],
            }
        )
    return comps


def _shape_from(lhs: list[int], out: list[int], batch_dims: list[int], contracting_dims: list[int]) -> DotShape:
    """(batch, m, k, n) of a product from its lhs and output dims: m = |lhs| / (batch·k), n = |out| / (batch·m)."""
    batch = math.prod(lhs[i] for i in batch_dims)
    k = math.prod(lhs[i] for i in contracting_dims)
    m = math.prod(lhs) // max(batch * k, 1)
    n = math.prod(out) // max(batch * m, 1)
    return DotShape(batch, m, k, n)


def _dot_shape(ins: dict) -> DotShape:
    rest = ins["rest"]
    return _shape_from(
        _dims(ins["operand_shapes"][0]),
        _dims(ins["shape"]),
        _attr_dims(rest, "lhs_batch_dims"),
        _attr_dims(rest, "lhs_contracting_dims"),
    )


_GEMM_TARGET = re.compile(r'custom_call_target="__cublas\$(?:gemm|lt\$matmul)"')


def _json_dims(rest: str, key: str) -> list[int]:
    m = re.search(r'"' + key + r'":\[([^\]]*)\]', rest)
    return [int(x.strip().strip('"')) for x in m.group(1).split(",") if x.strip()] if m else []


def _gemm_shape(ins: dict) -> DotShape:
    """A cuBLAS gemm custom call (GPU): dims from its ``dot_dimension_numbers``, output = the tuple's first."""
    rest = ins["rest"]
    return _shape_from(
        _dims(ins["operand_shapes"][0]),
        _dims(ins["shape"].lstrip("(")),
        _json_dims(rest, "lhs_batch_dimensions"),
        _json_dims(rest, "lhs_contracting_dimensions"),
    )


def _called(ins: dict) -> list[tuple[str, int]]:
    """(computation, times per execution of ``ins``) for what ``ins`` calls."""
    rest = ins["rest"]
    if ins["op"] == "while":
        body = re.search(r"body=%?([\w.\-]+)", rest)
        trip = re.search(r'"known_trip_count":\{"n":"(\d+)"\}', rest)
        return [(body.group(1), int(trip.group(1)) if trip else 1)] if body else []
    out = [(c, 1) for c in re.findall(r"(?:calls|to_apply)=%?([\w.\-]+)", rest)]
    branches = re.search(r"branch_computations=\{([^}]*)\}", rest)
    if branches:  # a conditional runs one branch: count each once (an upper bound)
        out += [(c, 1) for c in re.findall(r"%?([\w.\-]+)", branches.group(1))]
    return out


def dot_flops(hlo_text: str) -> dict[DotShape, int]:
    """Executions of every dot shape in the entry computation of an optimized HLO module text,
    loops counted by their known trip counts: ``{DotShape: executions per run}``."""
    comps = parse_hlo(hlo_text)
    entry = next((m.group(1) for m in re.finditer(r"^ENTRY\s+%?([\w.\-]+)", hlo_text, re.M)), None)
    if entry is None:
        raise ValueError("no ENTRY computation in this HLO text")
    memo: dict[str, dict[DotShape, int]] = {}

    def visit(name: str) -> dict[DotShape, int]:
        if name in memo:
            return memo[name]
        counts: dict[DotShape, int] = defaultdict(int)
        memo[name] = counts  # (HLO has no recursion; guards a malformed text)
        for ins in comps.get(name, []):
            if ins["op"] == "dot":
                counts[_dot_shape(ins)] += 1
            elif ins["op"] == "custom-call" and _GEMM_TARGET.search(ins["rest"]):
                counts[_gemm_shape(ins)] += 1
            for callee, times in _called(ins):
                for shape, c in visit(callee).items():
                    counts[shape] += c * times
        return counts

    return dict(visit(entry))


def total_dot_flops(counts: dict[DotShape, int]) -> int:
    return sum(s.flops * c for s, c in counts.items())


def dominant_dot(counts: dict[DotShape, int]) -> DotShape:
    """The dot shape with the most FLOPs (shape FLOPs × executions)."""
    return max(counts, key=lambda s: s.flops * counts[s])


def xla_flops(compiled) -> float:
    """``cost_analysis()["flops"]`` of a compiled JAX function (while bodies counted once)."""
    ca = compiled.cost_analysis()
    ca = ca[0] if isinstance(ca, (list, tuple)) else ca
    return float(ca.get("flops", 0.0))


def interleaved_medians(fns: list[Callable[[], object]], repeats: int, warmup: int = 1) -> list[float]:
    """Median seconds per call of each of ``fns``, called in turn (a, b, a, b, …) so that machine noise
    hits all alike; each result is blocked on."""
    import jax

    for fn in fns:
        for _ in range(warmup):
            jax.block_until_ready(fn())
    times: list[list[float]] = [[] for _ in fns]
    for i in range(repeats):
        order = range(len(fns)) if i % 2 == 0 else reversed(range(len(fns)))
        for j in order:
            t0 = time.perf_counter()
            jax.block_until_ready(fns[j]())
            times[j].append(time.perf_counter() - t0)
    return [statistics.median(t) for t in times]


def matmul_fn(shape: DotShape, dtype="float32") -> Callable[[], object]:
    """A zero-argument call of a jitted plain ``a @ b`` of ``shape`` (operands made once)."""
    import jax
    import jax.numpy as jnp

    lead = (shape.batch,) if shape.batch > 1 else ()
    ka, kb = jax.random.split(jax.random.key(0))
    a = jax.random.normal(ka, (*lead, shape.m, shape.k), dtype)
    b = jax.random.normal(kb, (*lead, shape.k, shape.n), dtype)
    f = jax.jit(jnp.matmul)
    return lambda: f(a, b)


def matmul_rate(shape: DotShape, repeats: int = 10, dtype="float32") -> float:
    """FLOP/s of a plain jitted matmul of ``shape`` (median of ``repeats``)."""
    (sec,) = interleaved_medians([matmul_fn(shape, dtype)], repeats, warmup=2)
    return shape.flops / sec


def summary(counts: dict[DotShape, int], top: int = 5) -> str:
    """The ``top`` dot shapes by FLOPs, one line of JSON (for logs)."""
    rows = sorted(counts.items(), key=lambda kv: -kv[0].flops * kv[1])[:top]
    return json.dumps([{"shape": str(s), "runs": c, "GFLOP": s.flops * c / 1e9} for s, c in rows])


def step_row(cfg, repeats: int, big: DotShape = DotShape(1, 1024, 1024, 1024)) -> dict:
    """Achieved FLOP/s of a config's jitted train step beside a plain matmul of its dominant dot shape
    and of ``big`` (in the model's compute dtype), all timed interleaved in one loop.

    FLOPs: the larger of ``cost_analysis()`` and the dot count (which counts scan bodies per trip)."""
    from spiraljax.train.setup import setup

    s = setup(cfg, mesh=False)
    batch = s.batch(0)
    state = s.init_state(seed=0)
    step = s.jit_step().lower(state, batch).compile()
    xla = xla_flops(step)
    dots = dot_flops(step.as_text())
    dot_total = total_dot_flops(dots)
    main = dominant_dot(dots)
    dtype = getattr(cfg.model, "dtype", "float32")
    holder = {"state": state}

    def run():
        holder["state"], out = step(holder["state"], batch)
        return out["loss"]

    t_step, t_main, t_big = interleaved_medians([run, matmul_fn(main, dtype), matmul_fn(big, dtype)], repeats, warmup=2)
    rate = max(xla, dot_total) / t_step  # the dot count where cost_analysis under-counts a scan
    main_rate = main.flops / t_main
    return {
        "batch": f"{cfg.train.batch_size}x{cfg.model.seq_len}",
        "dtype": dtype,
        "ms_per_step": t_step * 1e3,
        "xla_GFLOP": xla / 1e9,
        "dot_GFLOP": dot_total / 1e9,
        "GFLOPs": rate / 1e9,
        "dominant_dot": str(main),
        "dot_share": main.flops * dots[main] / max(dot_total, 1),
        "matmul_GFLOPs": main_rate / 1e9,
        "x_matmul": rate / main_rate,
        "big_matmul": str(big),
        "big_matmul_GFLOPs": big.flops / t_big / 1e9,
    }
