import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import assert_future_independent
from spiraljax import config, models
from spiraljax.ops import kuramoto as K

ROOT = config.PROJECT_ROOT


def test_meanfield_equals_pairwise_and_order_parameter_form():
    theta = jax.random.uniform(jax.random.key(0), (3, 50), maxval=2 * np.pi)
    np.testing.assert_allclose(K.coupling_meanfield(theta), K.coupling_pairwise(theta), atol=1e-5)
    r, psi = K.order_parameter(theta)  # N·R·sin(ψ − θ_i) form of the same sum
    np.testing.assert_allclose(50 * r[:, None] * jnp.sin(psi[:, None] - theta), K.coupling_pairwise(theta), atol=1e-4)


def test_order_parameter_limits():
    r, _ = K.order_parameter(jnp.full((7,), 1.3))
    assert float(r) == pytest.approx(1.0, abs=1e-6)
    r, _ = K.order_parameter(jnp.linspace(0, 2 * np.pi, 64, endpoint=False))
    assert float(r) < 1e-5
    mag, cos, sin = K.multiscale_features(jnp.array([[0.0, np.pi]]), 2)
    np.testing.assert_allclose(mag[0], [0.0, 1.0], atol=1e-5)  # antipodal: Z_1 = 0, Z_2 = 1


def test_scan_matches_python_loop_and_synchronises():
    b, t, n = 2, 30, 16
    omega = 0.1 * jax.random.normal(jax.random.key(2), (b, t, n))
    coupling = jnp.full((b, t), 8.0)
    theta0 = jax.random.uniform(jax.random.key(3), (b, n), maxval=2 * np.pi)
    thetas, final = K.kuramoto_scan(theta0, omega, coupling, 0.2)
    th = theta0
    for i in range(t):
        th = th + 0.2 * (omega[:, i] + 8.0 / n * K.coupling_pairwise(th))
        np.testing.assert_allclose(thetas[:, i], th, atol=1e-4)
    r_start, _ = K.order_parameter(theta0)
    r_end, _ = K.order_parameter(final)
    assert (np.asarray(r_end) > 0.9).all() and (np.asarray(r_end) > np.asarray(r_start)).all()


def test_rematerialised_chunked_scan_equals_plain_scan_with_gradients():
    b, t, n = 2, 23, 8  # T not a multiple of the chunk
    omega = 0.3 * jax.random.normal(jax.random.key(5), (b, t, n))
    coupling = jax.random.uniform(jax.random.key(6), (b, t), maxval=3.0)
    theta0 = jax.random.uniform(jax.random.key(7), (b, n), maxval=2 * np.pi)
    plain, plain_final = K.kuramoto_scan(theta0, omega, coupling, 0.1)
    chunked, chunked_final = K.kuramoto_scan(theta0, omega, coupling, 0.1, remat_chunk=5)
    np.testing.assert_allclose(chunked, plain, atol=1e-6)
    np.testing.assert_allclose(chunked_final, plain_final, atol=1e-6)
    loss = lambda om, c: lambda o: jnp.sum(jnp.cos(K.kuramoto_scan(theta0, o, coupling, 0.1, remat_chunk=c)[0]))  # noqa: E731
    np.testing.assert_allclose(jax.grad(loss(omega, 5))(omega), jax.grad(loss(omega, None))(omega), atol=1e-5)


def test_oscillator_banks_evolve_independently():
    """Banks ``[B, T, G, M]`` couple only within a bank: the banked scan equals G separate scans."""
    b, t, g, m = 2, 12, 3, 5
    omega = 0.5 * jax.random.normal(jax.random.key(8), (b, t, g, m))
    coupling = jax.random.uniform(jax.random.key(9), (b, t, g), maxval=4.0)
    theta0 = jax.random.uniform(jax.random.key(10), (b, g, m), maxval=2 * np.pi)
    banked, _ = K.kuramoto_scan(theta0, omega, coupling, 0.2)
    for i in range(g):
        alone, _ = K.kuramoto_scan(theta0[:, i], omega[:, :, i], coupling[:, :, i], 0.2)
        np.testing.assert_allclose(banked[:, :, i], alone, atol=1e-6)


def test_global_mix_couples_banks_as_pairwise_reference():
    """A share γ of the coupling acts on all oscillators: equals the O(N²) pairwise sums, and γ = 1
    makes the banks one population."""
    b, t, g, m = 2, 6, 3, 4
    omega = 0.5 * jax.random.normal(jax.random.key(11), (b, t, g, m))
    coupling = jax.random.uniform(jax.random.key(12), (b, t, g), maxval=3.0)
    theta = jax.random.uniform(jax.random.key(13), (b, g, m), maxval=2 * np.pi)
    within = K.coupling_pairwise(theta) / m
    across = K.coupling_pairwise(theta.reshape(b, g * m)).reshape(b, g, m) / (g * m)
    ref = theta + 0.2 * (omega[:, 0] + coupling[:, 0, :, None] * (0.7 * within + 0.3 * across))
    np.testing.assert_allclose(K.kuramoto_step(theta, omega[:, 0], coupling[:, 0], 0.2, global_mix=0.3), ref, atol=1e-5)
    shared = jnp.broadcast_to(coupling[..., :1], coupling.shape)  # one K for the whole population
    banked, _ = K.kuramoto_scan(theta, omega, shared, 0.2, global_mix=1.0)
    single, _ = K.kuramoto_scan(theta.reshape(b, g * m), omega.reshape(b, t, g * m), shared[..., 0], 0.2)
    np.testing.assert_allclose(banked.reshape(b, t, g * m), single, atol=1e-5)


def test_force_R_sets_the_global_order_parameter_of_banked_oscillators():
    from spiraljax.nn.kuramoto import OscillatorLayer

    g, h = 4, 3
    layer = OscillatorLayer(16, h, n_groups=g)
    x = jax.random.normal(jax.random.key(11), (2, 10, 8))
    params = layer.init(jax.random.key(12), x)
    feats, inner = layer.apply(params, x)
    np.testing.assert_allclose(readout_R(feats, g, h), inner["R"], atol=1e-5)  # R = |mean_g Z_1,g| of the features
    np.testing.assert_allclose(inner["R_readout"], inner["R"], atol=1e-5)
    for target in (0.5 * float(inner["R"].min()), 0.9):  # below R (scaling) and far above every bank's |Z_1|
        forced, inner_f = layer.apply(params, x, force_R=target)
        np.testing.assert_allclose(readout_R(forced, g, h), target, atol=1e-4)
        np.testing.assert_allclose(inner_f["R_readout"], target, atol=1e-4)
    with pytest.raises(ValueError, match="force_R must lie in"):
        layer.apply(params, x, force_R=1.5)


def readout_R(feats: jax.Array, g: int, h: int) -> jax.Array:
    """R recomputed from readout features ``[..., G·3H]`` laid out as [|Z_n|, cos, sin] per bank."""
    z = feats.reshape(*feats.shape[:-1], g, 3 * h)
    return jnp.abs(jnp.mean(z[..., 0] * (z[..., h] + 1j * z[..., 2 * h]), -1))


def mixture_features(theta: jax.Array, weight: float, extra: jax.Array, n_harmonics: int):
    """Reference: Z_n of a weighted population — the bank's M oscillators share weight 1 − w, the
    ``extra`` oscillators share w — computed directly from phases."""
    n = jnp.arange(1, n_harmonics + 1)[:, None]
    z = (1 - weight) * jnp.mean(jnp.exp(1j * n * theta[..., None, :]), -1)
    z = z + weight * jnp.mean(jnp.exp(1j * n * extra[..., None, :]), -1)
    return jnp.abs(z), jnp.real(z) / jnp.abs(z), jnp.imag(z) / jnp.abs(z)


def test_forcing_R_is_a_phase_mixture_and_reaches_every_value():
    """Forcing R up mixes each bank with oscillators locked at the global phase Ψ, forcing it down
    with a uniformly spread population: equal to Z_n computed from such weighted phase sets, every
    |Z_n| ≤ 1, Ψ kept, and the global R is the forced value from 0 to 1. Scaling the magnitudes
    (the old intervention, clipped at 1) cannot get past mean_g |Z_1,g| when the banks disagree."""
    b, g, m, h = 3, 6, 12, 4
    theta = jax.random.uniform(jax.random.key(20), (b, g, m), maxval=2 * np.pi)
    theta = theta + jnp.linspace(0, 2 * np.pi, g, endpoint=False)[:, None]  # banks point different ways
    mag, cos, sin = K.multiscale_features(theta, h)
    r = K.global_order_parameter(mag, cos, sin)
    psi = jnp.angle(jnp.mean(jnp.exp(1j * theta), (-2, -1)))
    for target in (0.0, 0.05, 0.3, 0.6, 0.9, 1.0):
        fm, fc, fs = K.force_global_order_parameter(mag, cos, sin, target)
        np.testing.assert_allclose(K.global_order_parameter(fm, fc, fs), target, atol=1e-5)
        assert float(fm.max()) <= 1 + 1e-6
        for i in range(b):
            up = target > float(r[i])
            lam = (target - r[i]) / (1 - r[i]) if up else 1 - target / r[i]
            extra = jnp.full((1,), psi[i]) if up else jnp.linspace(0, 2 * np.pi, 16, endpoint=False)
            ref = mixture_features(theta[i], lam, extra, h)
            np.testing.assert_allclose(fm[i], ref[0], atol=1e-5)
            if target > 0:
                np.testing.assert_allclose(fm[i] * fc[i], ref[0] * ref[1], atol=1e-5)
                np.testing.assert_allclose(fm[i] * fs[i], ref[0] * ref[2], atol=1e-5)
    fm, fc, fs = K.force_global_order_parameter(mag, cos, sin, 0.9)
    np.testing.assert_allclose(jnp.angle(jnp.mean(fm[..., 0] * (fc[..., 0] + 1j * fs[..., 0]), -1)), psi, atol=1e-4)
    old = jnp.clip(mag * (0.9 / r)[:, None, None], 0, 1)  # the old intervention falls short
    assert float(jnp.max(K.global_order_parameter(old, cos, sin))) < 0.85


def test_bistable_u_clamp_and_regulariser_finite():
    p = jax.random.normal(jax.random.key(4), (1000, 10)) * 10
    u, sat = K.bistable_u(p)
    assert float(u.min()) >= 0.1 and float(u.max()) <= 10.0 and 0 < float(sat.mean()) < 1
    for edge in (0.1, 10.0):  # regulariser at the clamp edges (and with Δ = 0)
        reg = K.bistable_regulariser(jnp.zeros((5, 10)), jnp.full((5,), edge))
        assert np.isfinite(float(reg))
    g = jax.grad(lambda p: K.bistable_regulariser(p, K.bistable_u(p)[0]))(p)
    assert np.isfinite(np.asarray(g)).all()


def test_inward_clamp_gradient_only_points_back_inside():
    x = jnp.array([0.05, 0.05, 0.5, 20.0, 20.0])
    np.testing.assert_allclose(K.inward_clamp(x, 0.1, 10.0), [0.1, 0.1, 0.5, 10.0, 10.0])
    cot = jnp.array([-1.0, 1.0, 1.0, 1.0, -1.0])  # descent step is −cot
    _, vjp = jax.vjp(lambda x: K.inward_clamp(x, 0.1, 10.0), x)
    # below: only a step upwards passes; inside: everything; above: only a step downwards
    np.testing.assert_allclose(vjp(cot)[0], [-1.0, 0.0, 1.0, 1.0, 0.0])
    # so the regulariser's −log ū can lift a u pinned at the lower clamp (plain clip: zero gradient)
    p = jnp.tile(jnp.array([1, 0, 0, 0.05, 0, 0, 1, 0, 0, 0.0]), (4, 1))  # raw u = 0.05 < 0.1
    grad = jax.grad(lambda p: K.bistable_regulariser(p, K.bistable_u(p)[0]))(p)
    assert float(jnp.sum(jnp.abs(grad[:, 3]))) > 0


def test_tone_zones():
    assert np.asarray(K.tone_zone(jnp.array([0.05, 0.1, 0.35, 0.6, 0.8, 0.9, 0.99]))).tolist() == list(range(7))
    assert np.asarray(K.zone_counts(jnp.array([0.05, 0.06, 0.99]))).tolist() == [2, 0, 0, 0, 0, 0, 1]


@pytest.fixture(scope="module", params=["v1", "v2", "v3"])
def tiny(request):
    cfg = config.load(ROOT / "configs" / f"kssm_{request.param}_tiny.yaml")
    model = models.build(cfg.model)
    tokens = jax.random.randint(jax.random.key(5), (2, 32), 0, 256)
    return cfg, model, model.init(jax.random.key(0), tokens), tokens


def test_future_tokens_do_not_change_past_logits(tiny):
    cfg, model, variables, tokens = tiny
    assert_future_independent(jax.jit(lambda t: model.apply(variables, t)[0]), tokens, (0, 9, 30), 256, shift=31)


def test_forcing_R_changes_logits_and_cut_removes_it(tiny):
    cfg, model, variables, tokens = tiny
    f = jax.jit(lambda force, cut: model.apply(variables, tokens, force_R=force, cut_R=cut)[0], static_argnums=1)
    lo, hi = f(jnp.float32(0.1), False), f(jnp.float32(0.9), False)
    assert float(jnp.mean(jnp.abs(lo - hi))) > 1e-3
    np.testing.assert_allclose(f(jnp.float32(0.1), True), f(jnp.float32(0.9), True), atol=1e-6)
    logits, aux = model.apply(variables, tokens)
    assert aux["R"].shape == (2, 32) and float(aux["R"].min()) >= 0 and float(aux["R"].max()) <= 1
    if cfg.model.family == "kssm_v3":
        assert float(aux["u"].min()) >= 0.1 and float(aux["u"].max()) <= 10 and np.isfinite(float(aux["aux_loss"]))


def test_noise_only_in_training():
    cfg = config.load(ROOT / "configs" / "kssm_v3_tiny.yaml", ["model.noise=0.5"])
    model = models.build(cfg.model)
    tokens = jnp.ones((1, 32), jnp.int32)
    v = model.init(jax.random.key(0), tokens)
    a = model.apply(v, tokens)[0]
    np.testing.assert_array_equal(a, model.apply(v, tokens)[0])
    n1 = model.apply(v, tokens, train=True, rngs={"noise": jax.random.key(1)})[0]
    n2 = model.apply(v, tokens, train=True, rngs={"noise": jax.random.key(2)})[0]
    assert not np.allclose(n1, n2)


TEXT = np.frombuffer((ROOT / "data" / "tinyshakespeare.txt").read_bytes()[:20000], np.uint8).astype(np.int32)


@pytest.fixture(scope="module", params=["v1", "v2", "v3"])
def trained(request):
    """A tiny K-SSM of each version trained 40 Adam steps on TinyShakespeare bytes (one compile)."""
    import optax

    from spiraljax.losses import token_nll

    cfg = config.load(ROOT / "configs" / f"kssm_{request.param}_tiny.yaml")
    model = models.build(cfg.model)
    starts = np.random.default_rng(0).integers(0, len(TEXT) - 33, (40, 8))
    windows = jnp.asarray(np.stack([np.stack([TEXT[s : s + 33] for s in row]) for row in starts]))
    variables = model.init(jax.random.key(0), windows[0, :, :-1])
    tx = optax.adam(1e-2)

    def loss(params, seq, key):
        logits, aux = model.apply({"params": params}, seq[:, :-1], train=True, rngs={"noise": key})
        return jnp.mean(token_nll(logits, seq[:, 1:])) + aux.get("aux_loss", 0.0)

    @jax.jit
    def train(params):
        def step(carry, xs):
            params, opt = carry
            grads = jax.grad(loss)(params, *xs)
            updates, opt = tx.update(grads, opt, params)
            return (optax.apply_updates(params, updates), opt), None

        keys = jax.random.split(jax.random.key(1), len(windows))
        return jax.lax.scan(step, (params, tx.init(params)), (windows, keys))[0][0]

    params = train(variables["params"])
    return cfg, model, {"params": params}, windows[-1]


def readout_inputs(model, variables, tokens, **kw) -> list[jax.Array]:
    """The arrays every ``readout_i`` Dense receives, captured at its call."""
    seen = []

    def grab(next_fun, args, kwargs, context):
        name = context.module.name or ""
        if context.method_name == "__call__" and name.startswith("readout_") and not name.startswith("readout_out"):
            seen.append(args[0])
        return next_fun(*args, **kwargs)

    with nn.intercept_methods(grab):
        model.apply(variables, tokens, **kw)
    return seen


def test_forced_R_is_what_every_readout_sees_on_a_trained_model(trained):
    """The R recomputed from the features each readout receives equals the forced value (within
    0.02) at 0.1 … 0.9, on a trained model of every version (banked for v2/v3)."""
    cfg, model, variables, tokens = trained
    g, h = cfg.model.n_groups, cfg.model.n_harmonics
    seen = jax.jit(lambda v: readout_inputs(model, variables, tokens[:, :-1], force_R=v))
    for value in np.arange(1, 10) / 10:
        for layer, feats in enumerate(seen(jnp.float32(value))):
            achieved = readout_R(feats, g, h)
            assert float(jnp.max(jnp.abs(achieved - value))) < 0.02, (cfg.model.family, layer, value)
    natural = readout_inputs(model, variables, tokens[:, :-1])[-1]
    np.testing.assert_allclose(readout_R(natural, g, h), model.apply(variables, tokens[:, :-1])[1]["R"], atol=1e-5)


@pytest.mark.parametrize("trained", ["v3"], indirect=True)  # one version is enough for the suite plumbing
def test_causality_suite_reports_achieved_R_and_control_fails(trained):
    """On the trained v3 model the suite's achieved R matches every forced value, the intervention
    moves the output, and the control with the R path cut fails test 2 (the test can fail)."""
    from spiraljax.eval.causality import run_tests

    cfg, model, variables, tokens = trained
    assert cfg.model.family == "kssm_v3"
    batches = [{"inputs": tokens[:, :-1], "targets": tokens[:, 1:], "mask": jnp.ones((8, 32))}]
    main = run_tests(model, variables, batches, "R", [0.1, 0.5, 0.9])
    control = run_tests(model, variables, batches, "R", [0.1, 0.5, 0.9], cut_R=True)
    assert main["intervention"]["max_abs_achieved_error"] < 0.02
    assert [round(x, 2) for x in main["intervention"]["achieved_by_value"].values()] == [0.1, 0.5, 0.9]
    assert main["intervention"]["mean_abs_delta_logits"] > 0.1 and main["share"]["share"] <= 1
    assert control["intervention"]["mean_abs_delta_logits"] == 0.0 and not control["intervention"]["passed"]
    assert control["share"]["share"] == 0.0


def test_share_of_dependence_is_the_variance_that_disappears():
    """Outputs u(x) + w(x) with independent parts: holding the quantity that carries u removes
    var u / (var u + var w) of the dependence; masked positions do not count."""
    from spiraljax.eval.causality import share_of_dependence, token_dependence

    rng = np.random.default_rng(0)
    s, t, v = 4000, 3, 5
    u, w = rng.normal(size=(s, t, v)) * 2.0, rng.normal(size=(s, t, v))
    mask = np.ones((s, t))
    assert share_of_dependence(u + w, w, mask) == pytest.approx(0.8, abs=0.02)
    assert share_of_dependence(u + w, u + w, mask) == 0.0
    assert share_of_dependence(u + w, np.zeros_like(u), mask) == 1.0
    half = mask.copy()
    half[::2, 1] = 0  # masked positions do not count
    d = token_dependence(np.where(half[..., None] > 0, u, 1e6), half)
    assert d == pytest.approx(token_dependence(u, mask), rel=0.05)


def phases_from_power_sums(z: np.ndarray, m: int) -> np.ndarray:
    """Reference: the m unit-circle points whose power sums are ``m·z[n−1]`` (z = Z_1..Z_H, H ≥ ⌈m/2⌉).
    Newton's identities give e_1..e_H; roots on the unit circle make the polynomial self-inversive,
    e_{m−k} = e_m·conj(e_k), which fixes e_m and the remaining coefficients."""
    p = m * np.asarray(z)
    e = [1.0 + 0j]
    for k in range(1, len(p) + 1):
        e.append(sum((-1) ** (i - 1) * e[k - i] * p[i - 1] for i in range(1, k + 1)) / k)
    half = (m + 1) // 2
    e_m = e[half] / np.conj(e[m - half])
    coeffs = [e[k] if k < len(e) and k <= half else e_m * np.conj(e[m - k]) for k in range(m + 1)]
    return np.roots([(-1) ** k * c for k, c in enumerate(coeffs)])


def test_readout_sees_every_phase_unless_banks_exceed_twice_the_harmonics():
    """Why the bottleneck rule is M > 2H: a bank of M ≤ 2H phases is recovered exactly from its H
    harmonics (so the readout sees the phase state), while for M > 2H the harmonics' Jacobian has
    rank 2H < M: some phase changes are invisible to the readout."""
    rng = np.random.default_rng(3)
    for m, h in ((4, 2), (4, 8), (16, 8), (7, 4)):
        theta = rng.uniform(0, 2 * np.pi, m)
        mag, cos, sin = K.multiscale_features(jnp.asarray(theta, jnp.float32), h)
        z = np.asarray(mag * (cos + 1j * sin), np.complex128)
        found = phases_from_power_sums(z, m)
        assert max(np.min(np.abs(found - np.exp(1j * t))) for t in theta) < 1e-3, (m, h)
    for m, h in ((16, 8), (17, 8), (32, 8)):  # ∂Z_n/∂θ_j = i·n·e^{inθ_j}/M, as a real (2H × M) matrix, fp64
        theta = rng.uniform(0, 2 * np.pi, m)
        jac = 1j * np.arange(1, h + 1)[:, None] * np.exp(1j * np.arange(1, h + 1)[:, None] * theta) / m
        rank = np.linalg.matrix_rank(np.concatenate([jac.real, jac.imag]))
        assert rank == min(m, 2 * h), (m, h, rank)


def test_bank_size_must_exceed_twice_the_harmonics_or_be_declared():
    """With banks of ≤ 2H oscillators the power sums determine every phase; such a config is
    refused unless it says so (``full_phase_readout``)."""
    for groups in (4, 2):  # banks of 4 and of 8 with 4 harmonics (8 > 4 = H would not be enough)
        with pytest.raises(config.ConfigError, match="full phase state"):
            config.load(ROOT / "configs" / "kssm_v1_tiny.yaml", [f"model.n_groups={groups}"])
    cfg = config.load(ROOT / "configs" / "kssm_v1_tiny.yaml", ["model.n_groups=4", "model.full_phase_readout=true"])
    assert cfg.model.bank_size == 4 and not cfg.model.population_readout
    for name in ("v1_tiny", "v2_tiny", "v3_tiny", "v1_shakespeare", "v3_shakespeare"):
        m = config.load(ROOT / "configs" / f"kssm_{name}.yaml").model
        assert m.population_readout or m.full_phase_readout, name


def test_causality_options_are_parsed_once_and_errors_are_one_line():
    """The registry parses the options with the defaults of the registration; the suite checks what
    the values mean before it loads a model."""
    from spiraljax.errors import SuiteError
    from spiraljax.eval.suites import EvalContext, get_suite

    suite = get_suite("causality")
    defaults = {"quantity": "R", "values": [0.1, 0.3, 0.5, 0.7, 0.9], "sequences": 100}
    assert suite.values(EvalContext(None)) == defaults
    suite.values(EvalContext(None))["values"].append(2.0)  # a caller's copy, not the default
    assert suite.values(EvalContext(None)) == defaults
    assert suite.values(EvalContext(None, options={"values": "0.1, 0.9", "sequences": "7"})) == {
        "quantity": "R",
        "values": [0.1, 0.9],
        "sequences": 7,
    }
    for bad, error, match in (
        ("values=0.1,x", SuiteError, "--opt values='0.1,x'.*comma-separated numbers"),
        ("sequences=0", SuiteError, "sequences='0'.*≥ 1"),
        ("values=0.5", KeyError, "--opt values.*at least two values"),
        ("values=0.5,1.5", KeyError, "R lies in"),
    ):
        key, value = bad.split("=")
        with pytest.raises(error, match=match):
            suite.fn(EvalContext(None, options={key: value}))


def test_correlation_of_a_constant_quantity_is_zero_not_nan():
    from spiraljax.eval.causality import pearson

    rng = np.random.default_rng(0)
    assert pearson(np.full(100, 0.99, np.float32), rng.normal(size=100)) == (0.0, 1.0)
    x = rng.normal(size=500)
    r, p = pearson(x, 2 * x + 0.1 * rng.normal(size=500))
    assert r > 0.99 and p < 1e-10
