"""Kernel choice in one place: which implementation an op runs.

Four ops have more than one implementation, each tested equal to its reference:

==================  ====================================================================  =========
op                  implementations                                                       reference
==================  ====================================================================  =========
spiral_attention    ``sparse``: shift k/v per offset, O(T·|offsets|), no T×T array;       ``dense``
                    ``dense``: full q·kᵀ with the [T, T] spiral mask, O(T²)
fast_weights        ``chunked``: chunk-parallel, in two variants (below); ``scan``: one    ``scan``
                    ``lax.scan`` step per position
kuramoto_scan       ``scan``: one ``lax.scan`` over T; ``remat``: a scan over chunks of    ``scan``
                    ``remat_chunk`` steps under ``jax.checkpoint`` (the backward pass
                    stores one phase vector per chunk)
local_attention     ``blocked``: blocks of w queries score their own and the previous      ``dense``
                    block of keys, O(S·w), no S×S array; ``dense``: the [T, S] masked
                    sliding window, O(T·S)
==================  ====================================================================  =========

The fast-weight write rules of ``ops/shifted.py`` and ``ops/delta.py`` have two each, ``auto`` →
``chunked`` on every platform (``benchmarks/hebbian.py``: chunked ≥ 5× the scan forward+backward at T 4096):

======================  ================================================================  =========
op                      implementations                                                   reference
======================  ================================================================  =========
shifted_fast_weights    ``chunked``: causal key convolution over the window, then          ``scan``
                        ``fast_weights`` (its ``chunked`` variants); ``scan``: the key
                        buffer and the state stepped per position
delta_rule              ``chunked``: the WY/UT chunk form, in the same two variants as      ``scan``
                        ``fast_weights`` (rule below); ``scan``: one step per position
======================  ================================================================  =========

Every op takes ``impl`` (an :class:`Impl` or its string, as configs and YAML write it) and hands it to
:func:`resolve` together with what the choice depends on; the op then runs exactly the
implementation ``resolve`` returns. Nothing else chooses, and a bad value is a ``ValueError`` naming
the op and the values it allows.

``auto`` resolves through :data:`AUTO`, one default per op, unless :data:`AUTO_OVERRIDES` holds another
choice for the platform (``jax.default_backend()`` when no platform is given; ``cuda``/``rocm`` count as
``gpu``, an unlisted backend is ``cpu``). Today no platform overrides a default:

====================  =======  ==========================================================
op                    auto
====================  =======  ==========================================================
spiral_attention      sparse   (dense below DENSE_BELOW, see below)
fast_weights          chunked
kuramoto_scan         remat    (remat only where asked for, see below)
shifted_fast_weights  chunked
delta_rule            chunked
local_attention       blocked  (dense for short keys or wide windows, see below)
====================  =======  ==========================================================

The defaults follow the CPU benchmarks (docs/benchmarks.md): sparse spiral attention is 4–116× faster
than dense for T 512–8192 (``benchmarks/spiral_attention.py``), but slower below a crossover length (rule below);
chunked fast weights are 5–6× faster than the scan forward+backward, though 0.56–0.88× forward only
(``benchmarks/hebbian.py``), so training picks chunked. GPU and TPU make the same choices until those
benchmarks are run there (spiral attention has been, on a GPU: :data:`DENSE_BELOW`): a platform that
measures otherwise gets an entry in :data:`AUTO_OVERRIDES`, here and nowhere else.

Four choices depend on the inputs; the rules are these, and they live only here:

* **spiral_attention, auto** → ``dense`` when the sequence length T is below
  :data:`DENSE_BELOW` of the platform (CPU: 256), else the table's ``sparse``. At short T the sparse
  path's per-offset shifted copies of k and v (``[B, T, |offsets|, H, D]``, forward and backward) cost
  more than the whole masked ``[B, H, T, T]`` score tensor. Measured on the 2-core CPU with
  ``benchmarks/spiral_attention.py --key-mask`` (fwd+bwd, dense and sparse interleaved, H 4, D 32):
  dense/sparse time 0.34 (T 16), 0.54 (32), 0.35 (64), 0.32 (128), 0.86 (256), 1.1 (384), 1.4 (512)
  at batch 16; 0.64 (64), 1.07 (128), 1.8 (256), 3.8 (512) at batch 1. The crossover grows with the
  batch (≈ 128 at B 1, ≈ 300–384 at B 16); 256 keeps training batches (16–32) on the faster path and
  costs batch-1 calls at most ≈ 1.8× in 128 ≤ T < 256. Both give the same numbers to float tolerance
  (``tests/test_spiral_ops.py``). ``length`` not given → the table's choice.
* **fast_weights and delta_rule, chunked** → ``chunked_per_head`` when the log decay is a per-head constant (a scalar
  or ``[H]``, ``per_head_decay``) and the chunk ``C = min(chunk, T)`` divides ``T``: every chunk shares
  one decay table and the backward pass is hand-written. Otherwise ``chunked_general``: any decay
  broadcastable to ``[B, T, H]``, T padded to a multiple of C, differentiated by JAX. Either variant
  may also be asked for by name; ``chunked_per_head`` on inputs it cannot take is an error.
* **kuramoto_scan, auto** → ``remat`` when the caller set a ``remat_chunk`` shorter than T, else
  ``scan`` (one chunk of T steps is the plain scan). ``remat`` by name needs a ``remat_chunk``.
"""

from __future__ import annotations

import enum

import jax


class Impl(enum.StrEnum):
    """An op's implementation. A ``str``: ``Impl("sparse") is Impl.SPARSE`` and ``Impl.SPARSE == "sparse"``."""

    AUTO = "auto"  # resolved per platform (and input) by :func:`resolve`
    SPARSE = "sparse"  # spiral_attention: per-offset shifts, O(T·|offsets|)
    DENSE = "dense"  # spiral_attention reference: masked T×T attention
    SCAN = "scan"  # fast_weights / kuramoto_scan reference: one step per position
    CHUNKED = "chunked"  # fast_weights: chunk-parallel, variant chosen from the inputs
    CHUNKED_PER_HEAD = "chunked_per_head"  # fast_weights: shared decay table, hand-written backward
    CHUNKED_GENERAL = "chunked_general"  # fast_weights: any decay, JAX-differentiated
    REMAT = "remat"  # kuramoto_scan: scan over remat_chunk steps under jax.checkpoint
    BLOCKED = "blocked"  # local_attention: blocks of w queries vs 2 blocks of keys, O(S·w)


# the values each op accepts besides ``auto``
CHOICES: dict[str, tuple[Impl, ...]] = {
    "spiral_attention": (Impl.SPARSE, Impl.DENSE),
    "fast_weights": (Impl.CHUNKED, Impl.SCAN, Impl.CHUNKED_PER_HEAD, Impl.CHUNKED_GENERAL),
    "kuramoto_scan": (Impl.SCAN, Impl.REMAT),
    "shifted_fast_weights": (Impl.CHUNKED, Impl.SCAN),
    "delta_rule": (Impl.CHUNKED, Impl.SCAN, Impl.CHUNKED_PER_HEAD, Impl.CHUNKED_GENERAL),
    "local_attention": (Impl.BLOCKED, Impl.DENSE),
}
PLATFORMS = ("cpu", "gpu", "tpu")
_PLATFORM_ALIASES = {"cuda": "gpu", "rocm": "gpu"}

# spiral_attention's ``auto`` runs ``dense`` for sequences shorter than this, per platform (module docstring;
# 0: always the AUTO choice). GPU (H200, jax 0.11 CUDA, same benchmark): both paths take 0.1–0.3 ms, launch-bound,
# up to T 128 (dense/sparse fwd+bwd 0.95–1.33 at B 16, 0.8–0.88 at B 1), sparse faster from T 256 (B 16) / 512
# (B 1) and 9× at 8192, so the GPU keeps sparse. TPU: not measured, keeps the AUTO choice.
DENSE_BELOW: dict[str, int] = {"cpu": 256, "gpu": 0, "tpu": 0}
# local_attention's ``auto`` runs ``dense`` for key lengths shorter than this, per platform (module docstring)
LOCAL_DENSE_BELOW: dict[str, int] = {"cpu": 128, "gpu": 0, "tpu": 0}

# what ``auto`` means per op on every platform (module docstring) ...
AUTO: dict[str, Impl] = {
    "spiral_attention": Impl.SPARSE,
    "fast_weights": Impl.CHUNKED,
    "kuramoto_scan": Impl.REMAT,
    "shifted_fast_weights": Impl.CHUNKED,
    "delta_rule": Impl.CHUNKED,
    "local_attention": Impl.BLOCKED,
}
# ... unless a platform measured otherwise: platform → {op: choice}
AUTO_OVERRIDES: dict[str, dict[str, Impl]] = {}


def auto_choice(op: str, platform: str | None = None) -> Impl:
    """What ``auto`` gives ``op`` on ``platform`` before the input rules: the platform's override, else
    the op's default in :data:`AUTO`."""
    return AUTO_OVERRIDES.get(platform_name(platform), {}).get(op, AUTO[op])


def allowed(op: str) -> tuple[Impl, ...]:
    """Every value ``op`` accepts, ``auto`` first.

    Args:
      op: "spiral_attention" | "fast_weights" | "kuramoto_scan" | "shifted_fast_weights" | "delta_rule" |
          "local_attention".

    Returns:
      Tuple of :class:`Impl`.
    """
    if op not in CHOICES:
        raise ValueError(f"unknown op {op!r} for an impl choice ({' | '.join(CHOICES)})")
    return (Impl.AUTO, *CHOICES[op])


def parse(op: str, impl: str | Impl) -> Impl:
    """``impl`` as an :class:`Impl` that ``op`` accepts; anything else is a one-line ``ValueError``
    naming the op and its values.

    Args:
      op: the op's name (a key of :data:`CHOICES`).
      impl: an :class:`Impl` or its string value.

    Returns:
      The :class:`Impl` (``auto`` not yet resolved).
    """
    values = allowed(op)
    if isinstance(impl, str) and impl in values:
        return Impl(impl)
    shown = repr(impl.value if isinstance(impl, Impl) else impl)
    raise ValueError(f"unknown {op} impl {shown} ({' | '.join(values)})")


def platform_name(platform: str | None = None) -> str:
    """``platform`` (default: ``jax.default_backend()``) as a key of :data:`AUTO_OVERRIDES` and :data:`DENSE_BELOW`.

    Args:
      platform: "cpu" | "gpu" | "tpu" (or "cuda" / "rocm"), None for the default backend.

    Returns:
      "cpu" | "gpu" | "tpu"; a detected backend outside these counts as "cpu".
    """
    if platform is None:
        name = jax.default_backend().lower()
        name = _PLATFORM_ALIASES.get(name, name)
        return name if name in PLATFORMS else "cpu"
    name = _PLATFORM_ALIASES.get(platform.lower(), platform.lower())
    if name not in PLATFORMS:
        raise ValueError(f"unknown platform {platform!r} ({' | '.join(PLATFORMS)}, or cuda / rocm)")
    return name


def resolve(
    op: str,
    impl: str | Impl = Impl.AUTO,
    *,
    platform: str | None = None,
    length: int | None = None,
    chunk: int | None = None,
    per_head_decay: bool = True,
    window: int | None = None,
) -> Impl:
    """The implementation ``op`` runs: ``auto`` through :data:`AUTO`, then the input rules of the module
    docstring. The op dispatches on the result and on nothing else.

    Args:
      op: "spiral_attention" | "fast_weights" | "kuramoto_scan" | "shifted_fast_weights" | "delta_rule" |
          "local_attention".
      impl: an :class:`Impl` or its string ("auto", "sparse", "dense", "scan", "chunked", "blocked", ...).
      platform: "cpu" | "gpu" | "tpu" (default: ``jax.default_backend()``).
      length: sequence length T (every op's rule uses it).
      chunk: fast_weights' chunk size, or kuramoto_scan's ``remat_chunk`` (None: not set).
      per_head_decay: fast_weights and delta_rule: the log decay is a scalar or ``[H]`` (not per step).
      window: local_attention only: keys per query w.

    Returns:
      A concrete :class:`Impl` — never ``auto``. fast_weights' ``chunked`` stays ``chunked`` only
      when ``length`` or ``chunk`` is not given (its variant depends on them).
    """
    choice = parse(op, impl)
    from_auto = choice is Impl.AUTO
    if from_auto:
        row = platform_name(platform)
        choice = auto_choice(op, row)
        if op == "spiral_attention" and length is not None and length < DENSE_BELOW[row]:
            return Impl.DENSE
        if (
            op == "local_attention"
            and length is not None
            and (length < LOCAL_DENSE_BELOW[row] or (window is not None and 2 * window >= length))
        ):
            return Impl.DENSE
    if op in ("fast_weights", "delta_rule"):
        return _fast_weights_variant(op, choice, length, chunk, per_head_decay)
    if op == "kuramoto_scan" and choice is Impl.REMAT:
        if chunk is None or (length is not None and chunk >= length):
            if from_auto:
                return Impl.SCAN  # nothing to rematerialise by: the plain scan
            if chunk is None:
                raise ValueError("kuramoto_scan impl 'remat' needs remat_chunk (steps per checkpointed chunk)")
    return choice


def _fast_weights_variant(op: str, choice: Impl, length: int | None, chunk: int | None, per_head_decay: bool) -> Impl:
    """``chunked`` → ``chunked_per_head`` or ``chunked_general`` (module docstring; fast_weights and
    delta_rule alike); checks an explicit ``chunked_per_head`` against the inputs."""
    if choice not in (Impl.CHUNKED, Impl.CHUNKED_PER_HEAD) or length is None or chunk is None:
        return choice
    c = min(chunk, length)
    shared_table = per_head_decay and c > 0 and length % c == 0
    if choice is Impl.CHUNKED:
        return Impl.CHUNKED_PER_HEAD if shared_table else Impl.CHUNKED_GENERAL
    if not shared_table:
        raise ValueError(
            f"{op} impl 'chunked_per_head' needs a per-head log decay (scalar or [H]) and a "
            f"chunk dividing T; got T={length}, chunk={chunk}, per-head decay={per_head_decay} "
            "(use 'chunked' or 'chunked_general')"
        )
    return choice
