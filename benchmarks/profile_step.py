#!/usr/bin/env python
"""Where the train-step time goes: cost analysis, sub-piece timings and a per-op trace breakdown.

  python benchmarks/profile_step.py --config configs/transformer_tiny.yaml
  python benchmarks/profile_step.py --config configs/spiralformer_femto.yaml --set train.batch_size=16
  python benchmarks/profile_step.py --config configs/transformer_tiny.yaml --hlo-out /tmp/step.hlo.txt

Three views of the jit-compiled train step (the one ``spiraljax.train.loop`` runs):

1. ``compiled.cost_analysis()``: XLA's flop and byte counts (the roofline inputs) of the whole step,
   the forward pass alone and forward + backward.
2. Sub-pieces jitted and timed on their own (medians): forward, forward + backward, the optimizer tail
   (global norm, clip, AdamW, finite-check select), and per-layer pieces at the model's shapes ×
   n_layers: attention core (scores, mask, softmax, weighted sum, fwd+bwd), MLP (fwd+bwd), logits + CE.
3. A ``jax.profiler`` trace of ``--trace-steps`` steps (perfetto JSON, parsed here): on CPU every XLA
   thunk (fusion, dot, copy) is an event, so time per HLO instruction is summed, each instruction is
   labelled with its source (its ``op_name`` metadata in the optimized HLO: forward / backward /
   optimizer, and which layer part) and kind (matmul, copy/transpose, reduce, elementwise), and the
   busy time of XLA's thunks over the wall time gives how many thunks ran at once. It misses the
   threads a matmul library spreads one thunk over; the process's own CPU time (user + system per
   step, page faults, cores used) over untraced steps counts everything, the kernel's work included.
"""

from __future__ import annotations

import argparse
import collections
import glob
import gzip
import json
import os
import re
import sys
import tempfile
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import HOST_MEMORY_REUSED, time_fn
from spiraljax import config
from spiraljax.train.setup import setup
from spiraljax.train.step import loss_fn


# --------------------------------------------------------------------------- 1. cost analysis
def cost(compiled) -> dict:
    ca = compiled.cost_analysis()
    ca = ca[0] if isinstance(ca, (list, tuple)) else ca
    return {
        "GFLOP": ca.get("flops", 0.0) / 1e9,
        "GB_accessed": ca.get("bytes accessed", 0.0) / 1e9,
        "transcendentals_M": ca.get("transcendentals", 0.0) / 1e6,
    }


# --------------------------------------------------------------------------- 2. sub-pieces
def _attend_fn(mcfg, inputs):
    """(attend(q, k, v), label) as the model's layers call it."""
    if mcfg.family == "spiralformer":
        from functools import partial

        from spiraljax.ops.spiral import make_offsets, spiral_attention

        sc = mcfg.spiral
        offs = make_offsets(mcfg.seq_len, sc.pattern, sc.n_back, sc.every, sc.every_count)
        key_mask = jnp.asarray(inputs) != 0 if mcfg.silence.key_mask else None
        from spiraljax.ops.impl import resolve

        runs = resolve("spiral_attention", sc.impl, length=mcfg.seq_len)
        return partial(spiral_attention, offsets=offs, key_mask=key_mask, impl=sc.impl), f"spiral ({sc.impl}: {runs})"
    from functools import partial

    from spiraljax.ops.attention import causal_attention

    window = getattr(mcfg, "window", None)
    patches = " (patches)" if mcfg.family == "hebbian_lm" else ""
    label = "dense causal" if window is None else f"window {window}{patches}"
    return partial(causal_attention, window=window), label


def sub_pieces(cfg, model, tx, state, batch, repeats: int, train_step) -> list[dict]:
    m = cfg.model
    b, t = np.shape(batch["inputs"])
    hebbian = m.family == "hebbian_lm"
    if hebbian:  # its blocks run over patch latents [B, T/P, d]
        t //= m.patch
    d, h, n_layers = m.d_model, m.n_heads, m.n_layers
    rng = jax.random.key(1)
    params = state["params"]
    step0 = jnp.zeros((), jnp.int32)
    rows = []

    def add(name, fn, *args, per=1):
        f = jax.jit(fn)
        sec = time_fn(lambda: f(*args), repeats=repeats, warmup=2)
        rows.append({"piece": name, "ms": sec * 1e3 * per, "x": per})

    step = jax.jit(train_step)
    add("full train step", lambda s: step(s, batch), state)  # all outputs: nothing is dead code
    add("forward (loss)", lambda p: loss_fn(p, model, batch, step0, rng)[0], params)
    vg = jax.value_and_grad(loss_fn, has_aux=True)
    add("forward + backward", lambda p: vg(p, model, batch, step0, rng)[1], params)
    grads = jax.jit(lambda p: vg(p, model, batch, step0, rng)[1])(params)

    def opt_tail(p, o, g):  # what make_train_step does after the gradient
        finite = jnp.isfinite(optax.global_norm(g))
        u, o2 = tx.update(g, o, p)
        p2 = optax.apply_updates(p, u)
        return jax.tree.map(lambda n, x: jnp.where(finite, n, x), (p2, o2), (p, o))

    add("optimizer tail (norm, clip, AdamW, select)", opt_tail, params, state["opt_state"], grads)

    # per-layer pieces at the model's shapes, × n_layers
    keys = jax.random.split(jax.random.key(2), 4)
    dh = d // h
    q, k, v = (jax.random.normal(kk, (b, t, h, dh)) for kk in keys[:3])
    attend, label = _attend_fn(m, batch["inputs"])
    att = jax.value_and_grad(lambda q, k, v: jnp.sum(attend(q, k, v) ** 2), argnums=(0, 1, 2))
    add(f"attention core {label}, fwd+bwd", att, q, k, v, per=n_layers)
    if hebbian:
        from functools import partial

        from spiraljax.ops.hebbian import fast_weights

        v1 = jnp.concatenate([v, jnp.ones((b, t, h, 1))], -1)  # value + normaliser column, as HebbianMemory
        fw = partial(fast_weights, log_decay=jnp.log(jnp.full((h,), 0.99)), impl=m.memory_impl, chunk=m.memory_chunk)
        mem = jax.value_and_grad(lambda q, k, v: jnp.sum(fw(q, k, v)[0] ** 2), argnums=(0, 1, 2))
        add(f"fast weights {m.memory_impl} chunk {m.memory_chunk}, fwd+bwd", mem, q, k, v1, per=n_layers)

    from spiraljax.nn.layers import MLP

    kind = getattr(m, "mlp_kind", "gelu")
    hidden = int(getattr(m, "mlp_ratio", 4.0) * d * (2 / 3 if kind == "swiglu" else 1))  # Hebbian: 4d GELU
    mlp = MLP(hidden, kind)
    x = jax.random.normal(keys[3], (b, t, d))
    mp = mlp.init(jax.random.key(3), x[:1])
    mg = jax.value_and_grad(lambda p, x: jnp.sum(mlp.apply(p, x) ** 2), argnums=(0, 1))
    add(f"MLP {kind} {d}->{hidden}, fwd+bwd", mg, mp, x, per=n_layers)

    w = jax.random.normal(keys[0], (d, m.vocab_size)) * d**-0.5
    targets = jnp.asarray(batch["targets"])

    def ce(x, w):
        return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(x @ w, targets))

    if not hebbian:  # the Hebbian LM's logits come from its GRU head (in the trace's part table)
        add(f"logits {d}->{m.vocab_size} + CE, fwd+bwd", jax.value_and_grad(ce, argnums=(0, 1)), x, w)
    return rows


def variants(cfg, batch, repeats: int) -> list[dict]:
    """Candidate speed fixes timed at the model's shapes (fwd+bwd, one layer, median ms): the
    attention core as spiraljax writes it vs a plain additive-mask softmax vs
    ``jax.nn.dot_product_attention``, spiral sparse vs dense at this T, and the MLP hidden width."""
    from functools import partial

    from spiraljax.ops.attention import causal_attention, causal_mask

    m = cfg.model
    b, t = np.shape(batch["inputs"])
    d, h = m.d_model, m.n_heads
    keys = jax.random.split(jax.random.key(5), 4)
    q, k, v = (jax.random.normal(kk, (b, t, h, d // h)) for kk in keys[:3])
    rows = []

    def add(name, f, *args):
        g = jax.jit(jax.value_and_grad(lambda *a: jnp.sum(f(*a) ** 2), argnums=tuple(range(len(args)))))
        rows.append({"variant": name, "ms": time_fn(lambda: g(*args), repeats=repeats, warmup=2) * 1e3})

    def plain(q, k, v, mask):
        s = jnp.einsum("bthd,bshd->bhts", q, k) * q.shape[-1] ** -0.5
        w = jax.nn.softmax(jnp.where(mask, s, -1e30), axis=-1)
        return jnp.einsum("bhts,bshd->bthd", w, v)

    if m.family == "spiralformer":
        from spiraljax.ops.spiral import make_offsets, spiral_attention, spiral_mask

        offs = make_offsets(t, m.spiral.pattern, m.spiral.n_back, m.spiral.every, m.spiral.every_count)
        km = jnp.asarray(batch["inputs"]) != 0
        add(
            "attn: spiral sparse (spiraljax)",
            partial(spiral_attention, offsets=offs, key_mask=km, impl="sparse"),
            q,
            k,
            v,
        )
        add(
            "attn: spiral dense-masked (spiraljax)",
            partial(spiral_attention, offsets=offs, key_mask=km, impl="dense"),
            q,
            k,
            v,
        )
        mask = spiral_mask(t, offs)[None, None] & (km[:, None, None, :] | jnp.eye(t, dtype=bool))
        add("attn: dense mask + jax.nn.softmax", partial(plain, mask=mask), q, k, v)
        kinds = [("gelu", int(m.mlp_ratio * d))]
    else:
        from spiraljax.ops.attention import masked_attention, masked_softmax_reference

        def reference(q, k, v):  # the attention core before #16 (masked_softmax_reference)
            s = jnp.einsum("bthd,bshd->bhts", q, k) * q.shape[-1] ** -0.5
            return jnp.einsum("bhts,bshd->bthd", masked_softmax_reference(s, causal_mask(t)), v)

        add("attn: causal_attention (spiraljax)", causal_attention, q, k, v)
        add("attn: masked_softmax_reference (before #16)", reference, q, k, v)
        add("attn: masked_attention, empty-row factor on", partial(masked_attention, mask=causal_mask(t)), q, k, v)
        add("attn: where(mask, s, -1e30) + jax.nn.softmax", partial(plain, mask=causal_mask(t)), q, k, v)
        add(
            "attn: jax.nn.dot_product_attention(is_causal)",
            partial(jax.nn.dot_product_attention, is_causal=True),
            q,
            k,
            v,
        )
        kind = m.mlp_kind
        hid = int(m.mlp_ratio * d * (2 / 3 if kind == "swiglu" else 1))
        kinds = [(kind, hid), (kind, -(-hid // 64) * 64), (kind, hid // 64 * 64)]
    from spiraljax.nn.layers import MLP

    x = jax.random.normal(keys[3], (b, t, d))
    for kind, hid in dict.fromkeys(kinds):
        mlp = MLP(hid, kind)
        mp = mlp.init(jax.random.key(3), x[:1])
        add(f"MLP {kind} hidden {hid}", lambda p, x, mlp=mlp: mlp.apply(p, x), mp, x)
    return rows


# --------------------------------------------------------------------------- 3. trace breakdown
_INSTR = re.compile(r"^\s*(?:ROOT )?%?([\w.\-]+) = (\S+?)[{ ].*?metadata=\{op_name=\"([^\"]*)\"")
_PART_RULES = [  # (regex on op_name, part), first match wins
    (r"block_\d+/memory/", "Hebbian fast-weight memory"),  # Hebbian LM (before the generic rules)
    (r"block_\d+/swa/", "attn core + projections (Hebbian window)"),
    (r"block_\d+/mlp_(up|down)", "MLP"),
    (r"block_\d+/mix/", "attn projections (qkv, out)"),
    (r"latents/reasoning/", "reasoning loop (Hebbian)"),
    (r"HebbianLM(\.decode)?\)?/head/", "GRU local head (Hebbian)"),
    (r"latents/encoder/", "patch encoder (Hebbian)"),
    (r"_uniform|random_bits|threefry|phase_dropout", "dropout RNG (phase_dropout)"),
    (r"(attn|attention)/(qkv|out)/", "attn projections (qkv, out)"),
    (r"(attn|attention)/", "attn core (rope, smear, scores, softmax, PV)"),
    (r"/mlp\b", "MLP"),
    (r"LayerNorm|ln_f", "LayerNorm"),
    (r"block_\d+/", "block glue (residuals, breath/silence gates, GELU mul/add)"),
    (r"memory", "TowerMemory"),
    (r"softmax_cross_entropy|log_softmax|logsumexp", "logits + CE"),
    (r"/head/|embed.*attend|/attend", "logits + CE"),
    (r"embed|_take", "embedding"),
    (r"soma", "soma"),
]


def _label(op_name: str) -> tuple[str, str]:
    phase = "backward" if "transpose(jvp(" in op_name else "forward" if "jvp(" in op_name else "optimizer/other"
    part = next(
        (p for rx, p in _PART_RULES if re.search(rx, op_name)),
        "other" if phase != "optimizer/other" else "optimizer (norm, clip, AdamW, select)",
    )
    return phase, part


def _kind(name: str) -> str:
    if name.startswith(("ynn_fusion", "dot", "convolution", "custom-call", "onednn", "xnn")):
        return "matmul"
    if "copy" in name or "transpose" in name:
        return "copy/transpose"
    if "reduce" in name:
        return "reduce"
    return "elementwise/other"


def process_cpu(run_step, n_steps: int) -> dict:
    """Wall, user and system CPU ms per step and minor page faults per step of ``n_steps`` untraced steps:
    system time and page faults show memory the kernel maps and zeroes (spiraljax/host_memory.py)."""
    import resource

    r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    for _ in range(n_steps):
        run_step()
    wall, r1 = time.perf_counter() - t0, resource.getrusage(resource.RUSAGE_SELF)
    user, sys_ = r1.ru_utime - r0.ru_utime, r1.ru_stime - r0.ru_stime
    return {
        "wall_ms": wall / n_steps * 1e3,
        "user_ms": user / n_steps * 1e3,
        "sys_ms": sys_ / n_steps * 1e3,
        "cores": (user + sys_) / wall,
        "page_faults": (r1.ru_minflt - r0.ru_minflt) / n_steps,
    }


def trace_breakdown(compiled, run_step, n_steps: int, trace_dir: str) -> dict:
    """Time per HLO instruction over ``n_steps`` traced steps (ms per step), with labels."""
    info = {}
    for line in compiled.as_text().splitlines():
        mt = _INSTR.match(line)
        if mt:
            info[mt.group(1)] = (mt.group(2), mt.group(3))
    with jax.profiler.trace(trace_dir, create_perfetto_trace=True):
        t0 = time.perf_counter()
        for _ in range(n_steps):
            run_step()
        wall = (time.perf_counter() - t0) / n_steps
    files = sorted(glob.glob(os.path.join(trace_dir, "**", "*.trace.json.gz"), recursive=True), key=os.path.getmtime)
    data = json.load(gzip.open(files[-1]))
    events = data["traceEvents"] if isinstance(data, dict) else data
    per_op = collections.Counter()
    threads = collections.Counter()
    n_thunks = 0
    for e in events:
        if e.get("ph") == "X" and e.get("name") in info:
            n_thunks += 1
            per_op[e["name"]] += e.get("dur", 0) / 1e3 / n_steps
            threads[e.get("tid")] += e.get("dur", 0) / 1e3 / n_steps
    busy = sum(per_op.values())
    by_part, by_kind, by_phase = collections.Counter(), collections.Counter(), collections.Counter()
    top = []
    for name, ms in per_op.most_common():
        shape, op_name = info[name]
        phase, part = _label(op_name)
        by_part[part] += ms
        by_kind[_kind(name)] += ms
        by_phase[phase] += ms
        top.append(
            {
                "op": name,
                "ms": ms,
                "kind": _kind(name),
                "phase": phase,
                "part": part,
                "shape": shape,
                "source": re.sub(r"^jit\(train_step\)/", "", op_name)[:90],
            }
        )
    return {
        "wall_ms": wall * 1e3,
        "busy_ms": busy,
        "threads": len(threads),
        "thunks": n_thunks / n_steps,
        "parallelism": busy / (wall * 1e3),
        "by_phase": dict(by_phase),
        "by_part": dict(by_part),
        "by_kind": dict(by_kind),
        "top": top,
    }


# --------------------------------------------------------------------------- main
def _table(title, rows, total=None):
    print(f"\n## {title}")
    for name, ms in sorted(rows.items(), key=lambda kv: -kv[1]):
        share = f"  {100 * ms / total:5.1f} %" if total else ""
        print(f"  {ms:9.2f} ms{share}  {name}")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True)
    p.add_argument("--set", nargs="*", default=[])
    p.add_argument("--repeats", type=int, default=10, help="timed calls per sub-piece (median)")
    p.add_argument("--trace-steps", type=int, default=5)
    p.add_argument("--top", type=int, default=25, help="HLO instructions listed")
    p.add_argument(
        "--hlo-out",
        help="also write the optimized HLO of the step here "
        "(what XLA_FLAGS=--xla_dump_to gives as *after_optimizations.txt)",
    )
    p.add_argument(
        "--variants", action="store_true", help="also time candidate speed fixes (attention formulations, MLP widths)"
    )
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)

    cfg = config.load(args.config, args.set)
    s = setup(cfg, mesh=False)
    model, tx, batch = s.model, s.tx, s.batch(0)
    state = s.init_state(seed=0)
    step0, rng = jnp.zeros((), jnp.int32), jax.random.key(1)
    compiled = s.jit_step().lower(state, batch).compile()
    vg = jax.value_and_grad(loss_fn, has_aux=True)
    costs = {
        "train step": cost(compiled),
        "forward": cost(jax.jit(lambda p: loss_fn(p, model, batch, step0, rng)[0]).lower(state["params"]).compile()),
        "forward + backward": cost(jax.jit(lambda p: vg(p, model, batch, step0, rng)).lower(state["params"]).compile()),
    }
    if args.hlo_out:
        Path(args.hlo_out).write_text(compiled.as_text())

    pieces = sub_pieces(cfg, model, tx, state, batch, args.repeats, s.step_fn)
    alts = variants(cfg, batch, args.repeats) if args.variants else []

    holder = {"state": jax.tree.map(jnp.copy, state)}

    def run_step():
        holder["state"], out = compiled(holder["state"], batch)
        jax.block_until_ready(out["loss"])

    for _ in range(2):
        run_step()
    cpu = process_cpu(run_step, args.trace_steps)
    with tempfile.TemporaryDirectory() as tmp:
        tr = trace_breakdown(compiled, run_step, args.trace_steps, tmp)

    shape = f"{np.shape(batch['inputs'])[0]}x{np.shape(batch['inputs'])[1]}"
    if args.json:
        print(
            json.dumps(
                {
                    "config": args.config,
                    "set": args.set,
                    "batch": shape,
                    "cost": costs,
                    "pieces": pieces,
                    "variants": alts,
                    "process_cpu": cpu,
                    "host_memory_reuse": HOST_MEMORY_REUSED,
                    "trace": {**tr, "top": tr["top"][: args.top]},
                    "load_avg": os.getloadavg(),
                },
                indent=2,
            )
        )
        return
    print(
        f"# {cfg.model.family} ({Path(args.config).stem} {' '.join(args.set)}), batch {shape}, "
        f"{jax.device_count()} {jax.devices()[0].platform} device(s), load avg {os.getloadavg()[0]:.2f}"
    )
    print("\n## cost_analysis (XLA's counts)")
    for k, c in costs.items():
        print(
            f"  {k:20s} {c['GFLOP']:8.3f} GFLOP  {c['GB_accessed']:8.3f} GB accessed  "
            f"{c['transcendentals_M']:7.2f} M transcendentals"
        )
    step_ms = pieces[0]["ms"]
    print(
        f"  → {costs['train step']['GFLOP'] / step_ms * 1e3:.1f} GFLOP/s and "
        f"{costs['train step']['GB_accessed'] / step_ms * 1e3:.1f} GB/s at the {step_ms:.1f} ms step timed below"
    )
    print("\n## sub-pieces jitted alone (median ms; ×L = per-layer piece × n_layers)")
    for r in pieces:
        xs = f" (×{r['x']})" if r["x"] > 1 else ""
        print(f"  {r['ms']:9.2f} ms  {100 * r['ms'] / step_ms:5.1f} % of step  {r['piece']}{xs}")
    if alts:
        print("\n## candidate speed fixes (one layer, fwd+bwd, median ms)")
        for r in alts:
            print(f"  {r['ms']:9.2f} ms  {r['variant']}")
    print(
        f"\n## process CPU ({args.trace_steps} untraced steps; host memory reuse "
        f"{'on' if HOST_MEMORY_REUSED else 'off'}): wall {cpu['wall_ms']:.1f} ms/step, user {cpu['user_ms']:.1f} + "
        f"system {cpu['sys_ms']:.1f} ms/step → {cpu['cores']:.2f} cores; {cpu['page_faults']:,.0f} page faults/step"
    )
    print(
        f"\n## trace: {args.trace_steps} steps, wall {tr['wall_ms']:.1f} ms/step, XLA thunks busy "
        f"{tr['busy_ms']:.1f} ms/step ({tr['thunks']:.0f} thunks) on {tr['threads']} threads → thunk parallelism "
        f"{tr['parallelism']:.2f}"
    )
    _table("by phase (thunk time, ms/step)", tr["by_phase"], tr["busy_ms"])
    _table("by model part", tr["by_part"], tr["busy_ms"])
    _table("by op kind", tr["by_kind"], tr["busy_ms"])
    print(f"\n## top {args.top} HLO instructions (ms/step)")
    for r in tr["top"][: args.top]:
        print(f"  {r['ms']:8.2f}  {r['kind']:17s} {r['phase']:9s} {r['op']:32s} {r['shape']:28s} {r['source']}")


if __name__ == "__main__":
    main()
