import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import assert_future_independent
from spiraljax import config, models
from spiraljax.data import glyphs
from spiraljax.data.mycelial import generate_records, main as datagen_main
from spiraljax.eval.contemplative import ContemplativeSettings, _decide, contemplative_generate
from spiraljax.nn.lora import merge_lora, unmerge_lora
from spiraljax.ops.soma import field_charge, resonance_label
from spiraljax.ops.tower import tower_init, tower_read, tower_write

ROOT = config.PROJECT_ROOT
SMALL = ["model.d_model=32", "model.n_heads=2", "model.n_layers=2", "model.seq_len=32"]


def random_glyphs(key, b=2, t=32):
    return jax.random.randint(key, (b, t), 0, glyphs.VOCAB_SIZE)


@pytest.mark.parametrize("name", ["femto", "piko", "nano"])
def test_future_tokens_do_not_change_past_logits(name):
    cfg = config.load(ROOT / "configs" / f"spiralformer_{name}.yaml")
    model = models.build(cfg.model)
    tokens = random_glyphs(jax.random.key(0))
    cond = jax.random.uniform(jax.random.key(1), (2, 5))
    variables = model.init(jax.random.key(2), tokens)
    f = jax.jit(lambda t: model.apply(variables, t, conditions=cond)[0])
    # inside and across breath cycles (12 positions), so TowerMemory reads are covered too
    assert_future_independent(f, tokens, (0, 5, 13, 30), glyphs.VOCAB_SIZE)


def test_smeared_keys_are_a_config_field_and_stay_causal():
    """model.smear_keys reaches every SpiralBlock (one smear logit per head and layer) and keeps the model causal."""
    plain = config.load(ROOT / "configs" / "spiralformer_femto.yaml", SMALL + ["model.memory.enabled=false"])
    smeared = config.load(
        ROOT / "configs" / "spiralformer_femto.yaml", SMALL + ["model.memory.enabled=false", "model.smear_keys=true"]
    )
    tokens = random_glyphs(jax.random.key(5))
    counts = []
    for cfg in (plain, smeared):
        variables = models.build(cfg.model).init(jax.random.key(0), tokens)
        counts.append(sum(x.size for x in jax.tree.leaves(variables["params"])))
    assert counts[1] - counts[0] == 2 * 2  # n_layers x n_heads
    model = models.build(smeared.model)
    variables = jax.tree.map(lambda x: x + 0.5, model.init(jax.random.key(0), tokens))  # smear gates away from 1/2
    f = jax.jit(lambda t: model.apply(variables, t)[0])
    assert_future_independent(f, tokens, (0, 7, 20), glyphs.VOCAB_SIZE)


def test_sparse_and_dense_model_agree_and_conditions_matter():
    assert config.load(ROOT / "configs" / "spiralformer_femto.yaml", SMALL).model.spiral.impl == "auto"  # default
    cfg = config.load(ROOT / "configs" / "spiralformer_femto.yaml", SMALL + ["model.spiral.impl=sparse"])
    dense_cfg = config.load(ROOT / "configs" / "spiralformer_femto.yaml", SMALL + ["model.spiral.impl=dense"])
    model, dense = models.build(cfg.model), models.build(dense_cfg.model)
    tokens = random_glyphs(jax.random.key(3))
    variables = model.init(jax.random.key(0), tokens)
    a, aux = model.apply(variables, tokens)
    b, _ = dense.apply(variables, tokens)
    np.testing.assert_allclose(a, b, atol=1e-5)
    c, _ = model.apply(variables, tokens, conditions=jnp.ones((2, 5)))
    assert not np.allclose(a, c)
    assert np.isfinite(a).all() and aux["breath_weight"].shape == (2, 32)


def test_zero_dropout_rates_draw_no_rng_and_nonzero_rates_still_drop():
    """breath.dropout all 0 (the default): the blocks draw no dropout RNG at all (a zero rate keeps every
    unit, so the output is what the draw would have given); any non-zero rate draws and drops."""
    tokens = random_glyphs(jax.random.key(6))
    zero = models.build(config.load(ROOT / "configs" / "spiralformer_femto.yaml", SMALL).model)
    variables = zero.init(jax.random.key(0), tokens)
    sample = {"sample": jax.random.key(1)}
    no_stream, _ = zero.apply(variables, tokens, train=True, rngs=sample)  # no "dropout" stream needed
    with_stream, _ = zero.apply(variables, tokens, train=True, rngs={**sample, "dropout": jax.random.key(2)})
    np.testing.assert_array_equal(no_stream, with_stream)
    some = models.build(
        config.load(
            ROOT / "configs" / "spiralformer_femto.yaml", SMALL + ["model.breath.dropout=[0.5,0.0,0.5,0.0]"]
        ).model
    )
    with pytest.raises(Exception, match="dropout"):
        some.apply(variables, tokens, train=True, rngs=sample)
    a, _ = some.apply(variables, tokens, train=True, rngs={**sample, "dropout": jax.random.key(2)})
    b, _ = some.apply(variables, tokens, train=True, rngs={**sample, "dropout": jax.random.key(3)})
    assert not np.allclose(a, b) and not np.allclose(a, no_stream)


def test_pause_positions_skip_blocks_and_forcing_changes_output():
    cfg = config.load(ROOT / "configs" / "spiralformer_femto.yaml", SMALL + ["model.memory.enabled=false"])
    model = models.build(cfg.model)
    tokens = random_glyphs(jax.random.key(4))
    variables = model.init(jax.random.key(0), tokens)
    logits, aux = model.apply(variables, tokens)
    zero, _ = model.apply(variables, tokens, force_breath_weight=0.0)
    pause = np.asarray(aux["breath_weight"][0]) == 0.0
    assert pause.sum() > 0
    np.testing.assert_allclose(logits[:, pause], zero[:, pause], atol=1e-5)  # pause = residual only
    assert not np.allclose(logits[:, ~pause], zero[:, ~pause])
    gated, _ = model.apply(variables, tokens, force_silence_gate=0.0)
    assert not np.allclose(gated, logits)


def test_silence_heavy_input_is_finite_and_gated():
    cfg = config.load(ROOT / "configs" / "spiralformer_femto.yaml", SMALL)
    model = models.build(cfg.model)
    tokens = jnp.zeros((2, 32), jnp.int32).at[0, 5].set(glyphs.SILENCE_ID)  # nearly all PAD / silence
    variables = model.init(jax.random.key(0), tokens)
    logits, aux = model.apply(variables, tokens)
    assert np.isfinite(logits).all()
    assert float(aux["silence_gate"].max()) < 0.1  # fraction ≈ 1 → gate 1 − fraction ≈ 0


def test_codec_roundtrip_and_unknown_glyph():
    assert glyphs.VOCAB_SIZE == 65 and len(set(g.symbol for g in glyphs.GLYPHS)) == 65
    for cat in glyphs.CATEGORIES:
        assert len(glyphs.ids_of(cat)) == 16
    symbols = [g.symbol for g in glyphs.GLYPHS[1:]]
    assert glyphs.decode(glyphs.encode(symbols)) == symbols
    with pytest.raises(glyphs.GlyphError, match=r"unknown glyph '🦄' in record 7 at position 1"):
        glyphs.encode(["…", "🦄"], record=7)


def test_datagen_is_deterministic_and_valid(tmp_path):
    a, b = generate_records(50, seed=3, chaos_mode=True), generate_records(50, seed=3, chaos_mode=True)
    assert a == b and a != generate_records(50, seed=4, chaos_mode=True)
    for i, rec in enumerate(a):
        ids = glyphs.encode(rec["glyph_sequence"], record=i)
        assert len(rec["conditions"]) == 5 and all(0 <= c <= 1 for c in rec["conditions"])
        frac = glyphs.is_silence(ids).mean()
        assert 0.5 <= frac < 1.0  # silence-majority, never silence-only
    out = tmp_path / "d.jsonl"
    assert datagen_main(["--num_echoes", "5", "--seed", "1", "--output", str(out)]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 5 and set(rows[0]) == {
        "conditions",
        "glyph_sequence",
        "effectiveness",
        "metadata",
        "text_input",
    }


def test_soma_field_charge():
    c = field_charge(
        jnp.array(
            [[1.0, 0.5, 0.5, 0.0, 0.0], [0.0, 0.0, 0.5, 0.0, 1.0], [0.0, 0.5, 1.0, 1.0, 1.0], [0.0, 0.0, 1.0, 1.0, 1.0]]
        )
    )
    np.testing.assert_allclose(c, [[0.25, 1.0], [0.0, 0.0], [1.0, 0.0], [0.75, 0.0]], atol=1e-6)
    assert np.asarray(resonance_label(c)).tolist() == [1, 3, 2, 0]


def test_tower_memory_retrieval_and_eviction():
    t = tower_init(1, 3, 2)
    for i, charge in enumerate([(0.1, 0.1), (0.9, 0.9), (0.5, 0.5)]):
        t = tower_write(t, jnp.array([[float(i + 1), 0.0]]), jnp.array([charge]), decay=0.5)
    t, content, found, slot = tower_read(t, jnp.array([[0.85, 0.95]]), threshold=0.3)  # charge only
    assert bool(found[0]) and float(content[0, 0]) == 2.0 and int(slot[0]) == 1  # most resonant painting
    t2, _, none, no_slot = tower_read(t, jnp.array([[0.85, 0.95]]), threshold=1.01)
    assert not bool(none[0]) and int(no_slot[0]) == -1
    # full: the weakest (not the oldest) is evicted — painting 2 was re-strengthened by the read
    before = np.asarray(t["strength"][0]).copy()
    t = tower_write(t, jnp.array([[9.0, 0.0]]), jnp.array([[0.0, 0.0]]), decay=0.5)
    evicted = int(np.argmin(before))
    assert float(t["content"][0, evicted, 0]) == 9.0 and evicted != 1


def test_lora_zero_b_equals_base_and_merge_roundtrip():
    base_cfg = config.load(ROOT / "configs" / "spiralformer_femto.yaml", SMALL)
    lora_cfg = config.load(ROOT / "configs" / "spiralformer_femto.yaml", SMALL + ["model.lora_rank=4"])
    base, lora = models.build(base_cfg.model), models.build(lora_cfg.model)
    tokens = random_glyphs(jax.random.key(5))
    lv = lora.init(jax.random.key(0), tokens)

    def strip(p):
        return jax.tree.map(
            lambda x: x,
            {k: strip(v) if isinstance(v, dict) else v for k, v in p.items() if k not in ("lora_a", "lora_b")},
        )

    bv = {"params": strip(lv["params"])}
    np.testing.assert_allclose(lora.apply(lv, tokens)[0], base.apply(bv, tokens)[0], atol=1e-6)
    # a trained (non-zero) adapter changes the output; merging folds it into the kernels exactly
    trained = jax.tree_util.tree_map_with_path(
        lambda p, x: x + 0.05 if "lora_b" in jax.tree_util.keystr(p) else x, lv["params"]
    )
    out = lora.apply({"params": trained}, tokens)[0]
    assert not np.allclose(out, base.apply(bv, tokens)[0], atol=1e-4)
    scale = lora_cfg.model.lora_alpha / lora_cfg.model.lora_rank
    merged, saved = merge_lora(trained, scale)
    np.testing.assert_allclose(lora.apply({"params": merged}, tokens)[0], out, atol=1e-4)
    back = unmerge_lora(merged, saved, scale)
    for x, y in zip(jax.tree.leaves(back), jax.tree.leaves(trained)):
        np.testing.assert_allclose(x, y, atol=1e-5)


def test_lora_training_freezes_base(tmp_path):
    from spiraljax.train.optim import make_optimizer

    cfg = config.load(
        ROOT / "configs" / "spiralformer_femto.yaml",
        SMALL + ["model.lora_rank=2", "train.trainable=lora", "train.warmup_steps=0"],
    )
    model = models.build(cfg.model)
    params = model.init(jax.random.key(0), random_glyphs(jax.random.key(1)))["params"]
    tx = make_optimizer(cfg.train)
    grads = jax.tree.map(jnp.ones_like, params)
    updates, _ = tx.update(grads, tx.init(params), params)
    for path, u in jax.tree_util.tree_leaves_with_path(updates):
        assert (float(jnp.abs(u).max()) > 0) == ("lora" in jax.tree_util.keystr(path)), path


def test_generator_rules():
    s = ContemplativeSettings(threshold=0.7, max_silence_run=2, min_active_urgent=2)
    flat = jnp.zeros((3, glyphs.VOCAB_SIZE))  # maximal entropy → would always emit silence
    tok, gated = _decide(
        jax.random.key(0), flat, jnp.array([0, 2, 0]), jnp.array([0, 0, 0]), jnp.array([False, False, True]), s
    )
    tok = np.asarray(tok)
    assert tok[0] == glyphs.SILENCE_ID and bool(gated[0])  # uncertain → silence
    assert not glyphs.is_silence(tok[1:]).any()  # run of 2 → speak; urgent → speak
    assert (tok != glyphs.PAD_ID).all()


def test_generator_end_to_end_obeys_max_silence_run():
    cfg = config.load(ROOT / "configs" / "spiralformer_femto.yaml", SMALL)
    model = models.build(cfg.model)
    variables = model.init(jax.random.key(0), random_glyphs(jax.random.key(1)))
    cond = np.array([[0.1, 0.5, 0.5, 0.0, 0.9], [0.99, 0.5, 0.5, 0.1, 0.0]], np.float32)  # calm, urgent
    ids, gated = contemplative_generate(model, variables, cond, 12, jax.random.key(2), 32)
    silent = glyphs.is_silence(ids[:, 1:])
    for row in silent:
        runs = np.diff(np.flatnonzero(np.concatenate([[True], ~row, [True]]))) - 1
        assert runs.max() <= 2
    assert (~silent[1, :2]).all()  # urgent: the first two glyphs are active


def test_probe_runs_on_short_trained_checkpoint(tmp_path):
    from spiraljax.eval.suites import EvalContext, get_suite
    from spiraljax.train.loop import train

    cfg = config.load(
        ROOT / "configs" / "spiralformer_femto.yaml",
        SMALL
        + [
            "data.num_echoes=200",
            "train.steps=6",
            "train.batch_size=4",
            "train.eval_every=3",
            "eval.batches=1",
            "eval.batch_size=4",
            "train.progress=false",
            "eval.sample_tokens=4",
            "checkpoint.every=3",
        ],
    )
    train(cfg, tmp_path / "run")
    res = get_suite("probe").fn(
        EvalContext(tmp_path / "run", options={"tokens": "6", "samples": "1", "memory_sequences": "4"})
    )
    assert set(res.data["scenarios"]) == {
        "calm",
        "high_latency",
        "power_surge",
        "overheating",
        "packet_loss",
        "low_bandwidth",
        "multi_fault_crisis",
        "wisdom_question",
    }
    for row in res.data["scenarios"].values():
        assert 0.0 <= row["silence_ratio"] <= 1.0 and row["proportionality"] in ("High", "Moderate", "Low")
    assert "multi_fault_crisis" in res.text
