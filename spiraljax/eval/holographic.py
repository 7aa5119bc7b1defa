"""Holographic memory suite: every number next to the seed's target, honest failures included.

``python evaluate.py --suite holographic [--config configs/holographic.yaml] [--json]``

Synthetic: exact recall; held-out suffix generalisation ("A B → C", "A D → C" taught, "A E → ?"
asked) for the exact and general modes; post-/pre-dream retrieval; paradox lanes; generation
diversity. TinyShakespeare: next-character accuracy from 3-character contexts, exact and general
modes, beside a count-based n-gram model with back-off.
"""
from __future__ import annotations

from collections import Counter, defaultdict

import jax
import jax.numpy as jnp
import numpy as np

from spiraljax.config import ConfigError
from spiraljax.data.text import read_corpus
from spiraljax.eval.suites import EvalContext, SuiteResult, register_suite
from spiraljax.models import holographic as H


def _cfg(ctx: EvalContext, mode: str) -> H.HolographicConfig:
    base = ctx.cfg.model
    if base.family != "holographic":
        raise ConfigError("the holographic suite needs a config with model.family: holographic "
                          "(e.g. --config configs/holographic.yaml)")
    return base.model_copy(update={"mode": mode})


def suffix_task(rng: np.random.Generator, n: int, vocab: int):
    a = rng.integers(0, vocab, size=(n, 2))
    c = rng.integers(0, vocab, size=n)
    b, d, e = (rng.integers(0, vocab, size=n) for _ in range(3))
    teach = np.concatenate([np.stack([a[:, 0], a[:, 1], b], 1), np.stack([a[:, 0], a[:, 1], d], 1)])
    return teach, np.concatenate([c, c]), np.stack([a[:, 0], a[:, 1], e], 1), c


def ngram_baseline(train: np.ndarray, test_ctx: np.ndarray, n: int) -> np.ndarray:
    """Count-based next-token model with back-off from n-gram to (n−1)-gram … to unigram."""
    tables = [defaultdict(Counter) for _ in range(n + 1)]
    for i in range(n, len(train)):
        for k in range(n + 1):
            tables[k][tuple(train[i - k:i])][int(train[i])] += 1
    preds = []
    for ctx in test_ctx:
        for k in range(n, -1, -1):
            key = tuple(ctx[len(ctx) - k:]) if k else ()
            if key in tables[k]:
                preds.append(tables[k][key].most_common(1)[0][0])
                break
    return np.asarray(preds)


def shakespeare_ngrams(ctx: EvalContext, cfg: H.HolographicConfig, n_train: int, n_test: int) -> dict:
    text = np.frombuffer(read_corpus("data/tinyshakespeare.txt").encode(), np.uint8).astype(np.int32)
    split = int(len(text) * 0.9)
    k = cfg.context_len
    train, val = text[: min(split, n_train + k)], text[split: split + n_test + k]
    windows = lambda x: np.lib.stride_tricks.sliding_window_view(x, k + 1)  # noqa: E731
    tr, te = windows(train), windows(val)
    out = {}
    for mode in ("exact", "general"):
        mcfg = cfg.model_copy(update={"mode": mode, "vocab_size": 256})
        state = H.init(mcfg)
        learn = jax.jit(H.learn, static_argnums=3)
        for i in range(0, len(tr), 8192):
            state = learn(state, jnp.asarray(tr[i:i + 8192, :k]), jnp.asarray(tr[i:i + 8192, k]), mcfg.capacity)
        tok, _ = jax.jit(H.retrieve, static_argnums=2)(state, jnp.asarray(te[:, :k]), mcfg.capacity)
        out[f"holographic_{mode}"] = float(np.mean(np.asarray(tok) == te[:, k]))
    out["ngram_count_backoff"] = float(np.mean(ngram_baseline(train, te[:, :k], k) == te[:, k]))
    out.update(train_positions=int(len(tr)), test_positions=int(len(te)), context=k)
    return out


@register_suite("holographic", needs_run=False, families=("holographic",),
                options={"items": int, "temperature": float, "train_positions": int, "test_positions": int,
                         "config": str})
def holographic_suite(ctx: EvalContext) -> SuiteResult:
    rng = np.random.default_rng(ctx.seed)
    cfg = _cfg(ctx, "general")
    v, cap = cfg.vocab_size, cfg.capacity
    learn = jax.jit(H.learn, static_argnums=3)
    retrieve = jax.jit(H.retrieve, static_argnums=2)
    res: dict = {}
    # exact recall of random 3-token contexts
    n_items = int(ctx.options.get("items", 2000))
    contexts = rng.integers(0, v, size=(n_items, cfg.context_len))
    targets = rng.integers(0, v, size=n_items)
    state = learn(H.init(cfg), jnp.asarray(contexts), jnp.asarray(targets), cap)
    pre = float(np.mean(np.asarray(retrieve(state, jnp.asarray(contexts), cap)[0]) == targets))
    res["exact_recall"] = pre
    # dream
    dreamt, stats = jax.jit(H.dream)(state, jax.random.key(ctx.seed))
    post = float(np.mean(np.asarray(retrieve(dreamt, jnp.asarray(contexts), cap)[0]) == targets))
    res["dream"] = {"pre": pre, "post": post, "ratio": post / max(pre, 1e-9),
                    "iterations": int(stats["iterations"]), "stability": float(stats["stability"])}
    # held-out suffix generalisation
    teach, t_targets, ask, answer = suffix_task(rng, 500, v)
    gen = {}
    for mode in ("exact", "general"):
        mcfg = _cfg(ctx, mode)
        st = H.learn(H.init(mcfg), jnp.asarray(teach), jnp.asarray(t_targets), cap)
        gen[mode] = float(np.mean(np.asarray(H.retrieve(st, jnp.asarray(ask), cap)[0]) == answer))
    res["generalisation"] = gen
    # paradox: one context, two targets taught in turn
    pc = jnp.asarray(rng.integers(0, v, size=(200, cfg.context_len)))
    x, y = rng.integers(0, v, size=200), rng.integers(0, v, size=200)
    y = np.where(y == x, (y + 1) % v, y)
    st = H.learn(H.learn(H.init(cfg), pc, jnp.asarray(x), cap), pc, jnp.asarray(y), cap)
    lanes, strength = H.retrieve_all(st, pc, cap)
    lanes, strong = np.asarray(lanes), np.asarray(strength) > 1.0
    both = [(x[i] in lanes[i][strong[i]]) and (y[i] in lanes[i][strong[i]]) for i in range(200)]
    res["paradox_both_retrievable"] = float(np.mean(both))
    # generation diversity on the learned random contexts
    out = np.asarray(H.generate(state, jnp.asarray(contexts[:64]), 16, jax.random.key(ctx.seed + 1), cap,
                                temperature=float(ctx.options.get("temperature", 0.5))))[:, cfg.context_len:]
    trigrams = [tuple(r[i:i + 3]) for r in out for i in range(len(r) - 2)]
    res["generation"] = {"distinct_tokens": int(len(set(out.ravel().tolist()))),
                         "distinct_trigram_ratio": len(set(trigrams)) / max(len(trigrams), 1)}
    res["shakespeare"] = shakespeare_ngrams(ctx, cfg, int(ctx.options.get("train_positions", 200_000)),
                                            int(ctx.options.get("test_positions", 20_000)))
    targets_met = {"generalisation > 50% (general mode)": gen["general"] > 0.5,
                   "post-dream ≥ 95% of pre-dream": res["dream"]["ratio"] >= 0.95}
    res["targets_met"] = targets_met
    ok = lambda b: "MET" if b else "NOT MET"  # noqa: E731
    s = res["shakespeare"]
    text = "\n".join([
        f"exact recall ({n_items} random {cfg.context_len}-token contexts, vocab {v}): {pre:.3f}",
        f"held-out suffix generalisation: exact mode {gen['exact']:.3f}, general mode {gen['general']:.3f}"
        f"   target > 0.5: {ok(targets_met['generalisation > 50% (general mode)'])}",
        f"dream: pre {pre:.3f} → post {post:.3f} (ratio {res['dream']['ratio']:.3f}, {res['dream']['iterations']} "
        f"iterations, stability {res['dream']['stability']:.3f})   target ≥ 0.95: "
        f"{ok(targets_met['post-dream ≥ 95% of pre-dream'])}",
        f"paradox (two targets per context): both retrievable {res['paradox_both_retrievable']:.3f}",
        f"generation: {res['generation']['distinct_tokens']} distinct tokens, distinct-trigram ratio "
        f"{res['generation']['distinct_trigram_ratio']:.3f}",
        f"TinyShakespeare next char from {s['context']} chars ({s['train_positions']} train / {s['test_positions']} "
        f"test positions): holographic exact {s['holographic_exact']:.3f}, general {s['holographic_general']:.3f}, "
        f"count n-gram back-off {s['ngram_count_backoff']:.3f}",
    ])
    return SuiteResult(res, text, all(targets_met.values()))
