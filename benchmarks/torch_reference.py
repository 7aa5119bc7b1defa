"""PyTorch reference train steps of spiraljax's dense baseline and Spiralformer, written from the math.

Benchmark-only: torch is the optional ``bench`` extra (``pip install -e '.[bench]'``), never a
runtime dependency of spiraljax, and nothing in the package imports this file. The modules match
spiraljax's parameter shapes one for one (``benchmarks/peer.py`` asserts the parameter counts are
equal) and compute the same functions; parameters are *not* copied over, so the two sides start from
different (same-distribution) initialisations and only their speed is compared.

Dense baseline (:class:`DenseLM`, ``spiraljax.models.transformer``) — exact port:
  token embedding N(0, 0.02) → n_layers pre-norm blocks ``x + Attn(LN x)``, ``x + MLP(LN x)`` →
  LayerNorm → logits (tied: ``x Eᵀ``, else a bias-free head). LayerNorm ε = 1e-6 (Flax's). Attn:
  bias-free ``qkv [d → 3·H·D]`` (same layout as Flax's ``[d, 3, H, D]`` kernel), rotate-half RoPE
  (base 10⁴, fp32) on q and k, optional smeared keys ``k̃_j = m_h k_j + (1 − m_h) k_{j−1}`` with
  ``m_h = σ(w_h)`` after RoPE, causal softmax attention (``F.scaled_dot_product_attention(is_causal)``
  — the nanoGPT way; same numbers as spiraljax's masked softmax), bias-free ``out [H·D → d]``.
  MLP: SwiGLU ``W_down(silu(W_gate x) ⊙ W_up x)`` with hidden ``int(ratio·d·2/3)``, or GELU
  (tanh approximation, Flax's default) with hidden ``int(ratio·d)``. Window attention and LoRA are
  not ported (the benchmark configs do not use them). Dropout 0 (not ported).

Spiralformer (:class:`SpiralLM`, ``spiraljax.models.spiralformer``) — every parameter and the whole
training forward pass are ported: soma (``conditions [B, 5] → d`` added to every position), breath
clock (phase per position from ``durations``, block weight ``w_t``, rhythmic-attention gate), silence
gate (share of silence glyphs in the causal prefix), PAD key mask (diagonal kept), spiral sparse
attention (shift k, v by each offset, softmax over the offset axis — spiraljax's ``impl="sparse"``, the
original's algorithm, also run for ``"auto"``; ``impl="dense"`` uses a masked full attention like
spiraljax's), GELU MLP, TowerMemory (pool the
breath cycles, query/key projections, per-cycle read with the hard-argmax / straight-through soft
read and write-over-weakest, gated add at hold positions), final LayerNorm, biased head, and the
rhythmic loss weights (breath weight per position). Simplifications, stated precisely:

* contemplative dropout is not applied: the configs' rates are all 0, where spiraljax skips
  ``phase_dropout`` too (it is the identity in value there);
* ``breath.clock = "step"``, ``active_boost ≠ 1``, LoRA and ``smear_keys`` for the Spiralformer are
  not ported (the femto config uses none of them; the constructor raises if asked);
* the TowerMemory query coin (Bernoulli(query_prob) per sequence and cycle) comes from torch's RNG,
  so which hold phases query differs from JAX's draw (same distribution, same amount of compute);
* the aux outputs that do not feed the loss (``hidden_var``, ``memory_slot``, metrics) are skipped —
  XLA removes them from the compiled JAX step as dead code as well.

Optimizer (:func:`make_torch_optimizer`, ``spiraljax.train.optim``): clip by global norm, then AdamW
(β, ε = 1e-8, decoupled weight decay on tensors of ndim ≥ 2 only) at the warmup + cosine learning
rate of :func:`lr_at`; a non-finite loss or gradient norm skips the update, as spiraljax's step does.
Initialisation: lecun-normal (std 1/√fan_in) kernels, N(0, 0.02) embeddings — same scales, different
draws (Flax truncates the lecun normal; irrelevant to speed).
"""

from __future__ import annotations

import functools
import math
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

LN_EPS = 1e-6  # flax.linen.LayerNorm default


def _linear(fan_in: int, fan_out: int, bias: bool = False) -> nn.Linear:
    lin = nn.Linear(fan_in, fan_out, bias=bias)
    nn.init.normal_(lin.weight, std=fan_in**-0.5)
    if bias:
        nn.init.zeros_(lin.bias)
    return lin


@functools.lru_cache(maxsize=16)
def rope_tables(t: int, d: int, base: float = 10000.0) -> tuple[torch.Tensor, torch.Tensor]:
    """``C = [cos, cos]``, ``S = [−sin, sin]`` ``[T, 1, D]`` of angle ``pos · base^(−2i/D)``, made once per (T, D)."""
    inv_freq = base ** (-torch.arange(0, d, 2, dtype=torch.float32) / d)
    ang = torch.arange(t, dtype=torch.float32)[:, None] * inv_freq  # [T, D/2]
    cos, sin = ang.cos(), ang.sin()
    return torch.cat([cos, cos], -1)[:, None, :], torch.cat([-sin, sin], -1)[:, None, :]


def rope(x: torch.Tensor, base: float = 10000.0) -> torch.Tensor:
    """Rotate-half RoPE on ``[B, T, ..., D]`` (time second): ``[x1, x2] → [x1 cos − x2 sin, x2 cos + x1 sin]``,
    computed as ``x·C + roll(x, D/2)·S`` (two products instead of four, no split)."""
    c, s = rope_tables(x.shape[1], x.shape[-1], base)
    if x.ndim > 4:  # e.g. q and k stacked [B, T, 2, H, D]: one pass for both
        c, s = (a.view(a.shape[0], *([1] * (x.ndim - 3)), a.shape[-1]) for a in (c, s))
    xf = x.float()
    return torch.addcmul(xf * c, xf.roll(x.shape[-1] // 2, dims=-1), s).to(x.dtype)


def shift_time(x: torch.Tensor, offset: int) -> torch.Tensor:
    """``y[:, i] = x[:, i − offset]``, zeros where out of range (offset ≥ 0)."""
    n = x.shape[1]
    if offset == 0:
        return x
    if offset >= n:
        return torch.zeros_like(x)
    pad = [0, 0] * (x.ndim - 2) + [offset, 0]
    return F.pad(x, pad)[:, :n]


def powers_of_two(n: int) -> list[int]:
    """``{0} ∪ {2^k : 2^k < n}``."""
    return [0] + [2**k for k in range(max(int(math.log2(max(n - 1, 1))) + 1, 0)) if 2**k < n]


class Attention(nn.Module):
    """``W_o · attend(RoPE(x W_q), RoPE(x W_k) [smeared], x W_v)`` on ``[B, T, d]``."""

    def __init__(self, d: int, n_heads: int, smear: bool = False, rope: bool = True):
        super().__init__()
        self.h, self.dh, self.rope = n_heads, d // n_heads, rope
        self.qkv = _linear(d, 3 * d)
        self.out = _linear(d, d)
        self.smear = nn.Parameter(torch.zeros(n_heads)) if smear else None

    def forward(self, x: torch.Tensor, attend) -> torch.Tensor:
        b, t, d = x.shape
        qkv = self.qkv(x).view(b, t, 3, self.h, self.dh)
        qk, v = qkv.split([2, 1], dim=2)  # split/unbind: their backward concatenates (indexing's zero-fills)
        q, k = (rope(qk) if self.rope else qk).unbind(2)
        v = v.squeeze(2)
        if self.smear is not None:
            m = torch.sigmoid(self.smear)[:, None]  # [H, 1]
            k = m * k + (1.0 - m) * shift_time(k, 1)
        return self.out(attend(q, k, v).reshape(b, t, d))


def causal_attend(q, k, v):
    """Dense causal softmax attention, ``[B, T, H, D]`` in and out."""
    o = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=True)
    return o.transpose(1, 2)


class MLP(nn.Module):
    def __init__(self, d: int, hidden: int, kind: str):
        super().__init__()
        self.kind = kind
        self.up = _linear(d, hidden)
        self.gate = _linear(d, hidden) if kind == "swiglu" else None
        self.down = _linear(hidden, d)

    def forward(self, x):
        if self.kind == "swiglu":
            return self.down(F.silu(self.gate(x)) * self.up(x))
        # "gelu": tanh approximation, Flax's default (spiraljax's function); "gelu_exact": erf GELU, nanoGPT's
        # (only for the port check against nanoGPT: torch's CPU tanh-GELU kernel is ≈ 2.8× slower fwd+bwd)
        return self.down(F.gelu(self.up(x), approximate="tanh" if self.kind == "gelu" else "none"))


class DenseBlock(nn.Module):
    def __init__(self, d, n_heads, hidden, kind, smear, rope: bool = True):
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(d, eps=LN_EPS), nn.LayerNorm(d, eps=LN_EPS)
        self.attn = Attention(d, n_heads, smear, rope)
        self.mlp = MLP(d, hidden, kind)

    def forward(self, x):
        x = x + self.attn(self.ln1(x), causal_attend)
        return x + self.mlp(self.ln2(x))


class DenseLM(nn.Module):
    """The dense baseline of ``spiraljax.models.transformer`` (see the module docstring).

    ``learned_positions = N > 0`` (only for the port check against nanoGPT, whose configuration it is):
    a learned absolute position table ``[N, d]`` added to the embedding, ``x = E[tok] + P[pos]``, and no
    RoPE; 0 (spiraljax's model): RoPE on q and k."""

    def __init__(
        self,
        vocab_size: int,
        d_model: int,
        n_layers: int,
        n_heads: int,
        mlp_ratio: float = 4.0,
        mlp_kind: str = "swiglu",
        tie_embeddings: bool = True,
        smear_keys: bool = True,
        learned_positions: int = 0,
    ):
        super().__init__()
        hidden = int(mlp_ratio * d_model * (2 / 3 if mlp_kind == "swiglu" else 1))  # kinds: swiglu, gelu, gelu_exact
        self.embed = nn.Embedding(vocab_size, d_model)
        nn.init.normal_(self.embed.weight, std=0.02)
        self.pos = nn.Embedding(learned_positions, d_model) if learned_positions else None
        if self.pos is not None:
            nn.init.normal_(self.pos.weight, std=0.02)
        self.blocks = nn.ModuleList(
            DenseBlock(d_model, n_heads, hidden, mlp_kind, smear_keys, rope=self.pos is None) for _ in range(n_layers)
        )
        self.ln_f = nn.LayerNorm(d_model, eps=LN_EPS)
        self.head = None if tie_embeddings else _linear(d_model, vocab_size)

    @classmethod
    def from_config(cls, m) -> "DenseLM":
        """From spiraljax's ``TransformerConfig`` (``cfg.model``)."""
        if getattr(m, "window", None) is not None or getattr(m, "lora_rank", 0):
            raise NotImplementedError("torch reference: window attention / LoRA are not ported")
        return cls(
            m.vocab_size, m.d_model, m.n_layers, m.n_heads, m.mlp_ratio, m.mlp_kind, m.tie_embeddings, m.smear_keys
        )

    def forward(self, tokens: torch.Tensor, **_) -> tuple[torch.Tensor, dict]:
        x = self.embed(tokens)
        if self.pos is not None:
            x = x + self.pos(torch.arange(tokens.shape[1], device=tokens.device))  # a lookup, as nanoGPT's wpe
        for blk in self.blocks:
            x = blk(x)
        x = self.ln_f(x)
        logits = x @ self.embed.weight.t() if self.head is None else self.head(x)
        return logits, {}


# --------------------------------------------------------------------------- Spiralformer
INHALE, HOLD, EXHALE, PAUSE = range(4)


def breath_phases(t: int, durations: Sequence[int]) -> torch.Tensor:
    """Phase of positions 0..t−1: ``searchsorted(cumsum(durations), pos mod Σ, right)``."""
    bounds = torch.cumsum(torch.tensor(durations), 0)
    return torch.searchsorted(bounds, torch.arange(t) % int(bounds[-1]), right=True)


def field_charge(c: torch.Tensor) -> torch.Tensor:
    """conditions ``[B, 5]`` (latency, voltage, temperature, error, bandwidth) → (ep, tu) ``[B, 2]``."""
    lat, volt, temp, err, bw = c.unbind(-1)
    tu = (0.7 * lat + 0.3 * (1 - bw)).clamp(0, 1)
    ep = (0.5 * err + 0.25 * (1 - 2 * (volt - 0.5).abs()) + 0.25 * (2 * (temp - 0.5).abs())).clamp(0, 1)
    return torch.stack([ep, tu], -1)


def spiral_attend(q, k, v, offsets: Sequence[int], key_mask: torch.Tensor | None, impl: str = "sparse"):
    """Spiral attention: query i attends key i − o for o in offsets (PAD keys masked, diagonal kept)."""
    b, t, h, dh = q.shape
    scale = dh**-0.5
    pos = torch.arange(t)
    if impl == "dense":
        diff = pos[:, None] - pos[None, :]
        mask = torch.isin(diff, torch.tensor(list(offsets)))[None, None]  # [1, 1, T, S]
        if key_mask is not None:
            mask = mask & (key_mask[:, None, None, :] | torch.eye(t, dtype=torch.bool)[None, None])
        o = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_mask=mask)
        return o.transpose(1, 2)
    k_sh = torch.stack([shift_time(k, o) for o in offsets], 2)  # [B, T, O, H, D]
    v_sh = torch.stack([shift_time(v, o) for o in offsets], 2)
    scores = torch.einsum("bthd,btohd->btho", q, k_sh) * scale
    cols = []
    for o in offsets:
        ok = (pos - o >= 0)[None, :].expand(b, t)
        if key_mask is not None and o != 0:
            ok = ok & shift_time(key_mask, o)
        cols.append(ok)
    valid = torch.stack(cols, -1)[:, :, None, :]  # [B, T, 1, O]
    w = torch.softmax(scores.masked_fill(~valid, float("-inf")), dim=-1)  # o = 0 always valid
    return torch.einsum("btho,btohd->bthd", w, v_sh)


class SpiralBlock(nn.Module):
    """``x ← x + w_t · g_t · Attn(LN x)``, ``x ← x + w_t · MLP_gelu(LN x)``."""

    def __init__(self, d, n_heads, hidden):
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(d, eps=LN_EPS), nn.LayerNorm(d, eps=LN_EPS)
        self.attn = Attention(d, n_heads)
        self.mlp = MLP(d, hidden, "gelu")

    def forward(self, x, attend, breath_w, attn_gate):
        x = x + breath_w[..., None] * (self.attn(self.ln1(x), attend) * attn_gate[..., None])
        return x + breath_w[..., None] * self.mlp(self.ln2(x))


class SpiralLM(nn.Module):
    """Spiralformer of ``spiraljax.models.spiralformer`` (see the module docstring for what is simplified)."""

    def __init__(self, cfg, silence_ids: Sequence[int]):
        super().__init__()
        if (
            cfg.lora_rank
            or cfg.smear_keys
            or cfg.breath.clock != "position"
            or cfg.breath.active_boost != 1.0
            or any(cfg.breath.dropout)
        ):
            raise NotImplementedError(
                "torch reference: LoRA, smeared keys, the step clock, active_boost and "
                "contemplative dropout of the Spiralformer are not ported"
            )
        self.cfg = cfg
        d = cfg.d_model
        self.register_buffer("silence_ids", torch.as_tensor(np.asarray(silence_ids), dtype=torch.long))
        self.embed = nn.Embedding(cfg.vocab_size, d)
        nn.init.normal_(self.embed.weight, std=0.02)
        self.soma = _linear(5, d, bias=True) if cfg.soma else None
        self.blocks = nn.ModuleList(SpiralBlock(d, cfg.n_heads, int(cfg.mlp_ratio * d)) for _ in range(cfg.n_layers))
        if cfg.memory.enabled:
            self.memory_query, self.memory_key = _linear(d, d), _linear(d, d)
            self.memory_gate = _linear(d, 1, bias=True)
        self.ln_f = nn.LayerNorm(d, eps=LN_EPS)
        self.head = _linear(d, cfg.vocab_size, bias=True)
        sc = cfg.spiral
        if sc.pattern != "pow2" or sc.n_back or sc.every:
            raise NotImplementedError("torch reference: only the pow2 spiral pattern is ported")

    def _breath(self, t):
        bc = self.cfg.breath
        phases = breath_phases(t, bc.durations)
        if not bc.enabled:
            one = torch.ones(t)
            return phases, one, one
        weights = torch.tensor(bc.weights, dtype=torch.float32)[phases]
        attn_open = torch.isin(phases, torch.tensor(bc.attention_phases)).float()
        return phases, weights, attn_open

    def _memory(self, h, tokens, phases, charge):
        """TowerMemory, training mode (see ``Spiralformer._memory``)."""
        mc, bc = self.cfg.memory, self.cfg.breath
        b, t, d = h.shape
        cycle = sum(bc.durations)
        n_cyc = t // cycle + 2
        onehot = F.one_hot(torch.arange(t) // cycle, n_cyc).float()  # [T, C]
        valid = (tokens != 0).float()

        def pool(weights):
            count = weights @ onehot  # [B, C]
            pooled = torch.einsum("btd,bt,tc->bcd", h, weights, onehot) / count.clamp(min=1.0)[..., None]
            return pooled, count

        content, count = pool(valid)
        before_hold, _ = pool(valid * (phases == INHALE).float()[None, :])
        query, key = self.memory_query(before_hold), self.memory_key(content)  # [B, C, d]
        hold = (phases == HOLD).float()
        has_hold = (hold @ onehot) > 0  # [C]
        coin = (
            torch.rand(n_cyc, b) < mc.query_prob
            if (self.training and mc.query_prob < 1.0)
            else torch.ones(n_cyc, b, dtype=torch.bool)
        )
        ask = coin & has_hold[:, None]  # [C, B]
        write = (count > 0).T & (torch.arange(n_cyc) % mc.write_every == 0)[:, None]
        m = mc.capacity
        t_content, t_key = h.new_zeros(b, m, d), h.new_zeros(b, m, d)
        t_charge, t_strength = h.new_zeros(b, m, 2), h.new_zeros(b, m)
        t_valid = torch.zeros(b, m, dtype=torch.bool)
        charge_sim_of = lambda tc: 1.0 - (tc - charge[:, None, :]).abs().sum(-1) / 2.0  # noqa: E731
        got = []
        for c in range(n_cyc):
            # read
            q = query[:, c]
            dot = torch.einsum("bk,bmk->bm", q, t_key)
            sq = (q * q).sum(-1)[:, None] * (t_key * t_key).sum(-1)
            sim = 0.5 * (charge_sim_of(t_charge) + dot * torch.rsqrt(sq.clamp(min=1e-12)))
            sim = torch.where(t_valid, sim, float("-inf"))
            best = sim.argmax(-1)
            found = (sim.gather(-1, best[:, None])[:, 0] > mc.threshold) & ask[c]
            hard = F.one_hot(best, m).float()
            soft = torch.softmax(torch.where(t_valid, sim, -1e9) / 0.1, dim=-1)
            weights = hard + (soft - soft.detach())
            got.append(torch.einsum("bm,bmd->bd", weights, t_content) * found[:, None])
            t_strength = torch.minimum(t_strength + hard * (0.1 * found[:, None]), torch.ones(()))
            # write
            score = torch.where(t_valid, t_strength, -1.0)
            slot = F.one_hot(score.argmin(-1), m).bool() & write[c][:, None]
            t_content = torch.where(slot[..., None], content[:, c, None, :], t_content)
            t_key = torch.where(slot[..., None], key[:, c, None, :], t_key)
            t_charge = torch.where(slot[..., None], charge[:, None, :], t_charge)
            t_strength = torch.where(slot, 1.0, t_strength * mc.decay)
            t_valid = t_valid | slot
        got = torch.stack(got, 1)  # [B, C, d]
        per_pos = torch.einsum("bcd,tc->btd", got, onehot) * hold[None, :, None]
        gate = torch.sigmoid(self.memory_gate(h))  # [B, T, 1]
        return h + gate * per_pos

    def forward(self, tokens: torch.Tensor, conditions: torch.Tensor | None = None, **_):
        cfg = self.cfg
        b, t = tokens.shape
        if conditions is None:
            conditions = torch.tensor([0.1, 0.5, 0.5, 0.05, 0.9]).expand(b, 5)
        charge = field_charge(conditions)
        x = self.embed(tokens)
        if self.soma is not None:
            x = x + self.soma(conditions)[:, None, :]
        phases, breath_w, attn_open = self._breath(t)
        breath_w = breath_w.expand(b, t)
        silent = torch.isin(tokens, self.silence_ids).float()
        frac = silent.cumsum(1) / torch.arange(1, t + 1)
        thr = cfg.silence.threshold
        gate = {
            "scale": torch.where(frac > thr, 1.0 - frac, 1.0),
            "off": torch.where(frac > thr, 0.0, 1.0),
            "none": torch.ones_like(frac),
        }[cfg.silence.gate]
        key_mask = tokens != 0 if cfg.silence.key_mask else None
        offsets = powers_of_two(t)

        def attend(q, k, v):
            return spiral_attend(q, k, v, offsets, key_mask, cfg.spiral.impl)

        for blk in self.blocks:
            x = blk(x, attend, breath_w, gate * attn_open[None, :])
        if cfg.memory.enabled:
            x = self._memory(x, tokens, phases, charge)
        x = self.ln_f(x)
        aux = {"token_weights": breath_w} if cfg.breath.enabled and cfg.breath.rhythmic_loss else {}
        return self.head(x), aux


# --------------------------------------------------------------------------- training step
def lr_at(step: int, cfg) -> float:
    """optax.warmup_cosine_decay_schedule as ``spiraljax.train.optim.lr_schedule`` builds it."""
    warmup = min(cfg.warmup_steps, max(cfg.steps - 1, 0))
    decay_steps = max(cfg.steps, warmup + 1)
    end = cfg.lr * cfg.min_lr_ratio
    if step < warmup:
        return cfg.lr * step / warmup
    frac = min(step - warmup, decay_steps - warmup) / (decay_steps - warmup)
    return end + (cfg.lr - end) * 0.5 * (1 + math.cos(math.pi * frac))


def make_torch_optimizer(model: nn.Module, cfg) -> torch.optim.AdamW:
    """AdamW(β1, β2, ε = 1e-8) with weight decay on ndim ≥ 2 tensors only (``optim.decay_mask``)."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.ndim >= 2], "weight_decay": cfg.weight_decay},
        {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.b1, cfg.b2), eps=1e-8)


def make_torch_step(model: nn.Module, cfg_train):
    """``step(batch) -> {"loss", "grad_norm"}``: forward, weighted CE, backward, clip, AdamW.

    ``batch``: torch tensors ``inputs``, ``targets``, ``mask`` (+ ``conditions``). CE is
    ``Σ nll·w / Σ w`` with ``w = mask × token_weights`` (spiraljax's ``loss_and_weight``).
    """
    opt = make_torch_optimizer(model, cfg_train)
    params = [p for g in opt.param_groups for p in g["params"]]
    state = {"step": 0}
    model.train()

    def step(batch: dict) -> dict:
        lr = lr_at(state["step"], cfg_train)
        for g in opt.param_groups:
            g["lr"] = lr
        extras = {k: v for k, v in batch.items() if k not in ("inputs", "targets", "mask")}
        logits, aux = model(batch["inputs"], **extras)
        nll = F.cross_entropy(logits.flatten(0, 1).float(), batch["targets"].flatten(), reduction="none")
        w = batch["mask"].float().flatten()
        if "token_weights" in aux:
            w = w * aux["token_weights"].flatten()
        loss = (nll * w).sum() / w.sum().clamp(min=1e-9)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(params, cfg_train.clip_norm)
        if torch.isfinite(loss) and torch.isfinite(norm):  # else skip the update, as spiraljax does
            opt.step()
        state["step"] += 1
        return {"loss": loss.detach(), "grad_norm": norm}

    return step


def param_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def build_reference(model_cfg, silence_ids: Sequence[int] = (0,)) -> nn.Module:
    """The torch model for a spiraljax model config (``transformer`` or ``spiralformer`` family)."""
    if model_cfg.family == "transformer":
        return DenseLM.from_config(model_cfg)
    if model_cfg.family == "spiralformer":
        return SpiralLM(model_cfg, silence_ids)
    raise NotImplementedError(f"torch reference: family {model_cfg.family!r} is not ported")


def load_flax_params(model: nn.Module, params) -> nn.Module:
    """Copy spiraljax (Flax) parameters into the torch model, in place — for equivalence checks:
    with the same weights both sides must give the same logits."""

    def t(x):
        return torch.from_numpy(np.array(x, np.float32))  # a writable copy

    def lin(mod, node):
        k = np.asarray(node["kernel"], np.float32)
        mod.weight.data.copy_(t(k.reshape(mod.in_features, mod.out_features).T))
        if mod.bias is not None:
            mod.bias.data.copy_(t(node["bias"]))

    def ln(mod, node):
        mod.weight.data.copy_(t(node["scale"]))
        mod.bias.data.copy_(t(node["bias"]))

    model.embed.weight.data.copy_(t(params["embed"]["embedding"]))
    ln(model.ln_f, params["ln_f"])
    for i, blk in enumerate(model.blocks):
        p = params[f"block_{i}"]
        ln(blk.ln1, p["LayerNorm_0"])
        ln(blk.ln2, p["LayerNorm_1"])
        lin(blk.attn.qkv, p["attn"]["qkv"])
        lin(blk.attn.out, p["attn"]["out"])
        if blk.attn.smear is not None:
            blk.attn.smear.data.copy_(t(p["attn"]["smear"]))
        mlp = p["mlp"]
        for name in ("up", "down", "gate"):
            if getattr(blk.mlp, name) is not None:
                lin(getattr(blk.mlp, name), mlp[name])
    for name in ("head", "soma", "memory_query", "memory_key", "memory_gate"):
        if getattr(model, name, None) is not None:
            lin(getattr(model, name), params[name])
    return model
