import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import assert_future_independent
from spiraljax import config, models
from spiraljax.data.base import build_dataset
from spiraljax.data.recall import mqar_batch
from spiraljax.models.hebbian import plasticity

ROOT = config.PROJECT_ROOT


@pytest.fixture(scope="module")
def tiny():
    cfg = config.load(ROOT / "configs" / "hebbian_tiny.yaml")
    model = models.build(cfg.model)
    tokens = jax.random.randint(jax.random.key(0), (2, 32), 0, 256)
    return cfg, model, model.init(jax.random.key(1), tokens), tokens


def test_future_bytes_do_not_change_past_logits_even_inside_a_patch(tiny):
    cfg, model, variables, tokens = tiny
    # every position, so every offset inside a patch is covered
    assert_future_independent(jax.jit(lambda t: model.apply(variables, t)[0]), tokens, range(31), 256, shift=5)


def test_scan_and_chunked_memory_give_the_same_model(tiny):
    cfg, model, variables, tokens = tiny
    scan_cfg = config.load(ROOT / "configs" / "hebbian_tiny.yaml", ["model.memory_impl=scan"])
    a = model.apply(variables, tokens)[0]
    b = models.build(scan_cfg.model).apply(variables, tokens)[0]
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


def test_fused_gru_head_equals_flax_grucell():
    """The head's precomputed input gates (table + one projection per patch) equal nn.GRUCell on the
    same parameters, outputs and gradients."""
    from spiraljax.nn.hebbian import LocalHead

    head = LocalHead(16)
    ctx = jax.random.normal(jax.random.key(0), (5, 8))
    prev = jax.random.randint(jax.random.key(1), (5, 4), 0, 257)
    params = head.init(jax.random.key(2), ctx, prev)
    assert jax.tree.structure(params) == jax.tree.structure(head.init(jax.random.key(2), ctx, prev, reference=True))
    loss = lambda p, ref: jnp.sum(jnp.sin(head.apply(p, ctx, prev, reference=ref)))  # noqa: E731
    np.testing.assert_allclose(head.apply(params, ctx, prev), head.apply(params, ctx, prev, reference=True), atol=1e-5)
    for a, b in zip(jax.tree.leaves(jax.grad(loss)(params, False)), jax.tree.leaves(jax.grad(loss)(params, True))):
        np.testing.assert_allclose(a, b, atol=1e-5)


def test_streaming_state_reproduces_the_full_pass(tiny):
    """Patch by patch through ``advance`` (carried fast weights + attention window, 8 patches >
    window 4) gives the same byte logits as one full pass — in one call and split in two."""
    cfg, model, variables, tokens = tiny
    p, step = cfg.model.patch, 7
    full = np.asarray(model.apply(variables, tokens, step=step)[0])
    advance = jax.jit(lambda toks, c: model.apply(variables, toks, c, step, method="advance"))
    logits_of = jax.jit(lambda ctx, patch: model.apply(variables, ctx, patch, method="patch_logits"))
    cache = model.apply(variables, 2, method="init_cache")
    context = model.apply(variables, 2, method="start_latent")
    streamed = []
    for q in range(tokens.shape[1] // p):
        patch = tokens[:, q * p : (q + 1) * p]
        streamed.append(np.asarray(logits_of(context, patch)))  # logits for bytes q·P … q·P+P−1
        context, cache = advance(patch, cache)
    streamed = np.concatenate(streamed, axis=1)  # byte j's logits = full logits at j − 1
    np.testing.assert_allclose(streamed[:, 1:], full[:, :-1], atol=1e-4)
    whole, _ = advance(tokens, model.apply(variables, 2, method="init_cache"))
    np.testing.assert_allclose(whole, context, atol=1e-4)  # multi-patch prefill == patch by patch


def test_streaming_generation_keeps_prompt_and_matches_window_sampler(tiny):
    from spiraljax.eval.generation import generate_streaming

    cfg, model, variables, tokens = tiny
    prompt = np.asarray(tokens[:, :6])  # one whole patch + 2 bytes
    out = generate_streaming(model, variables, prompt, 10, jax.random.key(3), top_k=1, step=5)
    assert out.shape == (2, 16) and (out[:, :6] == prompt).all()
    full = np.asarray(model.apply(variables, jnp.asarray(out), step=5)[0])
    np.testing.assert_array_equal(out[:, 6:], full[:, 5:-1].argmax(-1))  # greedy bytes = full-pass argmax


def test_plasticity_curriculum_and_forcing(tiny):
    cfg, model, variables, tokens = tiny
    stages = cfg.model.plasticity_stages
    got = [float(plasticity(s, stages, 100)) for s in (0, 14, 15, 39, 40, 99, 500)]
    assert got == pytest.approx([0.1, 0.1, 0.5, 0.5, 0.99, 0.99, 0.99])
    _, aux = model.apply(variables, tokens, step=0)
    assert float(aux["plasticity"]) == pytest.approx(0.1)
    assert aux["reasoning_update"].shape == (2,) and aux["decay"].shape == (2, 2)
    lo = model.apply(variables, tokens, force_plasticity=0.1)[0]
    hi = model.apply(variables, tokens, force_plasticity=0.99)[0]
    assert not np.allclose(lo, hi)


def test_recall_stats_forces_plasticity_into_the_model(tiny):
    """The recall suite's ``plasticity=`` option reaches the model: the α it reports is the forced one,
    not the curriculum's (0.1 at step 0)."""
    from spiraljax.data.recall import MQARDataConfig
    from spiraljax.eval.recall import recall_stats

    cfg, model, variables, _ = tiny
    data = MQARDataConfig(min_pairs=2, max_pairs=4)
    natural = recall_stats(model, variables, data, 32, n_batches=1, batch=2, step=0)
    assert natural["plasticity"] == pytest.approx(0.1)
    for alpha in (0.5, 1.0):
        got = recall_stats(model, variables, data, 32, n_batches=1, batch=2, step=0, force_plasticity=alpha)
        assert got["plasticity"] == pytest.approx(alpha)


def test_curriculum_data_switches_at_configured_steps(tmp_path):
    cfg = config.load(ROOT / "configs" / "hebbian_tiny.yaml", ["data.source=curriculum", "train.steps=100"])
    ds = build_dataset(cfg)
    assert [ds.stage(s) for s in (0, 14, 15, 39, 40, 99)] == [
        "words",
        "words",
        "sentences",
        "sentences",
        "full",
        "full",
    ]
    words = ds.decode(ds.train_batch(0)["inputs"][0])
    assert all(w.islower() or not w.isalpha() for w in words.split())  # dictionary-style lowercase word list
    np.testing.assert_array_equal(ds.train_batch(3)["inputs"], build_dataset(cfg).train_batch(3)["inputs"])


def test_mqar_generator_is_deterministic_and_well_formed():
    a = mqar_batch(0, 5, 4, 64, 4, 8, 64, 64)
    b = mqar_batch(0, 5, 4, 64, 4, 8, 64, 64)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    assert not np.array_equal(mqar_batch(1, 5, 4, 64, 4, 8, 64, 64)["inputs"], a["inputs"])
    for row in range(4):
        inp, tgt, mask = a["inputs"][row], a["targets"][row], a["mask"][row]
        pairs = {}
        for i in range(0, 64, 2):
            if inp[i] and not mask[i]:
                pairs[int(inp[i])] = int(inp[i + 1])
        for pos in np.flatnonzero(mask):
            assert pairs[int(inp[pos])] == int(tgt[pos])  # every answer is the value stored for that key


@pytest.mark.slow  # the fast set runs the recall suite on a trained Hebbian model in tests/test_report.py (smoke)
def test_recall_suite_reports_accuracy_by_length(tmp_path):
    from spiraljax.eval.suites import EvalContext, get_suite
    from spiraljax.train.loop import train

    cfg = config.load(
        ROOT / "configs" / "hebbian_tiny.yaml",
        [
            "data.source=mqar",
            "data.max_pairs=4",
            "train.steps=4",
            "train.progress=false",
            "eval.batches=1",
            "eval.batch_size=4",
            "eval.sample_tokens=0",
            "checkpoint.every=2",
            "train.eval_every=2",
        ],
    )
    train(cfg, tmp_path / "run")
    res = get_suite("recall").fn(EvalContext(tmp_path / "run", options={"lengths": "16,32", "batches": "1"}))
    accs = list(res.data["accuracy"].values())[0]
    assert set(accs) == {"16", "32"} and all(0.0 <= a <= 1.0 for a in accs.values())


@pytest.fixture(scope="module")
def head_and_inputs():
    from spiraljax.nn.hebbian import LocalHead

    head = LocalHead(16)
    ctx = jax.random.normal(jax.random.key(0), (64, 8))
    prev = jax.random.randint(jax.random.key(1), (64, 4), 0, 256).at[:, 0].set(256)
    other = prev.at[:, 1:].set((prev[:, 1:] + 1 + jax.random.randint(jax.random.key(3), (64, 3), 0, 254)) % 256)
    return head, head.init(jax.random.key(2), ctx, prev), ctx, prev, other


def test_head_hears_the_bytes_whatever_the_context_scale(head_and_inputs):
    """The reasoning loop's residual grows (rms 1 → 10, the head's context projection to rms 20–30 in
    50 steps at the 300-step budget): with the context unnormalised that saturated the GRU gates, the
    earlier bytes of a patch stopped reaching the logits and runs sat on a plateau whose escape was
    decided by float rounding. With ``context_norm`` the head is invariant to the context's scale."""
    head, params, ctx, prev, other = head_and_inputs
    logits = jax.jit(lambda c, p: head.apply(params, c, p))
    np.testing.assert_allclose(logits(30.0 * ctx, prev), logits(ctx, prev), atol=1e-4)

    def byte_effect(scale):  # how much bytes 1..3 of a patch move the logits of the bytes after them
        return float(jnp.sqrt(jnp.mean((logits(scale * ctx, prev) - logits(scale * ctx, other))[:, 1:] ** 2)))

    assert byte_effect(30.0) > 0.5 * byte_effect(1.0) > 0


def test_head_byte_and_context_inputs_start_at_the_same_scale(head_and_inputs):
    """At init the two halves of the GRU input x_j = [E(b_{j−1}); W_p z] reach the gates at
    comparable scale (the byte embedding's old init, std 0.02, made its share 50× smaller)."""
    head, params, ctx, prev, _ = head_and_inputs
    p = params["params"]
    h = 16
    w_i = jnp.concatenate([p["gru"][f"i{g}"]["kernel"] for g in "rzn"], -1)
    byte_part = p["embed"]["embedding"] @ w_i[:h]
    norm = (ctx - ctx.mean(-1, keepdims=True)) / ctx.std(-1, keepdims=True)
    ctx_part = (norm @ p["ctx"]["kernel"] + p["ctx"]["bias"]) @ w_i[h:]
    ratio = float(jnp.sqrt(jnp.mean(byte_part**2) / jnp.mean(ctx_part**2)))
    assert 0.25 < ratio < 4.0, ratio
