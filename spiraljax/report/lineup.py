"""What the report trains: the model line-up and the budgets.

Every language-model entry trains on byte-level TinyShakespeare with the same batch, sequence length,
steps and data order (the batch of step s is a function of the seed and s), so the families are
compared at equal budget. Recall entries train on MQAR at equal budget. A budget rescales the
shipped configs by overrides only; ``{steps}`` in an entry's overrides is filled with the budget's
step count (e.g. the Hebbian curriculum spans the whole run).
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Entry:
    """One model of the report: a shipped config plus overrides."""

    name: str
    config: str
    overrides: tuple[str, ...] = ()
    smoke: tuple[str, ...] = ()  # extra overrides that shrink the model for --budget smoke
    causality: bool = False  # run the causality suite (R intervention) on every seed


@dataclass(frozen=True)
class Budget:
    """How long each run trains and how much is evaluated."""

    name: str
    steps: int
    recall_steps: int | None  # None: the recall configs' own step counts
    seeds: int = 3
    recall_seeds: int = 3
    recall_lengths: tuple[int, ...] = (64, 128, 256, 512, 1024)
    recall_batches: int = 4
    causality_sequences: int = 100
    eval_batches: int | None = None  # None: the configs' own
    overrides: tuple[str, ...] = ()
    description: str = ""


_SMALL_LM = (
    "model.seq_len=32",
    "model.d_model=32",
    "model.n_layers=1",
    "train.batch_size=4",
    "eval.batch_size=4",
    "eval.sample_tokens=0",
)
_SMALL_HEADS = ("model.n_heads=2",)

LM_ENTRIES: tuple[Entry, ...] = (
    Entry("transformer", "configs/transformer_tiny.yaml", smoke=_SMALL_LM + _SMALL_HEADS),
    Entry("spiralformer", "configs/spiralformer_shakespeare.yaml", smoke=_SMALL_LM + _SMALL_HEADS),
    Entry(
        "kssm_v1", "configs/kssm_v1_shakespeare.yaml", smoke=_SMALL_LM + ("model.readout_hidden=32",), causality=True
    ),
    Entry(
        "kssm_v3", "configs/kssm_v3_shakespeare.yaml", smoke=_SMALL_LM + ("model.readout_hidden=32",), causality=True
    ),
    Entry(
        "hebbian",
        "configs/hebbian_shakespeare.yaml",
        overrides=("model.curriculum_steps={steps}",),
        smoke=_SMALL_LM + _SMALL_HEADS + ("model.window=4", "model.head_hidden=16", "model.memory_chunk=4"),
    ),
)

RECALL_ENTRIES: tuple[Entry, ...] = (
    Entry("transformer", "configs/transformer_recall.yaml", smoke=_SMALL_LM + _SMALL_HEADS),
    Entry("spiralformer", "configs/spiralformer_recall.yaml", smoke=_SMALL_LM + _SMALL_HEADS),
    Entry(
        "hebbian",
        "configs/hebbian_recall.yaml",
        overrides=("model.curriculum_steps={steps}",),
        smoke=_SMALL_LM + _SMALL_HEADS + ("model.window=4", "model.head_hidden=16", "model.memory_chunk=4"),
    ),
)

BUDGETS: dict[str, Budget] = {
    "smoke": Budget(
        "smoke",
        steps=6,
        recall_steps=6,
        seeds=2,
        recall_seeds=1,
        recall_lengths=(32, 64),
        recall_batches=1,
        causality_sequences=8,
        eval_batches=1,
        overrides=("checkpoint.async_save=false", "checkpoint.every=6"),
        description="tiny models, a handful of steps: checks the pipeline, not the science",
    ),
    "small": Budget(
        "small",
        steps=300,
        recall_steps=None,
        seeds=3,
        recall_seeds=1,
        description="half the shipped language-model steps, one recall seed (≈1 h on 2 CPU cores)",
    ),
    "full": Budget(
        "full", steps=600, recall_steps=None, seeds=3, recall_seeds=3, description="the shipped configs as they are"
    ),
}


@dataclass
class Plan:
    """The runs of one report: entry × seed, with their resolved overrides."""

    budget: Budget
    seeds: tuple[int, ...]
    recall_seeds: tuple[int, ...]
    lm: tuple[Entry, ...] = LM_ENTRIES
    recall: tuple[Entry, ...] = RECALL_ENTRIES
    extra: dict = field(default_factory=dict)


def entry_overrides(entry: Entry, budget: Budget, steps: int | None, seed: int) -> list[str]:
    """Overrides that turn the entry's config into this budget's run for ``seed``."""
    out: list[str] = []
    if steps is not None:
        third = max(steps // 3, 1)
        out += [
            f"train.steps={steps}",
            f"train.eval_every={third}",
            f"checkpoint.every={third}",
            f"train.log_every={max(min(10, steps // 6), 1)}",
            f"train.warmup_steps={min(50, steps // 10)}",
        ]
    out += list(budget.overrides)
    if budget.eval_batches is not None:
        out.append(f"eval.batches={budget.eval_batches}")
    if budget.name == "smoke":
        out += list(entry.smoke)
    out += [f"train.seed={seed}", "train.progress=false"]
    out += [o.replace("{steps}", str(steps)) for o in entry.overrides if steps is not None or "{steps}" not in o]
    return out
