"""benchmarks/flops.py: FLOP accounting of compiled HLO (dots × loop trip counts) and the dominant shape."""

from __future__ import annotations

import sys

import jax
import jax.numpy as jnp
import pytest

from conftest import ROOT

sys.path.insert(0, str(ROOT / "benchmarks"))
import flops


def _compiled(f, *args):
    return jax.jit(f).lower(*args).compile()


def test_scan_body_counted_by_trip_count_where_cost_analysis_counts_it_once():
    def f(x, w):
        return jax.lax.scan(lambda c, _: (jnp.tanh(c @ w), None), x, None, length=10)[0]

    c = _compiled(f, jnp.ones((64, 128)), jnp.ones((128, 128)))
    counts = flops.dot_flops(c.as_text())
    assert counts == {flops.DotShape(1, 64, 128, 128): 10}
    assert flops.total_dot_flops(counts) == 10 * 2 * 64 * 128 * 128
    assert flops.xla_flops(c) < 0.2 * flops.total_dot_flops(counts)  # why the dot count exists


def test_batched_dots_and_gradient_match_cost_analysis():
    def loss(x, w):
        return jnp.sum(jnp.einsum("bij,bjk->bik", x, w) ** 2)

    c = _compiled(jax.grad(loss, argnums=(0, 1)), jnp.ones((4, 64, 32)), jnp.ones((4, 32, 16)))
    counts = flops.dot_flops(c.as_text())
    # forward [64,32]@[32,16] and the two gradients (their operand orders are XLA's): 3 products of 2·4·64·32·16
    assert all(s.batch == 4 and s.m * s.k * s.n == 64 * 32 * 16 for s in counts)
    assert flops.total_dot_flops(counts) == 3 * 2 * 4 * 64 * 32 * 16
    assert flops.total_dot_flops(counts) == pytest.approx(flops.xla_flops(c), rel=0.05)


def test_dominant_dot_weights_shape_by_executions():
    big, small = flops.DotShape(1, 64, 64, 64), flops.DotShape(2, 8, 8, 8)
    assert flops.dominant_dot({big: 1, small: 1}) == big
    assert flops.dominant_dot({big: 1, small: 1000}) == small
    assert str(small) == "2×[8,8]@[8,8]" and small.flops == 2 * 2 * 8 * 8 * 8


def test_matmul_rate_is_positive():
    assert flops.matmul_rate(flops.DotShape(1, 32, 32, 32), repeats=2) > 0


def test_unparseable_text_is_an_error():
    with pytest.raises(ValueError, match="ENTRY"):
        flops.dot_flops("not hlo")


def test_cublas_gemm_custom_call_counts_as_a_dot():
    # the form XLA's GPU backend writes after rewriting a dot to cuBLAS (output: a (result, workspace) tuple)
    backend = (
        '{"gemm_backend_config":{"alpha_real":1,"dot_dimension_numbers":{"lhs_contracting_dimensions":["2"],'
        '"rhs_contracting_dimensions":["1"],"lhs_batch_dimensions":["0"],"rhs_batch_dimensions":["0"]}}}'
    )
    hlo = """HloModule m
ENTRY %main (a: f32[8,4096,128], b: f32[8,128,384]) -> f32[8,4096,384] {
  %a = f32[8,4096,128]{2,1,0} parameter(0)
  %b = f32[8,128,384]{2,1,0} parameter(1)
  %custom-call.1 = (f32[8,4096,384]{2,1,0}, s8[4194304]{0}) custom-call(%a, %b), CALL_ATTRIBUTES
  ROOT %get-tuple-element = f32[8,4096,384]{2,1,0} get-tuple-element(%custom-call.1), index=0
}
""".replace("CALL_ATTRIBUTES", f'custom_call_target="__cublas$gemm", backend_config={backend}')
    assert flops.dot_flops(hlo) == {flops.DotShape(8, 4096, 128, 384): 1}


def test_gpu_script_quick_runs_on_cpu(tmp_path):
    import json
    import subprocess

    from conftest import subprocess_env

    out = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "gpu.py"), "--quick", "--json-out", str(tmp_path / "gpu.json")],
        capture_output=True,
        text=True,
        env=subprocess_env(),
        cwd=ROOT,
        timeout=900,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    res = json.loads((tmp_path / "gpu.json").read_text())
    assert [r["model"] for r in res["mfu"]] == ["dense baseline (quick)", "Hebbian LM (quick)"]
    assert all(r["GFLOPs"] > 0 and r["MFU_big_matmul"] > 0 for r in res["mfu"])
    assert [r["T"] for r in res["attention"]] == [64, 128] and all(r["spiral_sparse_ms"] > 0 for r in res["attention"])
    assert res["fast_weights"][0]["scan_over_chunked"] > 0
    assert "train-step MFU" in out.stdout and "scan (reference) vs chunked" in out.stdout
