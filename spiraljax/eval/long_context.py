"""The long-context evaluation: does the state carried across windows help, and how far does it reach?

``python evaluate.py RUN --suite long_context [--opt docs=4 doc_bytes=32768 buckets=0,256,1024,4096,16384
lengths=512,1024,2048,4096,8192 extrap_docs=1 extrap_bytes=16384 probe_rows=16 pairs=2 distances=1,2,4,8
batch=8 plots=true]`` on a run trained on ``data.source: longdocs`` (docs/results/long_context.md).

a. **BPC by position, state carried.** The first ``docs`` validation documents of at least
   ``doc_bytes`` bytes, each cut to its first ``doc_bytes``, are read in windows of the run's
   ``seq_len`` T, in order, with the model's state carried from window to window. Every byte's NLL is
   put in the bucket of its offset in the document (``buckets``: lower edges; 0–256, 256–1k, 1k–4k,
   4k–16k, 16k+ by default). The same documents feed every bucket. (No document that long: the default
   takes the longest ones, cut to the shortest of them; an explicit ``doc_bytes`` is refused.)
b. **The same with the state reset every window** (``state=None``: no cache, no carried memory). The
   gap carried − reset per bucket is what the memory is worth (negative = the memory helps). A family
   without ``initial_state`` has no state: carried = reset = the plain model.
c. **Length extrapolation** (attention families: transformer, spiralformer): the first ``extrap_docs``
   of those documents, cut to ``extrap_bytes``, read in windows of each length in ``lengths`` with
   the cache (the trained ``cache_len`` keys per layer) and without it. A length of at least
   ``extrap_bytes`` is skipped (one window would hold the whole text).
d. **Long-range recall** (:mod:`spiraljax.eval.long_probe`): ``probe_rows`` rows of real validation
   code whose first window defines ``pairs × len(distances)`` identifiers ``<key>_<value>`` and whose
   window d (d in ``distances``) uses ``pairs`` of them; accuracy on the value bytes, carried and reset,
   beside chance and the guess-among-present-values level. ``probe_rows=0`` skips it.

BPC = Σ NLL / (ln 2 · bytes). Plots (``plots=true``) go to ``RUN/plots/long_context_*.png``. Cost with
the defaults on the 2-core CPU machine: docs/results/long_context.md.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from spiraljax.errors import SuiteError
from spiraljax.eval import long_probe
from spiraljax.eval.suites import EvalContext, Option, SuiteResult, get_suite, register_suite
from spiraljax.losses import token_nll

OPTIONS = {
    "docs": Option(int, 4, minimum=1),
    "doc_bytes": Option(int, 32768, minimum=1),
    "buckets": Option(list[int], [0, 256, 1024, 4096, 16384]),
    "lengths": Option(list[int], [512, 1024, 2048, 4096, 8192]),
    "extrap_docs": Option(int, 1, minimum=1),
    "extrap_bytes": Option(int, 16384),
    "probe_rows": Option(int, 16, minimum=0),
    "pairs": Option(int, 2, minimum=1),
    "distances": Option(list[int], [1, 2, 4, 8]),
    "batch": Option(int, 8, minimum=1),
    "plots": Option(bool, True),
}
ATTENTION_FAMILIES = ("transformer", "spiralformer")  # families with a key/value cache and a window length
LN2 = math.log(2.0)


# ----------------------------------------------------------------------------- buckets
def bucket_label(lo: int, hi: int | None) -> str:
    """``0-256``, ``256-1k``, ``16k+``: a bucket of byte offsets [lo, hi)."""
    short = lambda n: f"{n // 1024}k" if n >= 1024 and n % 1024 == 0 else str(n)  # noqa: E731
    return f"{short(lo)}+" if hi is None else f"{short(lo)}-{short(hi)}"


def bucket_edges(lower: Sequence[int]) -> list[tuple[int, int | None]]:
    """``[(lo, hi), …]`` from the lower edges (0 is always the first; the last bucket is open)."""
    edges = sorted({0, *(int(x) for x in lower)})
    if edges[0] < 0:
        raise SuiteError(f"--opt buckets: offsets must be ≥ 0, got {edges[0]}")
    return [(lo, hi) for lo, hi in zip(edges, [*edges[1:], None])]


def bucket_sums(nll: np.ndarray, mask: np.ndarray, edges: list[tuple[int, int | None]]) -> list[tuple[float, int]]:
    """``(Σ nll, tokens)`` per bucket for per-target NLLs ``[R, n]`` of documents read from their start:
    target j is the byte at offset j + 1 of its document (offset 0 is never predicted)."""
    offsets = np.arange(1, nll.shape[1] + 1)
    out = []
    for lo, hi in edges:
        cols = (offsets >= lo) & (offsets < (hi if hi is not None else np.inf))
        m = mask[:, cols]
        out.append((float(np.sum(nll[:, cols] * m)), int(np.sum(m))))
    return out


def bpc(total: float, tokens: int) -> float | None:
    return total / (LN2 * tokens) if tokens else None


def position_table(nll: np.ndarray, mask: np.ndarray, edges) -> dict[str, Any]:
    """``{"all": BPC, "buckets": {label: BPC}, "tokens": {label: n}}`` of one reading."""
    sums = bucket_sums(nll, mask, edges)
    return {
        "all": bpc(float(np.sum(nll * mask)), int(np.sum(mask))),
        "buckets": {bucket_label(lo, hi): bpc(s, n) for (lo, hi), (s, n) in zip(edges, sums)},
        "tokens": {bucket_label(lo, hi): n for (lo, hi), (_, n) in zip(edges, sums)},
    }


# ----------------------------------------------------------------------------- reading documents
def has_state(model) -> bool:
    return callable(getattr(model, "initial_state", None))


class Reader:
    """Per-target NLL (nats) and argmax of ``model`` over rows of bytes read in windows, with the state
    carried from window to window or with every window read alone (``state=None``)."""

    def __init__(self, model, variables, step: int = 0):
        self.model, self.variables, self.step = model, variables, step
        self.stateful = has_state(model)

        def carried(variables, state, inputs, targets, step):
            logits, aux = model.apply(variables, inputs, train=False, step=step, state=state)
            return aux["state"], token_nll(logits, targets), jnp.argmax(logits, -1).astype(jnp.int32)

        def alone(variables, inputs, targets, step):
            logits, _ = model.apply(variables, inputs, train=False, step=step)
            return token_nll(logits, targets), jnp.argmax(logits, -1).astype(jnp.int32)

        self._carried, self._alone = jax.jit(carried), jax.jit(alone)

    @staticmethod
    def windows(tokens: np.ndarray, window: int) -> tuple[np.ndarray, np.ndarray, int]:
        """Inputs and targets ``[R, K, window]`` (zero-padded past the end) and the real target count n."""
        rows, n = tokens.shape[0], tokens.shape[1] - 1
        k = -(-n // window)
        pad = np.zeros((rows, k * window + 1), np.int32)
        pad[:, : n + 1] = tokens
        return pad[:, :-1].reshape(rows, k, window), pad[:, 1:].reshape(rows, k, window), n

    def carried(self, tokens: np.ndarray, window: int) -> tuple[np.ndarray, np.ndarray]:
        """``tokens [R, N]`` read window after window with the state carried: ``(nll, pred) [R, N − 1]``
        (a model without state: every window alone)."""
        if not self.stateful:
            return self.alone(tokens, window)
        inputs, targets, n = self.windows(tokens, window)
        state = self.model.initial_state(tokens.shape[0])
        nll, pred = [], []
        for k in range(inputs.shape[1]):
            state, a, b = self._carried(self.variables, state, inputs[:, k], targets[:, k], self.step)
            nll.append(np.asarray(a))
            pred.append(np.asarray(b))
        return np.concatenate(nll, 1)[:, :n], np.concatenate(pred, 1)[:, :n]

    def alone(
        self, tokens: np.ndarray, window: int, batch: int = 8, only: Sequence[int] | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Every window read alone (the state reset every window), ``batch`` windows per call;
        ``only``: read just those window indices (the others stay NLL 0, prediction −1)."""
        inputs, targets, n = self.windows(tokens, window)
        rows, k = inputs.shape[:2]
        picked = [(r, j) for r in range(rows) for j in (range(k) if only is None else only) if j < k]
        nll = np.zeros((rows, k, window), np.float32)
        pred = np.full((rows, k, window), -1, np.int32)
        for lo in range(0, len(picked), batch):
            part = picked[lo : lo + batch]
            idx = part + [part[-1]] * (batch - len(part))  # a full batch: one compiled shape
            x = np.stack([inputs[r, j] for r, j in idx])
            y = np.stack([targets[r, j] for r, j in idx])
            a, b = self._alone(self.variables, x, y, self.step)
            a, b = np.asarray(a), np.asarray(b)
            for i, (r, j) in enumerate(part):
                nll[r, j], pred[r, j] = a[i], b[i]
        return nll.reshape(rows, -1)[:, :n], pred.reshape(rows, -1)[:, :n]


def long_documents(dataset, n_docs: int, n_bytes: int, shrink: bool = False) -> tuple[np.ndarray, list[str]]:
    """The first ``n_docs`` validation documents with at least ``n_bytes`` bytes, cut to ``n_bytes``:
    ``(tokens [D, n_bytes] int32, names)``. When none is that long: with ``shrink``, the ``n_docs``
    longest (in corpus order) cut to the shortest of them; else a one-line SuiteError."""
    docs, names = dataset.documents("val"), dataset.document_names("val")
    picked = [(d, n) for d, n in zip(docs, names) if len(d) >= n_bytes][:n_docs]
    if not picked and shrink and docs:
        longest = sorted(sorted(range(len(docs)), key=lambda i: -len(docs[i]))[:n_docs])
        picked = [(docs[i], names[i]) for i in longest]
        n_bytes = min(len(d) for d, _ in picked)
    if not picked or n_bytes < 2:
        longest = max((len(d) for d in docs), default=0)
        raise SuiteError(
            f"--opt doc_bytes={n_bytes}: no validation document is that long (the longest has "
            f"{longest} bytes); lower doc_bytes"
        )
    tokens = np.stack([np.asarray(d[:n_bytes], np.int32) for d, _ in picked])
    return tokens, [n for _, n in picked]


def model_at_length(model_cfg, length: int):
    """The same model read in windows of ``length``: ``seq_len`` set, the carried cache kept at the trained
    ``cache_len`` (keys per layer)."""
    from spiraljax.models import build

    return build(model_cfg.model_copy(update={"seq_len": length, "cache_len": model_cfg.cache_length}))


# ----------------------------------------------------------------------------- the four parts
def by_position(reader: Reader, tokens: np.ndarray, window: int, edges, batch: int) -> tuple[dict, dict]:
    """a + b: the bucket table (``carried``, ``reset``, ``gap``, ``tokens`` per bucket) and the raw
    per-target NLLs (for reuse by the extrapolation at the trained length)."""
    mask = np.ones((tokens.shape[0], tokens.shape[1] - 1), np.float32)
    carried, _ = reader.carried(tokens, window)
    reset = carried if not reader.stateful else reader.alone(tokens, window, batch)[0]
    c, r = position_table(carried, mask, edges), position_table(reset, mask, edges)
    buckets = {
        label: {
            "carried": c["buckets"][label],
            "reset": r["buckets"][label],
            "gap": None if c["buckets"][label] is None else c["buckets"][label] - r["buckets"][label],
            "tokens": c["tokens"][label],
            "lo": lo,
            "hi": hi,
        }
        for (lo, hi), label in zip(edges, c["buckets"])
    }
    overall = {"carried": c["all"], "reset": r["all"], "gap": c["all"] - r["all"], "tokens": int(mask.sum())}
    return {"buckets": buckets, "all": overall}, {"carried": carried, "reset": reset}


def extrapolation(
    ctx: EvalContext, tokens: np.ndarray, lengths: list[int], edges, batch: int, trained: dict[str, np.ndarray]
) -> dict[str, Any]:
    """c: BPC per evaluation length with the cache carried and without it (``tokens`` already cut)."""
    cfg = ctx.cfg.model
    n_bytes = tokens.shape[1]
    mask = np.ones((tokens.shape[0], n_bytes - 1), np.float32)
    out: dict[str, Any] = {
        "lengths": [],
        "skipped": {},
        "by_length": {},
        "cache_len": cfg.cache_length,
        "trained_length": cfg.seq_len,
    }
    for length in lengths:
        if length >= n_bytes:
            out["skipped"][str(length)] = f"not shorter than extrap_bytes={n_bytes}"
            continue
        if length == cfg.seq_len:  # the bucket reading already holds these bytes (causal: same NLLs)
            carried, reset = (trained[k][: tokens.shape[0], : n_bytes - 1] for k in ("carried", "reset"))
        else:
            reader = Reader(model_at_length(cfg, length), ctx.variables, ctx.step)
            carried = reader.carried(tokens, length)[0]
            reset = reader.alone(tokens, length, max(1, batch * cfg.seq_len // length))[0]
        out["lengths"].append(length)
        out["by_length"][str(length)] = {
            "carried": position_table(carried, mask, edges),
            "reset": position_table(reset, mask, edges),
        }
    return out


def recall(
    reader: Reader, dataset, window: int, rows: int, pairs: int, distances: list[int], seed: int, batch: int
) -> dict[str, Any]:
    """d: accuracy on the probe's value bytes per distance, carried and reset, beside chance and guess."""
    lines = long_probe.code_lines(dataset.documents("val"))
    try:
        probe = long_probe.probe_rows(lines, window, distances, pairs, seed, rows)
    except ValueError as err:
        raise SuiteError(f"--opt pairs={pairs} distances={','.join(map(str, distances))}: {err}") from None
    tokens = np.stack([p.tokens for p in probe])
    _, carried = reader.carried(tokens, window)
    reset = carried if not reader.stateful else reader.alone(tokens, window, batch, only=sorted(set(distances)))[1]
    c, r, ref = long_probe.score(probe, carried), long_probe.score(probe, reset), long_probe.levels(probe)
    by = {
        str(d): {
            "carried": {k: c[d][k] for k in ("first", "all")},
            "reset": {k: r[d][k] for k in ("first", "all")},
            "queries": c[d]["queries"],
            **ref[d],
        }
        for d in sorted(c)
    }
    return {
        "distances": sorted(c),
        "rows": rows,
        "pairs": pairs,
        "by_distance": by,
        "key_len": long_probe.KEY_LEN,
        "value_len": long_probe.VALUE_LEN,
        "alphabet": len(long_probe.ALPHABET),
    }


# ----------------------------------------------------------------------------- text and plots
def _f(x: float | None, fmt: str = ".3f") -> str:
    return "—" if x is None else format(x, fmt)


def describe(data: dict[str, Any]) -> str:
    pos = data["position"]
    lines = [
        f"BPC by position in the document ({len(data['docs'])} validation documents, first {data['doc_bytes']} "
        f"bytes each; windows of {data['window']}; carried = state carried, reset = every window alone)"
    ]
    if not data["stateful"]:
        lines.append(f"  {data['family']} carries no state: carried = reset = the plain model")
    lines.append(f"  {'bucket':<9} {'tokens':>7} {'carried':>8} {'reset':>8} {'carried-reset':>14}")
    for label, b in [*pos["buckets"].items(), ("all", pos["all"])]:
        lines.append(
            f"  {label:<9} {b['tokens']:>7} {_f(b['carried']):>8} {_f(b['reset']):>8} {_f(b['gap'], '+.3f'):>14}"
        )
    ex = data["extrapolation"]
    if "by_length" in ex:
        first = ex["by_length"][str(ex["lengths"][0])]["carried"]["tokens"] if ex["lengths"] else {}
        late = [label for label, n in first.items() if n][-2:]  # the two last buckets the text reaches
        lines.append(
            f"length extrapolation ({len(data['extrap_docs'])} document(s), first {ex['bytes']} bytes; "
            f"trained at T={ex['trained_length']}; cache = {ex['cache_len']} keys per layer carried)"
        )
        lines.append(
            f"  {'length':>6} {'cache':>8} {'no cache':>8}   " + "   ".join(f"{lb + ' cache/no':>20}" for lb in late)
        )
        for length in ex["lengths"]:
            row = ex["by_length"][str(length)]
            cells = [f"{_f(row['carried']['buckets'][lb]):>9} /{_f(row['reset']['buckets'][lb]):>9}" for lb in late]
            lines.append(
                f"  {length:>6} {_f(row['carried']['all']):>8} {_f(row['reset']['all']):>8}   "
                + "   ".join(f"{c:>20}" for c in cells)
            )
        for length, why in ex["skipped"].items():
            lines.append(f"  {length:>6} skipped: {why}")
    else:
        lines.append(f"length extrapolation: {ex['skipped']}")
    rc = data["recall"]
    if "by_distance" in rc:
        lines.append(
            f"long-range recall ({rc['rows']} rows, {rc['pairs']} queries per distance and row; value = "
            f"{rc['value_len']} letters after the key prefix; first byte / all bytes)"
        )
        lines.append(
            f"  {'windows later':>13} {'queries':>7} {'carried':>13} {'reset':>13} {'chance':>13} {'guess present':>14}"
        )
        for d, x in rc["by_distance"].items():
            lines.append(
                f"  {d:>13} {x['queries']:>7} {x['carried']['first']:>6.3f}/{x['carried']['all']:.3f} "
                f"{x['reset']['first']:>6.3f}/{x['reset']['all']:.3f} "
                f"{x['chance_first']:>6.3f}/{x['chance_all']:.3f}"
                f" {x['guess_first']:>7.3f}/{x['guess_all']:.3f}"
            )
    else:
        lines.append(f"long-range recall: {rc['skipped']}")
    lines.append(f"({data['seconds']['total']:.0f} s)")
    return "\n".join(lines)


def plot(data: dict[str, Any], out: Path) -> dict[str, str]:
    """BPC vs position (carried, reset), carried − reset per bucket, extrapolation, recall vs distance."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    made: dict[str, str] = {}

    def save(fig, name: str) -> None:
        fig.tight_layout()
        fig.savefig(out / f"{name}.png", dpi=90)
        plt.close(fig)
        made[name] = str(out / f"{name}.png")

    pos = data["position"]["buckets"]
    labels = [k for k, b in pos.items() if b["tokens"]]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for key, style in (("carried", "-o"), ("reset", "--s")):
        ax.plot(labels, [pos[k][key] for k in labels], style, label=key)
    ax.set(xlabel="byte offset in the document", ylabel="BPC", title="BPC by position")
    ax.legend()
    save(fig, "long_context_position")
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.bar(labels, [pos[k]["gap"] for k in labels])
    ax.axhline(0, color="0.5", lw=0.8)
    ax.set(xlabel="byte offset in the document", ylabel="carried − reset BPC", title="what the carried state is worth")
    save(fig, "long_context_gap")
    ex = data["extrapolation"]
    if ex.get("lengths"):
        fig, ax = plt.subplots(figsize=(6, 3.5))
        for key, style in (("carried", "-o"), ("reset", "--s")):
            ax.plot(
                ex["lengths"],
                [ex["by_length"][str(n)][key]["all"] for n in ex["lengths"]],
                style,
                label="with cache" if key == "carried" else "no cache",
            )
        ax.axvline(ex["trained_length"], color="0.6", lw=0.8, ls=":")
        ax.set_xscale("log", base=2)
        ax.set(xlabel="evaluation window length", ylabel="BPC", title="length extrapolation")
        ax.legend()
        save(fig, "long_context_extrapolation")
    rc = data["recall"]
    if rc.get("by_distance"):
        ds = [int(d) for d in rc["by_distance"]]
        x = rc["by_distance"]
        fig, ax = plt.subplots(figsize=(6, 3.5))
        for key, style in (("carried", "-o"), ("reset", "--s")):
            ax.plot(ds, [x[str(d)][key]["first"] for d in ds], style, label=f"{key} (first value byte)")
        ax.plot(ds, [x[str(d)]["chance_first"] for d in ds], ":", color="0.4", label="chance")
        ax.plot(ds, [x[str(d)]["guess_first"] for d in ds], "-.", color="0.6", label="guess among present values")
        ax.set_xscale("log", base=2)
        ax.set_ylim(0, 1)
        ax.set(xlabel="windows between definition and query", ylabel="accuracy", title="long-range recall")
        ax.legend(fontsize=7)
        save(fig, "long_context_recall")
    return made


# ----------------------------------------------------------------------------- the suite
def long_context(ctx: EvalContext, plots: bool | None = None) -> dict[str, Any]:
    """All four parts on ``ctx``'s run (the suite's JSON); the options are ``ctx.options`` parsed by the registry."""
    t0 = time.perf_counter()
    opt = get_suite("long_context").values(ctx)
    cfg = ctx.cfg
    window = cfg.model.seq_len
    reader = Reader(ctx.model, ctx.variables, ctx.step)
    edges = bucket_edges(opt["buckets"])
    # the default length shrinks to what the corpus has (e.g. the shakespeare corpus' segments); an asked one does not
    tokens, names = long_documents(ctx.dataset, opt["docs"], opt["doc_bytes"], shrink="doc_bytes" not in ctx.options)
    opt["doc_bytes"] = tokens.shape[1]
    seconds: dict[str, float] = {}
    data: dict[str, Any] = {
        "family": cfg.model.family,
        "stateful": reader.stateful,
        "window": window,
        "step": ctx.step,
        "docs": names,
        "doc_bytes": opt["doc_bytes"],
        "data_sha256": getattr(ctx.dataset, "sha256", None),
        "options": opt,
    }
    data["position"], raw = by_position(reader, tokens, window, edges, opt["batch"])
    seconds["position"] = time.perf_counter() - t0
    t = time.perf_counter()
    if cfg.model.family in ATTENTION_FAMILIES and opt["lengths"]:
        n = min(opt["extrap_bytes"], opt["doc_bytes"])
        data["extrap_docs"] = names[: opt["extrap_docs"]]
        data["extrapolation"] = {
            "bytes": n,
            **extrapolation(ctx, tokens[: opt["extrap_docs"], :n], opt["lengths"], edges, opt["batch"], raw),
        }
    else:
        why = "no lengths asked" if not opt["lengths"] else f"attention families only ({', '.join(ATTENTION_FAMILIES)})"
        data["extrapolation"] = {"skipped": why}
    seconds["extrapolation"] = time.perf_counter() - t
    t = time.perf_counter()
    if opt["probe_rows"]:
        data["recall"] = recall(
            reader, ctx.dataset, window, opt["probe_rows"], opt["pairs"], opt["distances"], ctx.seed, opt["batch"]
        )
    else:
        data["recall"] = {"skipped": "probe_rows=0"}
    seconds["recall"] = time.perf_counter() - t
    seconds["total"] = time.perf_counter() - t0
    data["seconds"] = seconds
    if (opt["plots"] if plots is None else plots) and ctx.run_dir is not None:
        data["plots"] = plot(data, ctx.run_dir / "plots")
    return data


@register_suite("long_context", sources=("longdocs",), options=OPTIONS)
def long_context_suite(ctx: EvalContext, **options: Any) -> SuiteResult:
    data = long_context(ctx)
    return SuiteResult(data, describe(data))
