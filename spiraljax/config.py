"""Typed, validated experiment configuration.

A config is a tree of pydantic sections (model / data / train / eval /
checkpoint / mesh) loaded from YAML, with dotted ``--set key=value`` overrides.
The ``model`` and ``data`` sections are polymorphic: ``model.family`` and
``data.source`` pick a subclass registered by the family/source module, so each
family owns its own fields and unknown keys are still rejected.

Every validation problem raises :class:`ConfigError` whose message is one line
naming the offending key and the file it came from.
"""
from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from spiraljax.errors import ConfigError

PROJECT_ROOT = Path(__file__).resolve().parent.parent


class Section(BaseModel):
    """Base of every config section: unknown keys are errors, assignment is validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=())


# --------------------------------------------------------------------------- model
class ModelConfig(Section):
    """Fields shared by every autoregressive family; families subclass and add theirs."""

    family: str = "transformer"
    vocab_size: int = Field(256, gt=0)
    seq_len: int = Field(128, gt=0)
    d_model: int = Field(128, gt=0)
    n_layers: int = Field(4, gt=0)
    n_heads: int = Field(4, gt=0)
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    dtype: Literal["float32", "bfloat16"] = "float32"

    @model_validator(mode="after")
    def _heads_divide_width(self) -> "ModelConfig":
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model={self.d_model} is not divisible by n_heads={self.n_heads}")
        return self


# family name -> module that defines and registers its config class and builder
MODEL_MODULES: dict[str, str] = {
    "transformer": "spiraljax.models.transformer",
    "spiralformer": "spiraljax.models.spiralformer",
    "kssm_v1": "spiraljax.models.kssm",
    "kssm_v2": "spiraljax.models.kssm",
    "kssm_v3": "spiraljax.models.kssm",
    "hebbian_lm": "spiraljax.models.hebbian",
    "holographic": "spiraljax.models.holographic",
}
MODEL_CONFIGS: dict[str, type[ModelConfig]] = {}


def register_model_config(family: str):
    """Class decorator: ``@register_model_config("spiralformer")`` on a ModelConfig subclass."""

    def wrap(cls: type[ModelConfig]) -> type[ModelConfig]:
        MODEL_CONFIGS[family] = cls
        return cls

    return wrap


# --------------------------------------------------------------------------- data
class DataConfig(Section):
    """Fields shared by every data source; sources subclass and add theirs."""

    source: str = "text"
    val_fraction: float = Field(0.1, gt=0.0, lt=1.0)


DATA_MODULES: dict[str, str] = {
    "text": "spiraljax.data.text",
    "mycelial": "spiraljax.data.mycelial",
    "mqar": "spiraljax.data.recall",
    "induction": "spiraljax.data.induction",
    "curriculum": "spiraljax.data.curriculum",
}
DATA_CONFIGS: dict[str, type[DataConfig]] = {}


def register_data_config(source: str):
    """Class decorator registering a DataConfig subclass under ``data.source``."""

    def wrap(cls: type[DataConfig]) -> type[DataConfig]:
        DATA_CONFIGS[source] = cls
        return cls

    return wrap


# --------------------------------------------------------------------------- the rest
class TrainConfig(Section):
    steps: int = Field(1000, gt=0)
    batch_size: int = Field(16, gt=0)
    lr: float = Field(3e-3, gt=0.0)
    min_lr_ratio: float = Field(0.1, ge=0.0, le=1.0)
    warmup_steps: int = Field(50, ge=0)
    weight_decay: float = Field(0.1, ge=0.0)
    b1: float = Field(0.9, ge=0.0, lt=1.0)
    b2: float = Field(0.95, ge=0.0, lt=1.0)
    clip_norm: float = Field(1.0, gt=0.0)
    grad_accum: int = Field(1, gt=0)
    trainable: str = "all"  # "all", or a substring of the param paths to train (e.g. "lora")
    seed: int = 0
    eval_every: int = Field(200, gt=0)
    log_every: int = Field(10, gt=0)
    progress: bool = True
    tensorboard: bool = False


class EvalConfig(Section):
    batches: int = Field(8, gt=0)
    batch_size: int = Field(16, gt=0)
    sample_tokens: int = Field(200, ge=0)
    sample_prompt: str = "\n"
    temperature: float = Field(0.8, gt=0.0)
    top_k: int = Field(0, ge=0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)


class CheckpointConfig(Section):
    every: int = Field(200, gt=0)
    keep: int = Field(3, gt=0)
    async_save: bool = True


class MeshConfig(Section):
    """Device mesh ``(data, fsdp, model)``: the batch is split over data × fsdp; parameters and
    optimizer state are sharded over ``fsdp`` (FSDP) and, for attention/MLP kernels, over ``model``
    (tensor parallel: heads and hidden units). ``data = -1`` means 'all remaining devices'."""

    data: int = Field(-1, description="data-parallel size (batch split, parameters replicated); -1: all remaining devices")
    fsdp: int = Field(1, gt=0, description="fully-sharded data-parallel size: batch split and parameters/optimizer state sharded")
    model: int = Field(1, gt=0, description="tensor-parallel size: attention heads and MLP hidden units split")


class Config(Section):
    name: str = "experiment"
    model: ModelConfig = Field(default_factory=ModelConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    checkpoint: CheckpointConfig = Field(default_factory=CheckpointConfig)
    mesh: MeshConfig = Field(default_factory=MeshConfig)

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json", serialize_as_any=True)  # keep family/source subclass fields

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False, allow_unicode=True)


# --------------------------------------------------------------------------- loading
def _lookup(kind: str, name: Any, modules: dict[str, str], registry: dict, where: str) -> type:
    if not isinstance(name, str) or name not in modules:
        raise ConfigError(f"{where}: unknown {kind} {name!r} (choose from {', '.join(sorted(modules))})")
    if name not in registry:
        importlib.import_module(modules[name])
    if name not in registry:
        raise ConfigError(f"{where}: {kind} {name!r} is not implemented in {modules[name]}")
    return registry[name]


def _first_error(err: ValidationError, prefix: str) -> str:
    e = err.errors()[0]
    loc = ".".join(str(p) for p in (prefix, *e["loc"]) if p != "")
    msg = e["msg"]
    if e["type"] == "extra_forbidden":
        msg = "unknown key"
    elif msg.startswith("Value error, "):
        msg = msg[len("Value error, "):]
    scalar = not isinstance(e.get("input"), (dict, list))
    got = f" (got {e.get('input')!r})" if scalar and e["type"] not in ("extra_forbidden", "missing") else ""
    return f"{loc}: {msg}{got}"


def from_dict(raw: dict[str, Any], source: str = "<dict>") -> Config:
    """Validate a plain nested dict into a :class:`Config` (errors name ``source``)."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: top level must be a mapping of sections, got {type(raw).__name__}")
    raw = dict(raw)
    sections: dict[str, Any] = {}
    for key, kind, modules, registry, default in (
        ("model", "model.family", MODEL_MODULES, MODEL_CONFIGS, "transformer"),
        ("data", "data.source", DATA_MODULES, DATA_CONFIGS, "text"),
    ):
        body = raw.pop(key, {}) or {}
        if not isinstance(body, dict):
            raise ConfigError(f"{source}: {key}: must be a mapping, got {body!r}")
        field = "family" if key == "model" else "source"
        cls = _lookup(kind, body.get(field, default), modules, registry, source)
        try:
            sections[key] = cls(**body)
        except ValidationError as err:
            raise ConfigError(f"{source}: {_first_error(err, key)}") from None
    try:
        return Config(**raw, **sections)
    except ValidationError as err:
        raise ConfigError(f"{source}: {_first_error(err, '')}") from None


def _parse_value(text: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def apply_overrides(raw: dict[str, Any], overrides: list[str] | None, source: str) -> dict[str, Any]:
    """Apply ``a.b.c=value`` strings (values parsed as YAML scalars) to a nested dict."""
    raw = yaml.safe_load(yaml.safe_dump(raw))  # deep copy
    for item in overrides or []:
        if "=" not in item:
            raise ConfigError(f"{source}: override {item!r} must look like key=value")
        dotted, value = item.split("=", 1)
        parts = dotted.strip().split(".")
        node = raw
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"{source}: override {dotted!r}: {part!r} is not a section")
            node = child
        node[parts[-1]] = _parse_value(value)
    return raw


def find_config(path: str | Path) -> Path:
    """The config file ``path`` names: as given (absolute, or relative to the current directory), else
    relative to the project root. Raises ConfigError naming every place it looked."""
    path = Path(path)
    if path.is_file():
        return path
    tried = [path.resolve()]
    if not path.is_absolute():
        candidate = PROJECT_ROOT / path
        if candidate.is_file():
            return candidate
        tried.append(candidate)
    raise ConfigError(f"{path}: config file not found (looked in {' and '.join(str(t) for t in tried)})")


def read_yaml(path: str | Path) -> dict[str, Any]:
    """The YAML mapping in ``path`` (see :func:`find_config` for where it is looked up)."""
    path = find_config(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        first = str(err).strip().splitlines()[0]
        raise ConfigError(f"{path}: not valid YAML ({first})") from None
    return raw or {}


def load(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Load a YAML config (or the defaults when ``path`` is None) and apply overrides.

    Args:
      path: YAML file; a relative path is looked up in the current directory, then the project root.
      overrides: ``section.key=value`` strings applied on top (values parsed as YAML scalars).

    Returns:
      The validated :class:`Config`. Raises :class:`ConfigError` (one line naming the culprit) on a
      missing file, invalid YAML, unknown keys or wrong types.
    """
    source = str(path) if path is not None else "<defaults>"
    raw = read_yaml(path) if path is not None else {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: top level must be a mapping of sections")
    return from_dict(apply_overrides(raw, overrides, source), source)


def save(cfg: Config, path: str | Path) -> None:
    Path(path).write_text(cfg.to_yaml(), encoding="utf-8")


def resolve_path(p: str | Path) -> Path:
    """Relative data paths resolve against the cwd first, then the project root."""
    p = Path(p)
    if p.is_absolute() or p.exists():
        return p
    return PROJECT_ROOT / p
