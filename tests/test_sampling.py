"""Sampling: top-k / top-p / temperature filtering, and the one sampler (spiraljax.eval.sampler).

The sampler tests compare against reference loops copied from the pre-sampler implementation
(two per-model jit caches), so the refactor cannot change a single sampled token.
"""

import gc
import weakref

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from spiraljax import config, models
from spiraljax.data import glyphs
from spiraljax.eval.contemplative import ContemplativeSettings, contemplative_generate, contemplative_sampler, entropy
from spiraljax.eval.generation import generate_streaming, sample_text
from spiraljax.eval.sampler import SamplePolicy, Sampler, filter_logits, sample_token
from spiraljax.ops.soma import field_charge, resonance_label

ROOT = config.PROJECT_ROOT
SMALL = ["model.d_model=32", "model.n_heads=2", "model.n_layers=2", "model.seq_len=32"]
V = 50


def random_logits(seed: int, b: int = 4, v: int = V) -> np.ndarray:
    return np.asarray(2.0 * jax.random.normal(jax.random.key(seed), (b, v)))


def kept(filtered) -> list[set[int]]:
    """Indices left finite, per row."""
    return [set(np.flatnonzero(np.isfinite(row)).tolist()) for row in np.asarray(filtered)]


# --- filtering ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("k", [1, 3, 10, V - 1])
def test_top_k_keeps_exactly_the_k_largest(k):
    logits = random_logits(k)
    out = np.asarray(filter_logits(jnp.asarray(logits), top_k=k))
    for row, got in zip(logits, kept(out)):
        assert got == set(np.argsort(-row)[:k].tolist())
    np.testing.assert_array_equal(out[np.isfinite(out)], logits[np.isfinite(out)].astype(np.float32))
    assert (out[~np.isfinite(out)] == -np.inf).all()


def nucleus(row: np.ndarray, p: float) -> set[int]:
    """Brute force: the most probable tokens, fewest first, until their mass reaches ``p``."""
    probs = np.exp(row - row.max())
    probs /= probs.sum()
    order = np.argsort(-probs)
    mass = np.cumsum(probs[order])
    assert np.abs(mass - p).min() > 1e-4, "p too close to a cumulative mass for a float32 comparison"
    return set(order[: int(np.argmax(mass >= p)) + 1].tolist())


@pytest.mark.parametrize("p", [0.05, 0.3, 0.62, 0.9, 0.99])
def test_top_p_keeps_the_smallest_set_with_mass_at_least_p(p):
    logits = random_logits(7)
    out = filter_logits(jnp.asarray(logits), top_p=p)
    for row, got in zip(logits, kept(out)):
        assert got == nucleus(row, p)


@pytest.mark.parametrize("p", [1e-9, 0.0])
def test_top_p_always_keeps_the_argmax(p):
    logits = random_logits(3)
    assert kept(filter_logits(jnp.asarray(logits), top_p=p)) == [{int(i)} for i in logits.argmax(-1)]


def test_top_k_then_top_p_is_the_nucleus_of_the_top_k():
    logits = random_logits(11)
    out = filter_logits(jnp.asarray(logits), top_k=8, top_p=0.7)
    for row, got in zip(logits, kept(out)):
        top = np.argsort(-row)[:8]
        sub = np.full_like(row, -np.inf)
        sub[top] = row[top]
        assert got == nucleus(sub, 0.7)


@pytest.mark.parametrize("kwargs", [{}, {"top_k": 0}, {"top_p": 1.0}, {"top_k": V}, {"top_k": V + 5}])
def test_k0_p1_and_k_at_least_v_are_no_ops(kwargs):
    logits = random_logits(5)
    np.testing.assert_array_equal(filter_logits(jnp.asarray(logits), **kwargs), logits.astype(np.float32))


def test_temperature_scales_logits():
    logits = random_logits(6)
    np.testing.assert_allclose(filter_logits(jnp.asarray(logits), temperature=0.5), 2 * logits, rtol=1e-6)


@pytest.mark.parametrize("temperature", [0.0, 1e-3])
def test_temperature_towards_zero_is_argmax(temperature):
    logits = jnp.asarray(random_logits(8, b=16))
    for seed in range(5):
        got = sample_token(jax.random.key(seed), logits, temperature=temperature)
        np.testing.assert_array_equal(got, np.asarray(logits).argmax(-1))


def test_sampling_follows_the_filtered_distribution():
    """top-k=3: only the 3 largest are ever drawn, at frequencies close to their renormalised softmax."""
    logits = jnp.asarray(random_logits(9, b=1))
    keys = jax.random.split(jax.random.key(0), 4000)
    draws = np.asarray(jax.vmap(lambda k: sample_token(k, logits, top_k=3)[0])(keys))
    top = np.argsort(-np.asarray(logits[0]))[:3]
    assert set(np.unique(draws).tolist()) <= set(top.tolist())
    probs = np.asarray(jax.nn.softmax(logits[0, top]))
    np.testing.assert_allclose([np.mean(draws == t) for t in top], probs, atol=0.03)


# --- reference loops (the pre-sampler implementation, verbatim in behaviour) -------------------------


def reference_generate(
    model, variables, prompt, n_new, key, seq_len, temperature=1.0, top_k=0, top_p=1.0, step=0, **extras
):
    @jax.jit
    def next_token(window, pos, key, extras):
        logits, _ = model.apply(variables, window, train=False, step=step, **extras)
        last = jax.lax.dynamic_index_in_dim(logits, pos, axis=1, keepdims=False)
        return jax.random.categorical(key, filter_logits(last, temperature, top_k, top_p), axis=-1)

    b, p = prompt.shape
    total = np.zeros((b, p + n_new), np.int32)
    total[:, :p] = prompt
    for i in range(p, p + n_new):
        start = max(0, i - seq_len)
        window = np.zeros((b, seq_len), np.int32)
        window[:, : i - start] = total[:, start:i]
        total[:, i] = np.asarray(next_token(jnp.asarray(window), i - start - 1, jax.random.fold_in(key, i), extras))
    return total


def reference_decide(key, logits, run, active, urgent, s):
    is_silent_vocab = jnp.zeros(logits.shape[-1], bool).at[jnp.asarray(glyphs.SILENCE_IDS)].set(True)
    logits = logits.at[:, glyphs.PAD_ID].set(-jnp.inf)
    must_speak = (run >= s.max_silence_run) | (urgent & (active < s.min_active_urgent))
    speak = jnp.where(is_silent_vocab[None, :], -jnp.inf, logits)
    sampled = jax.random.categorical(
        key, filter_logits(jnp.where(must_speak[:, None], speak, logits), s.temperature, s.top_k, s.top_p), axis=-1
    )
    gated = (entropy(logits) > s.threshold) & ~must_speak
    return jnp.where(gated, glyphs.SILENCE_ID, sampled), gated


def reference_contemplative(model, variables, conditions, n_new, key, seq_len, s, step=0):
    conditions = jnp.asarray(conditions, jnp.float32)
    b = conditions.shape[0]
    urgent = resonance_label(field_charge(conditions)) == 1

    @jax.jit
    def step_fn(window, pos, rng, run, active):
        logits, _ = model.apply(variables, window, train=False, step=step, conditions=conditions)
        return reference_decide(
            rng, jax.lax.dynamic_index_in_dim(logits, pos, axis=1, keepdims=False), run, active, urgent, s
        )

    total = np.zeros((b, 1 + n_new), np.int32)
    run, active = np.zeros(b, np.int32), np.zeros(b, np.int32)
    gated_all = np.zeros((b, n_new), bool)
    for i in range(1, 1 + n_new):
        start = max(0, i - seq_len)
        window = np.zeros((b, seq_len), np.int32)
        window[:, : i - start] = total[:, start:i]
        tok, gated = step_fn(
            jnp.asarray(window), i - start - 1, jax.random.fold_in(key, i), jnp.asarray(run), jnp.asarray(active)
        )
        tok = np.asarray(tok)
        total[:, i], gated_all[:, i - 1] = tok, np.asarray(gated)
        silent = glyphs.is_silence(tok)
        run = np.where(silent, run + 1, 0)
        active = active + (~silent).astype(np.int32)
    return total, gated_all


@pytest.fixture(scope="module")
def glyph_model():
    cfg = config.load(ROOT / "configs" / "spiralformer_femto.yaml", SMALL)
    model = models.build(cfg.model)
    variables = model.init(jax.random.key(0), jax.random.randint(jax.random.key(1), (2, 32), 0, glyphs.VOCAB_SIZE))
    cond = np.array([[0.1, 0.5, 0.5, 0.0, 0.9], [0.99, 0.5, 0.5, 0.1, 0.0]], np.float32)  # calm, urgent
    return cfg, model, variables, cond


@pytest.fixture(scope="module")
def byte_model():
    cfg = config.load(ROOT / "configs" / "hebbian_tiny.yaml")
    model = models.build(cfg.model)
    return cfg, model, model.init(jax.random.key(1), jax.random.randint(jax.random.key(0), (2, 32), 0, 256))


def test_window_sampling_matches_the_reference_loop(glyph_model):
    """40 new tokens after a 3-token prompt: the window slides past seq_len=32."""
    _, model, variables, cond = glyph_model
    prompt = np.array([[3, 5, 7], [9, 11, 13]], np.int32)
    kw = dict(step=3, conditions=jnp.asarray(cond))
    sampled, _ = Sampler(model, SamplePolicy(0.8, 10, 0.9), 32)(variables, prompt, 40, jax.random.key(4), **kw)
    reference = reference_generate(model, variables, prompt, 40, jax.random.key(4), 32, 0.8, 10, 0.9, **kw)
    np.testing.assert_array_equal(sampled, reference)


def test_contemplative_matches_the_reference_loop(glyph_model):
    _, model, variables, cond = glyph_model
    s = ContemplativeSettings(threshold=3.5, top_k=20)  # a threshold that gates some steps, not all
    ids, gated = contemplative_generate(model, variables, cond, 40, jax.random.key(2), 32, s, step=2)
    ref_ids, ref_gated = reference_contemplative(model, variables, cond, 40, jax.random.key(2), 32, s, step=2)
    np.testing.assert_array_equal(ids, ref_ids)
    np.testing.assert_array_equal(gated, ref_gated)
    assert 0 < gated.mean() < 1


def test_streaming_matches_the_window_sampler_on_the_same_keys(byte_model):
    """The streaming and window paths draw token i with fold_in(key, i) from the same logits."""
    cfg, model, variables = byte_model
    prompt = np.arange(12, dtype=np.int32).reshape(2, 6) + 40
    streamed = generate_streaming(model, variables, prompt, 10, jax.random.key(3), 0.9, 20, 0.95, step=5)
    assert streamed.shape == (2, 16) and (streamed[:, :6] == prompt).all()
    full = model.apply(variables, jnp.asarray(streamed), step=5)[0]  # causal: position t predicts t + 1
    draw = jax.jit(lambda i, logits: sample_token(jax.random.fold_in(jax.random.key(3), i), logits, 0.9, 20, 0.95))
    for i in range(6, 16):
        np.testing.assert_array_equal(streamed[:, i], draw(i, full[:, i - 1]))


class DigitTokenizer:
    """A stand-in dataset: text of digits ↔ ids."""

    def encode(self, text: str) -> np.ndarray:
        return np.array([int(c) for c in text], np.int32)

    def decode(self, ids) -> str:
        return ",".join(str(int(i)) for i in ids)


def test_sample_text_decodes_the_sampled_ids(glyph_model):
    cfg, model, variables, _ = glyph_model
    text = sample_text(model, variables, DigitTokenizer(), cfg, jax.random.key(1), n_tokens=6, prompt_text="3141")
    ids = reference_generate(
        model,
        variables,
        np.array([[3, 1, 4, 1]], np.int32),
        6,
        jax.random.key(1),
        cfg.model.seq_len,
        cfg.eval.temperature,
        cfg.eval.top_k,
        cfg.eval.top_p,
    )
    assert text == DigitTokenizer().decode(ids[0])


# --- one compile per sampler, no global caches --------------------------------------------------------


class CountingPolicy:
    """Plain sampling that counts how often it is traced."""

    def __init__(self):
        self.traces = 0
        self.inner = SamplePolicy()

    def __call__(self, key, logits, state):
        self.traces += 1
        return self.inner(key, logits, state)


def test_window_step_is_traced_once_per_sampler(glyph_model):
    _, model, variables, _ = glyph_model
    policy = CountingPolicy()
    sampler = Sampler(model, policy, 8)  # window 8 < 12 tokens: full and sliding windows, one trace
    ids, flags = sampler(variables, np.ones((2, 2), np.int32), 10, jax.random.key(0))
    assert ids.shape == (2, 12) and not flags.any()
    assert policy.traces == 1
    sampler(variables, np.ones((2, 2), np.int32), 10, jax.random.key(1))  # reuse: no new compile
    assert policy.traces == 1


def test_streaming_step_is_traced_once_per_sampler(byte_model):
    _, model, variables = byte_model
    policy = CountingPolicy()
    ids, _ = Sampler(model, policy)(variables, np.ones((2, 5), np.int32), 10, jax.random.key(0))
    assert ids.shape == (2, 15) and policy.traces == 1


def test_generation_does_not_keep_the_model_alive(glyph_model):
    """No module-level cache keyed by ``id(model)``: once the caller drops a model, it is freed."""
    cfg, _, variables, _ = glyph_model
    model = models.build(cfg.model)  # a fresh module only this test holds
    Sampler(model, SamplePolicy(), 32)(variables, np.ones((1, 1), np.int32), 2, jax.random.key(0))
    contemplative_generate(model, variables, np.full((1, 5), 0.5, np.float32), 2, jax.random.key(0), 32)
    ref = weakref.ref(model)
    del model
    gc.collect()
    assert ref() is None


def test_streaming_sampler_rejects_model_extras(byte_model):
    _, model, variables = byte_model
    with pytest.raises(ValueError, match="extras"):
        Sampler(model, SamplePolicy())(variables, np.ones((1, 4), np.int32), 2, jax.random.key(0), conditions=1.0)


def test_a_reused_sampler_gives_the_same_samples_and_must_match_the_settings(glyph_model):
    cfg, model, variables, cond = glyph_model
    s = ContemplativeSettings(threshold=3.5)
    sampler = contemplative_sampler(model, 32, s)
    for seed in (0, 1):
        fresh = contemplative_generate(model, variables, cond, 5, jax.random.key(seed), 32, s)
        reused = contemplative_generate(model, variables, cond, 5, jax.random.key(seed), 32, s, sampler=sampler)
        for a, b in zip(fresh, reused):
            np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="settings"):
        contemplative_generate(
            model, variables, cond, 5, jax.random.key(0), 32, ContemplativeSettings(), sampler=sampler
        )
    with pytest.raises(ValueError, match="settings"):
        sample_text(
            model,
            variables,
            DigitTokenizer(),
            cfg,
            jax.random.key(0),
            n_tokens=2,
            prompt_text="1",
            sampler=Sampler(model, SamplePolicy(temperature=0.123), cfg.model.seq_len),
        )
