"""Spiralformer: causal spiral sparse attention, breath clock, silence, Soma, TowerMemory, LoRA.

``logits, aux = model.apply(variables, tokens, conditions=c, step=s)`` with aux keys
``breath_weight [B, T]``, ``silence_gate [B, T]``, ``field_charge [B, 2]``, ``hidden_var [B]``,
the TowerMemory entries ``memory`` (its state after the sequence), ``memory_queries [B]``,
``hold_phases [B]``, ``memory_hits [B]``, ``memory_slot [B, C]`` (slot read per breath cycle, −1 =
none), ``memory_read [B, T]`` (positions that received a painting) and ``memory_gate [B, T]``; the
rhythmic-loss factors ``token_weights [B, T]`` (breath weight per position) and ``target_weights [V]``
(active boost per target id; the trainer multiplies ``token_weights · target_weights[targets]`` into
the loss mask); and ``metrics``.
``force_breath_weight`` / ``force_silence_gate`` / ``force_memory_gate`` override those quantities
for interventions; ``cut_memory=True`` reads the tower but adds nothing (ablation);
``charge_only_memory=True`` reads by charge resonance alone (the old read: ties → slot 0).
"""

from __future__ import annotations

from typing import Literal

import flax.linen as nn
import jax
import jax.numpy as jnp
from pydantic import Field, model_validator

from spiraljax.config import AttentionConfig, DType, LoraAlpha, LoraRank, Remat, Section
from spiraljax.glyph_table import SILENCE_IDS
from spiraljax.nn.layers import init_cache
from spiraljax.nn.precision import compute_dtype, maybe_remat
from spiraljax.nn.spiral import SpiralBlock
from spiraljax.ops import rhythm
from spiraljax.ops.soma import DEFAULT_CONDITIONS, field_charge
from spiraljax.ops.spiral import make_offsets
from spiraljax.ops.tower import tower_init, tower_read, tower_write
from spiraljax.state import check_state_like


class SpiralSection(Section):
    pattern: Literal["pow2", "phi", "none"] = Field(
        "pow2", description="offsets i − j attended: powers of 2, round(φ^k), or only the diagonal"
    )
    n_back: list[int] = Field([], description="extra fixed offsets every position attends back to")
    every: int = Field(0, ge=0, description="also attend to offsets every·m, m = 1..every_count (0 = off)")
    every_count: int = Field(0, ge=0, description="how many of those strided offsets")
    local: int = Field(
        0,
        ge=0,
        description="also attend the last `local` positions (offsets 0 … local-1, a "
        "sliding window beside the spiral hops; 0 = off)",
    )
    impl: Literal["auto", "sparse", "dense"] = Field(
        "auto",
        description="gather the offsets (sparse), mask a "
        "dense attention (dense), or auto: dense below a crossover "
        "length (spiraljax.ops.impl); same numbers to float "
        "tolerance",
    )


class BreathSection(Section):
    enabled: bool = Field(True, description="the breath clock (inhale, hold, exhale, pause) is on")
    durations: list[int] = Field([4, 2, 4, 2], description="positions per phase: inhale, hold, exhale, pause")
    weights: list[float] = Field([1.0, 0.5, 0.25, 0.0], description="breath weight of each phase")
    clock: Literal["position", "step"] = Field(
        "position", description="phase of position t (+ the training step if 'step')"
    )
    attention_phases: list[int] = Field([0, 1, 2, 3], description="rhythmic attention: phases where attention is open")
    dropout: list[float] = Field([0.0, 0.0, 0.0, 0.0], description="contemplative dropout rate per phase")
    rhythmic_loss: bool = Field(True, description="weight the loss of each position by its breath weight")
    active_boost: float = Field(1.0, gt=0, description="rhythmic loss: weight × this on non-silence targets (1 = off)")

    @model_validator(mode="after")
    def _four(self) -> "BreathSection":
        for name in ("durations", "weights", "dropout"):
            if len(getattr(self, name)) != 4:
                raise ValueError(f"breath.{name} needs 4 values (inhale, hold, exhale, pause)")
        if min(self.durations) < 0 or sum(self.durations) <= 0:
            raise ValueError("breath.durations must be ≥ 0 with a positive sum")
        return self


class SilenceSection(Section):
    key_mask: bool = Field(True, description="PAD keys masked per sequence (diagonal kept)")
    gate: Literal["scale", "off", "none"] = Field(
        "scale", description="above the threshold, scale attention by 1 − silence share, close it, or do nothing"
    )
    threshold: float = Field(0.5, ge=0, le=1, description="share of silence glyphs in the prefix that gates")


class MemorySection(Section):
    enabled: bool = Field(True, description="TowerMemory: paintings of earlier breath cycles read at hold phases")
    capacity: int = Field(15, gt=0, description="paintings kept")
    decay: float = Field(0.95, gt=0, le=1, description="strength of every stored painting × this per write")
    threshold: float = Field(0.3, description="similarity a painting needs to be read")
    query_prob: float = Field(
        0.35, ge=0, le=1, description="training only: chance a hold phase queries (eval: every hold)"
    )
    write_every: int = Field(1, ge=1, description="breathing recurrence: write a painting every k-th breath cycle")


class SpiralformerConfig(AttentionConfig):
    family: Literal["spiralformer"] = "spiralformer"
    vocab_size: int = Field(65, gt=0, description="number of token ids (65 = the glyph vocabulary)")
    seq_len: int = Field(32, gt=0, description="training window length in tokens")
    mlp_ratio: float = Field(4.0, gt=0, description="MLP hidden width as a multiple of d_model")
    soma: bool = Field(True, description="add the projected field conditions [B, 5] to every position")
    spiral: SpiralSection = Field(SpiralSection(), description="which earlier positions each position attends to")
    breath: BreathSection = Field(BreathSection(), description="the breath clock")
    silence: SilenceSection = Field(SilenceSection(), description="silence masking and gating")
    memory: MemorySection = Field(MemorySection(), description="TowerMemory")
    lora_rank: LoraRank = 0
    lora_alpha: LoraAlpha = 16.0
    smear_keys: bool = Field(
        False, description="per-head smeared keys k_j <- m k_j + (1-m) k_{j-1} (as the dense baseline's default)"
    )
    dtype: DType = "float32"
    remat: Remat = False
    cache_len: int | None = Field(
        None, ge=0, description="keys/values per layer carried to the next window with state= (null: seq_len)"
    )

    @property
    def cache_length(self) -> int:
        """M: keys per layer in the carried cache (``cache_len``, default seq_len)."""
        return self.seq_len if self.cache_len is None else self.cache_len

    def offsets(self, n_keys: int) -> tuple[int, ...]:
        """The offsets ``i − j`` attended when the keys span ``n_keys`` positions (window, or cache + window)."""
        sc = self.spiral
        return make_offsets(n_keys, sc.pattern, [*sc.n_back, *range(sc.local)], sc.every, sc.every_count)

    def build(self) -> nn.Module:
        return Spiralformer(self)


def silence_fraction(tokens: jax.Array, before: jax.Array | None = None, read: jax.Array | None = None) -> jax.Array:
    """Fraction of silence glyphs among positions ≤ t (causal prefix), ``[B, T]``. With a carried state,
    ``before [B]`` silence glyphs among the ``read [B]`` tokens of the document before the window count too."""
    silent = jnp.isin(tokens, jnp.asarray(SILENCE_IDS)).astype(jnp.float32)
    if before is None:
        return jnp.cumsum(silent, axis=1) / jnp.arange(1, tokens.shape[1] + 1)
    count = before[:, None] + jnp.cumsum(silent, axis=1)
    return count / (read[:, None] + jnp.arange(1, tokens.shape[1] + 1)).astype(jnp.float32)


class Spiralformer(nn.Module):
    cfg: SpiralformerConfig

    def initial_state(self, batch_size: int) -> dict:
        """The state before a document (docs/carried_state.md): ``{"layers": {"block_i": {k, v [B, M, H, D],
        valid [B, M], prev_key [B, H, D]}}, "pos" [B] int32, "silent" [B] float32[, "memory": TowerMemory]}``:
        per layer an empty key/value cache of ``cache_len`` slots (``valid`` = a usable key: filled and not
        PAD), the tokens of the document read so far (the breath clock's position) and the silence glyphs
        among them, and with ``memory.enabled`` an empty tower (:func:`spiraljax.ops.tower.tower_init`)."""
        cfg = self.cfg
        state = {
            "layers": {
                f"block_{i}": init_cache(batch_size, cfg.cache_length, cfg.n_heads, cfg.d_model // cfg.n_heads)
                for i in range(cfg.n_layers)
            },
            "pos": jnp.zeros((batch_size,), jnp.int32),
            "silent": jnp.zeros((batch_size,), jnp.float32),
        }
        if cfg.memory.enabled:
            state["memory"] = tower_init(batch_size, cfg.memory.capacity, cfg.d_model)
        return state

    def _breath(self, t: int, step, pos: jax.Array | None = None):
        """Phase, breath weight, attention-open flag and dropout rate of every position: ``[T]`` (positions
        0 … T−1), or ``[B, T]`` with ``pos [B]`` (positions pos_b … pos_b + T − 1 of each row's document)."""
        bc = self.cfg.breath
        offset = step if bc.clock == "step" else 0
        if pos is None:
            phases = rhythm.sequence_phases(t, offset, bc.durations)
        else:
            start = pos + jnp.asarray(offset, jnp.int32)  # clock of position 0, [B]
            phases = rhythm.phase(jnp.arange(t, dtype=jnp.int32)[None, :] + start[:, None], bc.durations)
        if not bc.enabled:
            ones = jnp.ones(phases.shape, jnp.float32)
            return phases, ones, ones, jnp.zeros(phases.shape, jnp.float32)
        weights = jnp.asarray(bc.weights, jnp.float32)[phases]
        attn_open = rhythm.attention_open(phases, bc.attention_phases).astype(jnp.float32)
        return phases, weights, attn_open, rhythm.dropout_rate(phases, bc.dropout)

    def _memory(self, h, tokens, phases, charge, step, memory, train, force_gate, cut, charge_only, pos=None):
        """TowerMemory over the breath cycles c of the sequence (one ``lax.scan`` step per cycle):

        * query ``q_c = W_q · mean{h_t : t ∈ c, phase inhale, token ≠ PAD}`` (before c's hold phase);
        * read at c's hold phase: the painting m from an earlier cycle with the highest
          ``sim_m = ½ (1 − (|Δep| + |Δtu|)/2 + cos(q_c, key_m))`` if ``sim_m > threshold``
          (:func:`spiraljax.ops.tower.tower_read`; hard argmax, straight-through softmax gradient);
        * write after the read, on cycles with ``recurrence_tick(c, write_every)``:
          ``content_c = mean{h_t : t ∈ c, token ≠ PAD}``, ``key_c = W_k · content_c``;
        * output ``h_t + σ(w_g · h_t + b_g) · content_read(c)`` at the hold positions t of c.

        Causal: q_c uses positions before the hold phase, and every painting c can read was written
        by an earlier cycle. Which hold phases query: every one when ``train=False`` (deterministic,
        independent of the batch); in training a Bernoulli(query_prob) coin per sequence and cycle
        keyed by the ``sample`` RNG the trainer derives from its step key (a resumed run draws the same).

        With ``pos [B]`` (a carried state) the cycles are those of each row's document positions
        ``pos_b + t`` (``phases [B, T]``): a cycle cut by the window boundary is pooled and written once
        per window (its two parts are two paintings), and ``write_every`` counts the document's cycles.
        """
        mc, bc = self.cfg.memory, self.cfg.breath
        b, t, d = h.shape
        cycle = sum(bc.durations)
        offset = step if bc.clock == "step" else 0
        n_cyc = t // cycle + 2
        if pos is None:
            cyc = (jnp.arange(t) + jnp.mod(jnp.asarray(offset, jnp.int32), cycle)) // cycle  # cycle index per position
            onehot = jax.nn.one_hot(cyc, n_cyc)  # [T, C]
            per_row, first_cycle = "tc", jnp.zeros((), jnp.int32)
            phases_bt = phases[None, :]
        else:
            start = pos + jnp.asarray(offset, jnp.int32)  # clock of position 0, [B]
            cyc = (jnp.arange(t)[None, :] + jnp.mod(start, cycle)[:, None]) // cycle  # [B, T]
            onehot = jax.nn.one_hot(cyc, n_cyc)  # [B, T, C]
            per_row, first_cycle = "btc", (start // cycle)[None, :]  # the document's cycle 0
            phases_bt = phases
        valid = (tokens != 0).astype(jnp.float32)

        def pool(weights):  # mean of h over the weighted positions of each cycle, [B, C, d] (0 if none)
            count = jnp.einsum(f"bt,{per_row}->bc", weights, onehot)
            return jnp.einsum(f"btd,bt,{per_row}->bcd", h, weights, onehot) / jnp.maximum(count, 1.0)[..., None], count

        content, count = pool(valid)
        before_hold, _ = pool(valid * (phases_bt == rhythm.INHALE).astype(jnp.float32))
        query = nn.Dense(d, use_bias=False, name="memory_query")(before_hold)
        key = nn.Dense(d, use_bias=False, name="memory_key")(content)
        hold = (phases == rhythm.HOLD).astype(jnp.float32)
        if pos is None:
            has_hold = (jnp.einsum("t,tc->c", hold, onehot) > 0)[:, None]  # [C, 1]
        else:
            has_hold = jnp.einsum("bt,btc->cb", hold, onehot) > 0  # [C, B]
        if train and mc.query_prob < 1.0:
            coin = jax.random.bernoulli(self.make_rng("sample"), mc.query_prob, (n_cyc, b))
        else:
            coin = jnp.ones((n_cyc, b), bool)
        ask = coin & has_hold  # [C, B]
        tick = rhythm.recurrence_tick(jnp.arange(n_cyc)[:, None] + first_cycle, mc.write_every)  # [C, 1 or B]
        write = (count > 0).T & tick
        if memory is not None and set(memory) != set(tower_init(1, 1, 1)):
            raise ValueError(
                f"memory: expected a TowerMemory state (aux['memory']) with keys "
                f"{sorted(tower_init(1, 1, 1))}, got {sorted(memory)}"
            )
        state = memory if memory is not None else tower_init(b, mc.capacity, d)

        def per_cycle(state, xs):
            content_c, key_c, query_c, ask_c, write_c = xs
            state, got, found, slot = tower_read(
                state, charge, mc.threshold, query=None if charge_only else query_c, active=ask_c
            )
            state = tower_write(state, content_c, charge, mc.decay, active=write_c, key=key_c)
            return state, (got, found, slot)

        cycles_first = lambda x: jnp.swapaxes(x, 0, 1)  # noqa: E731
        xs = (cycles_first(content), cycles_first(key), cycles_first(query), ask, write)
        state, (got, found, slot) = jax.lax.scan(per_cycle, state, xs)
        got, found, slot = cycles_first(got), found.T, slot.T  # [B, C, d], [B, C]
        hold_bt = hold[None, :] if pos is None else hold
        per_pos = jnp.einsum(f"bcd,{per_row}->btd", got, onehot) * hold_bt[..., None]
        read_at = jnp.einsum(f"bc,{per_row}->bt", found.astype(jnp.float32), onehot) * hold_bt > 0  # [B, T]
        gate = nn.sigmoid(nn.Dense(1, name="memory_gate")(h))[..., 0]  # [B, T]
        if force_gate is not None:
            gate = jnp.broadcast_to(jnp.asarray(force_gate, jnp.float32), (b, t))
        out = h if cut else h + gate[..., None] * per_pos
        aux = {
            "memory": state,
            "memory_queries": jnp.sum(ask.T, axis=1).astype(jnp.float32),
            "hold_phases": jnp.broadcast_to(jnp.sum(has_hold, axis=0).astype(jnp.float32), (b,)),
            "memory_hits": jnp.sum(found, axis=1).astype(jnp.float32),
            "memory_slot": slot,
            "memory_read": read_at,
            "memory_gate": gate,
        }
        return out, aux

    @nn.compact
    def __call__(
        self,
        tokens: jax.Array,
        *,
        train: bool = False,
        step: int | jax.Array = 0,
        conditions: jax.Array | None = None,
        memory: dict | None = None,
        force_breath_weight: float | jax.Array | None = None,
        force_silence_gate: float | jax.Array | None = None,
        force_memory_gate: float | jax.Array | None = None,
        cut_memory: bool = False,
        charge_only_memory: bool = False,
        state: dict | None = None,
    ):
        """Next-token logits through spiral-attention blocks gated by the breath clock and silence.

        Args:
          tokens: ``[B, T]`` int token ids (glyph ids on mycelial data).
          train: apply the breath phases' dropout (``"dropout"`` rng) and the memory query coin (``"sample"``).
          step: the training step (the breath clock with ``breath.clock: step``).
          conditions: ``[B, 5]`` Soma conditions (latency, voltage, temperature, error rate, bandwidth);
            None: the calm field :data:`spiraljax.ops.soma.DEFAULT_CONDITIONS`.
          memory: a TowerMemory state to start from (``aux["memory"]`` of an earlier call); None: empty.
            With ``state`` the tower is ``state["memory"]`` and this must be None.
          force_breath_weight, force_silence_gate, force_memory_gate: set that quantity (scalar or
            broadcastable to ``[B, T]``) instead of computing it: the causality suite's interventions.
          cut_memory: skip the memory read (the control); charge_only_memory: read by field charge only.
          state: the carried state (:meth:`initial_state`, or ``aux["state"]`` of the previous window of the
            same documents): key/value caches, document position and silence count, TowerMemory; None:
            the window alone, as the start of a document.

        Returns:
          ``(logits, aux)``: ``logits [B, T, vocab_size]`` float32 (causal); ``aux`` holds
          ``breath_weight`` and ``silence_gate`` ``[B, T]``, ``field_charge`` ``[B, 2]``, ``phase`` ``[T]``,
          ``hidden_var`` ``[B]``, ``metrics``, with the rhythmic loss ``token_weights`` ``[B, T]`` (and
          ``target_weights`` ``[V]``), and with memory on its state and reads (``memory``,
          ``memory_read`` ``[B, T]``, ``memory_gate`` ``[B, T]``, ...); with ``state``, ``aux["state"]`` is the
          state after the window (and ``phase`` / ``memory_read`` / ... are per row, ``[B, T]``).
        """
        cfg = self.cfg
        b, t = tokens.shape
        pos = None
        if state is not None:
            if memory is not None:
                raise ValueError("Spiralformer: with state= the TowerMemory is state['memory']; memory= must be None")
            check_state_like(state, self.initial_state(b))
            pos, memory = state["pos"], state.get("memory")
        if conditions is None:
            conditions = jnp.broadcast_to(jnp.asarray(DEFAULT_CONDITIONS, jnp.float32), (b, 5))
        charge = field_charge(conditions)
        x = nn.Embed(cfg.vocab_size, cfg.d_model, embedding_init=nn.initializers.normal(0.02), name="embed")(tokens)
        if cfg.soma:
            x = x + nn.Dense(cfg.d_model, name="soma")(conditions)[:, None, :]
        phases, breath_w, attn_open, drop_rates = self._breath(t, step, pos)
        rows = lambda a: a if a.ndim == 2 else a[None, :]  # noqa: E731  ([T] → [1, T]; per-row [B, T] stays)
        # every rate 0 (the default): no dropout and no RNG draw in the blocks (11 % of the femto step)
        drop_rates = rows(drop_rates) if cfg.breath.enabled and any(r > 0 for r in cfg.breath.dropout) else None
        breath_w = jnp.broadcast_to(breath_w, (b, t))
        if force_breath_weight is not None:
            breath_w = jnp.broadcast_to(jnp.asarray(force_breath_weight, jnp.float32), (b, t))
        frac = silence_fraction(tokens) if state is None else silence_fraction(tokens, state["silent"], pos)
        gate = {
            "scale": jnp.where(frac > cfg.silence.threshold, 1.0 - frac, 1.0),
            "off": jnp.where(frac > cfg.silence.threshold, 0.0, 1.0),
            "none": jnp.ones_like(frac),
        }[cfg.silence.gate]
        if force_silence_gate is not None:
            gate = jnp.broadcast_to(jnp.asarray(force_silence_gate, jnp.float32), (b, t))
        key_mask = tokens != 0 if cfg.silence.key_mask else None
        offsets = cfg.offsets(t if state is None else cfg.cache_length + t)
        hidden = int(cfg.mlp_ratio * cfg.d_model)
        block = maybe_remat(SpiralBlock, cfg.remat, static_argnums=(6,))  # train (argument 6) is static
        new_layers = {}
        for i in range(cfg.n_layers):
            layer = block(
                cfg.n_heads,
                hidden,
                offsets,
                cfg.spiral.impl,
                cfg.lora_rank,
                cfg.lora_alpha,
                cfg.smear_keys,
                compute_dtype(cfg.dtype),
                name=f"block_{i}",
            )
            args = (x, key_mask, breath_w, gate * rows(attn_open), drop_rates, train)
            if state is None:
                x = layer(*args)
            else:
                x, new_layers[f"block_{i}"] = layer(*args, state["layers"][f"block_{i}"])
        aux = {"breath_weight": breath_w, "silence_gate": gate, "field_charge": charge, "phase": phases}
        if cfg.memory.enabled:
            x, memory_aux = self._memory(
                x, tokens, phases, charge, step, memory, train, force_memory_gate, cut_memory, charge_only_memory, pos
            )
            aux.update(memory_aux)
        if state is not None:
            silent = jnp.isin(tokens, jnp.asarray(SILENCE_IDS)).astype(jnp.float32)
            aux["state"] = {"layers": new_layers, "pos": pos + t, "silent": state["silent"] + jnp.sum(silent, axis=1)}
            if cfg.memory.enabled:
                aux["state"]["memory"] = aux["memory"]
        x = nn.LayerNorm(name="ln_f")(x)
        aux["hidden_var"] = jnp.var(x, axis=(1, 2))
        logits = nn.Dense(cfg.vocab_size, name="head")(x).astype(jnp.float32)
        if cfg.breath.enabled and cfg.breath.rhythmic_loss:  # = rhythm.rhythmic_token_weights(targets, …)
            aux["token_weights"] = breath_w
            if cfg.breath.active_boost != 1.0:
                aux["target_weights"] = rhythm.target_weight_table(cfg.vocab_size, SILENCE_IDS, cfg.breath.active_boost)
        metrics = {"breath_weight": jnp.mean(breath_w), "silence_gate": jnp.mean(gate)}
        if cfg.memory.enabled:
            metrics["b2q"] = jnp.sum(aux["memory_queries"]) / jnp.maximum(jnp.sum(aux["hold_phases"]), 1.0)
        aux["metrics"] = metrics
        return logits, aux
