import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import assert_future_independent
from spiraljax import config, models
from spiraljax.ops import kuramoto as K

ROOT = config.PROJECT_ROOT


def test_meanfield_equals_pairwise_and_matrix_form():
    theta = jax.random.uniform(jax.random.key(0), (3, 50), maxval=2 * np.pi)
    np.testing.assert_allclose(K.coupling_meanfield(theta), K.coupling_pairwise(theta), atol=1e-5)
    km = jax.random.normal(jax.random.key(1), (50, 50))
    np.testing.assert_allclose(K.coupling_matrix(theta, km), K.coupling_pairwise(theta, km), atol=1e-4)
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
    np.testing.assert_allclose(K.kuramoto_step(theta, omega[:, 0], coupling[:, 0], 0.2, global_mix=0.3), ref,
                               atol=1e-5)
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
    theta_r = lambda f: (lambda z: jnp.abs(jnp.mean(z[..., 0] * (z[..., h] + 1j * z[..., 2 * h]), -1)))(  # noqa: E731
        f.reshape(2, 10, g, 3 * h))
    np.testing.assert_allclose(theta_r(feats), inner["R"], atol=1e-5)   # R = |mean_g Z_1,g| of the features
    target = 0.5 * float(inner["R"].min())                             # below R: no clipping
    forced, _ = layer.apply(params, x, force_R=target)
    np.testing.assert_allclose(theta_r(forced), target, atol=1e-5)


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


def test_causality_suite_can_fail_on_control(tmp_path):
    """Intervention test passes on a model that uses R and fails on the control with R cut."""
    from spiraljax.eval.causality import run_tests

    cfg = config.load(ROOT / "configs" / "kssm_v1_tiny.yaml")
    model = models.build(cfg.model)
    tokens = jax.random.randint(jax.random.key(7), (8, 33), 0, 256)
    batches = [{"inputs": tokens[:, :-1], "targets": tokens[:, 1:], "mask": jnp.ones((8, 32))}]
    variables = model.init(jax.random.key(0), tokens[:, :-1])
    main = run_tests(model, variables, batches, "R", [0.1, 0.9])
    control = run_tests(model, variables, batches, "R", [0.1, 0.9], cut_R=True)
    assert main["intervention"]["mean_abs_delta_logits"] > 0.0
    assert control["intervention"]["mean_abs_delta_logits"] == 0.0 and not control["intervention"]["passed"]


def test_correlation_of_a_constant_quantity_is_zero_not_nan():
    from spiraljax.eval.causality import pearson

    rng = np.random.default_rng(0)
    assert pearson(np.full(100, 0.99, np.float32), rng.normal(size=100)) == (0.0, 1.0)
    x = rng.normal(size=500)
    r, p = pearson(x, 2 * x + 0.1 * rng.normal(size=500))
    assert r > 0.99 and p < 1e-10
