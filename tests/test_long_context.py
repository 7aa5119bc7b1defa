"""The long-context suite (``evaluate.py RUN --suite long_context``): bucket arithmetic, the readers
against their references, carried vs reset, length extrapolation, the recall probe's construction and
scoring, determinism, and the CLI's one-line refusals."""

from __future__ import annotations

import json

import jax.numpy as jnp
import numpy as np
import pytest

from conftest import ROOT
from spiraljax import config
from spiraljax.eval import long_probe as lp
from spiraljax.eval.long_context import (
    Reader,
    bucket_edges,
    bucket_label,
    bucket_sums,
    by_position,
    long_context,
    position_table,
)
from spiraljax.eval.suites import EvalContext
from spiraljax.experiment import run as train
from spiraljax.losses import token_nll
from spiraljax.state import stream

T = 64
# TinyShakespeare cut into 4 KB documents (val: 14 of them), windows of 64 bytes, two training steps
LONG = [
    "data.source=longdocs",
    "data.corpus=shakespeare",
    "data.segment_bytes=4096",
    f"model.seq_len={T}",
    "train.batch_size=4",
    "train.steps=2",
    "train.eval_every=2",
    "checkpoint.every=2",
    "eval.batch_size=4",
    "eval.batches=2",
    "eval.sample_tokens=0",
    "train.progress=false",
    "checkpoint.async_save=false",
]
SMALL = {
    "doc_bytes": "1024",
    "docs": "2",
    "buckets": "0,64,256",
    "probe_rows": "3",
    "pairs": "1",
    "distances": "1,2",
    "lengths": "32,64,128,2048",
    "extrap_bytes": "512",
    "plots": "false",
}


def _run(tmp, name: str, base: str | None, *extra: str):
    if base is None:  # a dense baseline without a data section to replace
        path = tmp / f"{name}.yaml"
        path.write_text("model: {family: transformer, vocab_size: 256, d_model: 32, n_layers: 2, n_heads: 2}\n")
    else:
        path = ROOT / "configs" / base
    cfg = config.load(path, [*LONG, f"data.cache_dir={tmp / 'cache'}", *extra])
    train(cfg, tmp / name)
    return EvalContext(tmp / name, "latest", 0, dict(SMALL))


@pytest.fixture(scope="module")
def kssm(tmp_path_factory):
    return _run(tmp_path_factory.mktemp("kssm"), "kssm", "kssm_v3_tiny.yaml", "train.carry_state=true")


@pytest.fixture(scope="module")
def local(tmp_path_factory):
    return _run(
        tmp_path_factory.mktemp("local"),
        "local",
        None,
        "model.attention=local",
        "model.window=5",
        "train.carry_state=true",
    )


@pytest.fixture(scope="module")
def dense(tmp_path_factory):
    return _run(tmp_path_factory.mktemp("dense"), "dense", None)


# ----------------------------------------------------------------------------- buckets
def test_bucket_arithmetic_matches_a_hand_count():
    edges = bucket_edges([10, 50, 0])
    assert edges == [(0, 10), (10, 50), (50, None)]
    assert [bucket_label(lo, hi) for lo, hi in bucket_edges([256, 1024, 4096, 16384])] == [
        "0-256",
        "256-1k",
        "1k-4k",
        "4k-16k",
        "16k+",
    ]
    # two documents of 101 bytes: targets at offsets 1 … 100; NLL of the target at offset o is o (row 0), 2o (row 1)
    offsets = np.arange(1, 101, dtype=np.float64)
    nll = np.stack([offsets, 2 * offsets])
    mask = np.ones_like(nll)
    mask[1, 90:] = 0  # row 1's offsets 91 … 100 are padding
    sums = bucket_sums(nll, mask, edges)
    # offsets 1…9: 9 + 9 tokens; 10…49: 40 + 40; 50…100: 51 + 41
    assert [n for _, n in sums] == [18, 80, 92]
    assert sums[0][0] == pytest.approx(3 * sum(range(1, 10)))
    assert sums[1][0] == pytest.approx(3 * sum(range(10, 50)))
    assert sums[2][0] == pytest.approx(sum(range(50, 101)) + 2 * sum(range(50, 91)))
    table = position_table(nll, mask, edges)
    assert table["tokens"] == {"0-10": 18, "10-50": 80, "50+": 92}
    assert table["buckets"]["0-10"] == pytest.approx(3 * 45 / (18 * np.log(2)))
    assert table["all"] == pytest.approx(float((nll * mask).sum()) / (190 * np.log(2)))
    assert position_table(nll[:, :5], mask[:, :5], edges)["buckets"]["50+"] is None  # an empty bucket


# ----------------------------------------------------------------------------- the recall probe
LINES = lp.code_lines(
    [np.frombuffer(b"".join(b"x%d = compute(%d)\n    return x\n" % (i, i) for i in range(200)), np.uint8)]
)


def test_probe_pairs_sit_in_window_zero_and_queries_exactly_d_windows_later():
    distances, pairs, window = [1, 2, 4], 2, 256
    row = lp.probe_row(LINES, window, distances, pairs, seed=3, row=0)
    assert len(row.tokens) == (max(distances) + 1) * window + 1
    text = bytes(row.tokens.astype(np.uint8))
    assert len(row.definitions) == len(distances) * pairs
    for pos, key, value in row.definitions:
        line = lp.definition_line(key, value)
        start = pos - lp.DEFINITION_VALUE_AT
        assert text[start : start + len(line)] == line and start + len(line) <= window  # whole, in window 0
        assert text[start - 1 : start] in (b"", b"\n")  # at a line start
    per = {d: [q for q in row.queries if q.distance == d] for d in distances}
    assert all(len(qs) == pairs for qs in per.values())
    defined = {v: k for _, k, v in row.definitions}
    for q in row.queries:
        start = q.value_start - lp.QUERY_VALUE_AT
        line = lp.query_line(defined[q.value], q.value)
        assert text[start : start + len(line)] == line
        assert q.distance * window <= start and start + len(line) <= (q.distance + 1) * window
        # the identifier occurs exactly twice: its definition in window 0 and this query
        ident = defined[q.value] + b"_" + q.value
        assert text.count(ident) == 2 and text.index(ident) < window
    # keys and values are distinct, drawn from a–z; queries of different distances ask different keys
    assert len(set(defined)) == len(defined) == len({k for k in defined.values()})
    assert all(set(v) <= set(lp.ALPHABET) for v in defined)
    # filler windows (3) hold no identifier
    assert not any((d + b"_" + v) in text[3 * window : 4 * window] for v, d in ((v, k) for v, k in defined.items()))


def test_probe_levels_are_chance_and_the_guess_among_present_values():
    row = lp.probe_row(LINES, 256, [1, 2], 2, seed=0, row=5)
    levels = lp.levels([row])
    values = [v for _, _, v in row.definitions]
    for d in (1, 2):
        qs = [q for q in row.queries if q.distance == d]
        assert levels[d]["chance_first"] == pytest.approx(1 / 26)
        assert levels[d]["chance_all"] == pytest.approx(26.0**-4)
        assert levels[d]["guess_all"] == pytest.approx(1 / 4)
        hand = np.mean([sum(v[0] == q.value[0] for v in values) / 4 for q in qs])
        assert levels[d]["guess_first"] == pytest.approx(hand)


def test_probe_scoring_counts_value_bytes():
    rows = [lp.probe_row(LINES, 128, [1, 2], 1, seed=1, row=r) for r in range(3)]
    tokens = np.stack([r.tokens for r in rows])
    oracle = tokens[:, 1:]  # the prediction at p is byte p + 1
    s = lp.score(rows, oracle)
    assert all(s[d]["first"] == 1.0 and s[d]["all"] == 1.0 and s[d]["queries"] == 3 for d in (1, 2))
    wrong_last = oracle.copy()
    for r, row in enumerate(rows):
        for q in row.queries:
            wrong_last[r, q.value_start - 1 + lp.VALUE_LEN - 1] = -1  # the last value byte wrong
    s = lp.score(rows, wrong_last)
    assert all(s[d]["first"] == 1.0 and s[d]["all"] == 0.0 for d in (1, 2))
    assert lp.score(rows, np.full_like(oracle, -1))[1]["first"] == 0.0


def test_probe_is_deterministic_per_seed_and_refuses_what_does_not_fit():
    a = lp.probe_row(LINES, 128, [1, 2], 1, seed=7, row=2)
    b = lp.probe_row(LINES, 128, [1, 2], 1, seed=7, row=2)
    c = lp.probe_row(LINES, 128, [1, 2], 1, seed=8, row=2)
    assert np.array_equal(a.tokens, b.tokens) and a.queries == b.queries
    assert not np.array_equal(a.tokens, c.tokens)
    with pytest.raises(ValueError, match="do not fit a window of 64"):
        lp.probe_row(LINES, 64, [1, 2, 4], 1, seed=0, row=0)
    with pytest.raises(ValueError, match="distances must be"):
        lp.probe_row(LINES, 256, [0, 1], 1, seed=0, row=0)


# ----------------------------------------------------------------------------- readers
def test_the_carried_reader_is_the_scan_of_the_state_api_and_alone_is_state_none(kssm):
    """Reader.carried (a loop of jitted windows) = spiraljax.state.stream (one lax.scan); Reader.alone
    (windows batched as rows) = each window applied alone."""
    model, variables = kssm.model, kssm.variables
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, 256, (2, 3 * T + 1)).astype(np.int32)
    reader = Reader(model, variables, kssm.step)
    nll, pred = reader.carried(tokens, T)
    logits, _ = stream(model, variables, jnp.asarray(tokens[:, :-1]), T, train=False, step=kssm.step)
    np.testing.assert_allclose(nll, np.asarray(token_nll(logits, tokens[:, 1:])), rtol=1e-5, atol=1e-5)
    assert np.array_equal(pred, np.asarray(jnp.argmax(logits, -1)))
    alone, _ = reader.alone(tokens, T, batch=4)
    for k in range(3):
        lg, _ = model.apply(variables, tokens[:, k * T : (k + 1) * T], train=False, step=kssm.step)
        expected = np.asarray(token_nll(lg, tokens[:, k * T + 1 : (k + 1) * T + 1]))
        np.testing.assert_allclose(alone[:, k * T : (k + 1) * T], expected, rtol=1e-5, atol=1e-5)
    only, opred = reader.alone(tokens, T, batch=4, only=[1])
    np.testing.assert_allclose(only[:, T : 2 * T], alone[:, T : 2 * T], rtol=1e-6)
    assert (opred[:, :T] == -1).all() and (only[:, 2 * T :] == 0).all()


class _NoState:
    """A model with no carried state (no initial_state)."""

    def __init__(self, model):
        self.model = model

    def apply(self, *args, **kwargs):
        return self.model.apply(*args, **kwargs)


def test_carried_differs_from_reset_only_for_a_stateful_model(kssm):
    rng = np.random.default_rng(1)
    tokens = rng.integers(32, 127, (2, 4 * T + 1)).astype(np.int32)
    edges = bucket_edges([T + 1, 2 * T])
    table, raw = by_position(Reader(kssm.model, kssm.variables, kssm.step), tokens, T, edges, 4)
    # the first window is the same reading either way; later windows differ once a state is carried
    np.testing.assert_allclose(raw["carried"][:, :T], raw["reset"][:, :T], rtol=1e-5, atol=1e-5)
    assert not np.allclose(raw["carried"][:, T:], raw["reset"][:, T:], atol=1e-4)
    b = table["buckets"]
    assert set(b["0-65"]) >= {"carried", "reset", "gap", "tokens"} and b["0-65"]["tokens"] == 2 * T
    assert b["0-65"]["carried"] == pytest.approx(b["0-65"]["reset"], abs=1e-5)
    assert abs(b["128+"]["gap"]) > 1e-4
    plain, raw = by_position(Reader(_NoState(kssm.model), kssm.variables, kssm.step), tokens, T, edges, 4)
    assert np.array_equal(raw["carried"], raw["reset"])
    assert all(x["gap"] == 0.0 for x in plain["buckets"].values())


# ----------------------------------------------------------------------------- the suite
def test_suite_on_a_carried_kssm_run(kssm):
    data = long_context(kssm)
    assert data["stateful"] and data["window"] == T and len(data["docs"]) == 2
    b = data["position"]["buckets"]
    assert list(b) == ["0-64", "64-256", "256+"]
    assert [b[k]["tokens"] for k in b] == [2 * 63, 2 * 192, 2 * 768]
    assert b["0-64"]["gap"] == pytest.approx(0.0, abs=1e-5)  # offsets 1 … 63: window 0 either way
    assert data["extrapolation"]["skipped"].startswith("attention families only")
    rc = data["recall"]
    assert rc["distances"] == [1, 2] and all(rc["by_distance"][d]["queries"] == 3 for d in ("1", "2"))
    assert {"carried", "reset", "chance_first", "guess_first"} <= set(rc["by_distance"]["1"])
    again = long_context(kssm)
    assert again["position"] == data["position"] and again["recall"] == data["recall"]  # deterministic
    json.dumps(data)


def test_local_attention_with_its_cache_reads_every_length_alike(local):
    """Local attention (w = 5) with a cache of w − 1 keys is exact for any windowing, so its BPC is the
    same at every evaluation length; without the cache, longer windows reset less often."""
    data = long_context(local)
    ex = data["extrapolation"]
    assert ex["lengths"] == [32, 64, 128] and "2048" in ex["skipped"] and ex["trained_length"] == T
    at = {n: ex["by_length"][str(n)] for n in ex["lengths"]}
    for n in (32, 128):
        assert at[n]["carried"]["all"] == pytest.approx(at[T]["carried"]["all"], abs=1e-4)
    assert at[32]["reset"]["all"] != pytest.approx(at[32]["carried"]["all"], abs=1e-4)
    # at the trained length the extrapolation reuses the bucket reading of the same bytes
    tokens = np.stack([np.asarray(d[:512], np.int32) for d in local.dataset.documents("val") if len(d) >= 1024][:1])
    fresh = Reader(local.model, local.variables, local.step).carried(tokens, T)[0]
    edges = bucket_edges([64, 256])
    assert position_table(fresh, np.ones_like(fresh), edges)["all"] == pytest.approx(at[T]["carried"]["all"], rel=1e-6)


def test_suite_writes_its_plots(dense):
    ctx = EvalContext(dense.run_dir, "latest", 0, {**SMALL, "plots": "true", "lengths": "64,128"})
    data = long_context(ctx)
    names = {"long_context_position", "long_context_gap", "long_context_extrapolation", "long_context_recall"}
    assert set(data["plots"]) == names
    assert all((dense.run_dir / "plots" / f"{n}.png").stat().st_size > 0 for n in names)


def test_evaluate_cli_runs_the_suite_and_refuses_in_one_line(dense, capsys):
    import runpy

    cli = runpy.run_path(str(ROOT / "evaluate.py"), run_name="evaluate_cli")
    opts = [f"{k}={v}" for k, v in {**SMALL, "lengths": "64"}.items()]
    assert (
        cli["main"]([str(dense.run_dir), "--suite", "long_context", "--checkpoint", "latest", "--json", "--opt", *opts])
        == 0
    )
    out = json.loads(capsys.readouterr().out)["long_context"]
    assert set(out["position"]["buckets"]["0-64"]) >= {"carried", "reset", "tokens"}
    assert cli["main"]([str(dense.run_dir), "--suite", "long_context", "--opt", "doc_bytes=99999"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --opt doc_bytes=99999: no validation document is that long") and "\n" not in err
    assert cli["main"]([str(dense.run_dir), "--suite", "long_context", "--opt", "buckets=a"]) == 2
    assert "expects comma-separated whole numbers" in capsys.readouterr().err
    assert cli["main"]([str(dense.run_dir), "--suite", "long_context", "--opt", *opts, "pairs=9"]) == 2
    assert "do not fit a window of 64" in capsys.readouterr().err


def test_the_default_document_length_shrinks_to_what_the_corpus_has(kssm):
    """The 4 KB shakespeare segments are shorter than the default doc_bytes (32768): the default takes
    the longest validation documents, cut to the shortest of them; an asked doc_bytes is refused."""
    ctx = EvalContext(kssm.run_dir, "latest", 0, {"docs": "3", "lengths": "", "probe_rows": "0", "plots": "false"})
    data = long_context(ctx)
    assert data["doc_bytes"] == 4096 and len(data["docs"]) == 3


def test_the_suite_fits_longdocs_runs_only(tmp_path, capsys):
    import runpy

    cli = runpy.run_path(str(ROOT / "evaluate.py"), run_name="evaluate_cli")
    run = tmp_path / "text"
    run.mkdir()
    config.save(config.load(ROOT / "configs" / "transformer_tiny.yaml"), run / "config.yaml")
    assert cli["main"]([str(run), "--suite", "long_context"]) == 2
    assert "it needs a model trained on data.source longdocs" in capsys.readouterr().err
