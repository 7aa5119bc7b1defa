"""Typed, validated experiment configuration.

A config is a tree of pydantic sections (model / data / train / eval / checkpoint / mesh) loaded from
YAML, with dotted ``--set key=value`` overrides. The ``model`` and ``data`` sections are polymorphic:
the config class *is* the registry. A :class:`ModelConfig` subclass whose ``family`` field is a
``Literal["name"]`` registers itself under that name and builds its Flax module (``cfg.build()``); a
:class:`DataConfig` subclass does the same with ``source`` and builds its dataset. Loading a config
imports the package ``spiraljax.models`` (or ``spiraljax.data``) once, which imports every family
(source) module. Each family owns exactly the fields it honours, so setting a field a family does not
use is an error (see :meth:`Registered.without_retired` for the one exception, saved configs).

Every validation problem raises :class:`ConfigError` whose message is one line naming the offending key
and the file it came from. ``python train.py --help-config`` lists every field with its description.
"""

from __future__ import annotations

import difflib
import importlib
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, get_args, get_origin

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from spiraljax.errors import ConfigError

PROJECT_ROOT = Path(__file__).resolve().parent.parent


class Section(BaseModel):
    """Base of every config section: unknown keys are errors, assignment is validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=())


class Registered(Section):
    """A polymorphic section: every subclass whose :attr:`KEY` field is annotated ``Literal["name"]``
    registers itself under ``name``. Intermediate classes (plain ``str`` key) register nothing."""

    SECTION: ClassVar[str]  # the section's name in a config: "model" or "data"
    KEY: ClassVar[str]  # the field naming the subclass: "family" or "source"
    PACKAGE: ClassVar[str]  # importing it imports (so registers) every subclass: its
    #                                         FAMILIES / SOURCES table lists the in-tree ones
    REGISTRY: ClassVar[dict[str, type["Registered"]]]
    # Fields this class no longer has, with the value old saved configs carry for them: see without_retired.
    # Accepted until version 0.2.0, which drops RETIRED and without_retired (docs/training.md).
    RETIRED: ClassVar[dict[str, Any]] = {}

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        annotation = cls.model_fields[cls.KEY].annotation
        if get_origin(annotation) is not Literal:
            return
        (name,) = get_args(annotation)
        old = cls.REGISTRY.get(name)
        if old is not None and (old.__module__, old.__qualname__) != (cls.__module__, cls.__qualname__):
            raise TypeError(
                f"{cls.KEY} {name!r} is registered twice: {old.__module__}.{old.__qualname__} "
                f"and {cls.__module__}.{cls.__qualname__}"
            )
        cls.REGISTRY[name] = cls  # the same class again (a module reloaded) replaces itself

    @classmethod
    def registered(cls) -> dict[str, type["Registered"]]:
        """Every registered subclass by name (imports :attr:`PACKAGE` first)."""
        importlib.import_module(cls.PACKAGE)
        return dict(sorted(cls.REGISTRY.items()))

    @classmethod
    def lookup(cls, name: Any, where: str) -> type["Registered"]:
        """The class registered as ``name``; a one-line ConfigError naming the choices otherwise."""
        if not isinstance(name, str) or name not in cls.REGISTRY:
            choices = cls.registered()
            if not isinstance(name, str) or name not in choices:
                raise ConfigError(
                    f"{where}: unknown {cls.SECTION}.{cls.KEY} {name!r} (choose from {', '.join(choices)})"
                )
        return cls.REGISTRY[name]

    @classmethod
    def without_retired(cls, body: dict[str, Any]) -> dict[str, Any]:
        """Compatibility with saved configs: ``body`` without the keys this class no longer has whose
        value is still the one they had when they were dropped (:attr:`RETIRED`).

        Until the model section was split per family, every family carried ``dtype``, ``dropout``,
        ``n_heads`` (and, for holographic, ``d_model``/``n_layers``), every source ``val_fraction``,
        and a run's config.yaml holds them all, e.g. ``dropout: 0.0`` for K-SSM. Such a key with that
        value did nothing then and is dropped silently, so old runs still load (``evaluate.py``,
        ``--resume``). With any other value it stays and is rejected as an unknown key: it would not
        do what it says.
        Applied to config files only, not to ``--set`` overrides."""
        retired = {k: v for k, v in cls.RETIRED.items() if k not in cls.model_fields}
        return {k: v for k, v in body.items() if not (k in retired and v == retired[k])}

    @classmethod
    def parse(cls, body: Any, source: str, default: str) -> "Registered":
        """Validate one section mapping into the subclass its key names."""
        section = cls.SECTION
        if not isinstance(body, dict):
            raise ConfigError(f"{source}: {section}: must be a mapping, got {body!r}")
        name = body.get(cls.KEY, default)
        sub = cls.lookup(name, source)
        try:
            return sub(**body)
        except ValidationError as err:
            msg = _first_error(err, section)
            if err.errors()[0]["type"] == "extra_forbidden":
                msg += f" for {section}.{cls.KEY} {name}"
            raise ConfigError(f"{source}: {msg}") from None


# --------------------------------------------------------------------------- model
# Field types shared by several families (constraint and description; each family sets its default).
DModel = Annotated[int, Field(gt=0, description="width of the hidden state / residual stream")]
NLayers = Annotated[int, Field(gt=0, description="number of stacked layers (blocks)")]
NHeads = Annotated[int, Field(gt=0, description="attention heads per layer (must divide d_model)")]
Dropout = Annotated[float, Field(ge=0.0, lt=1.0, description="dropout rate in training (0 = none)")]
DType = Annotated[
    Literal["float32", "bfloat16"],
    Field(
        description="compute dtype of activations and matmuls; "
        "parameters, optimizer state and the "
        "sensitive parts stay float32 "
        "(spiraljax.nn.precision)"
    ),
]
Remat = Annotated[
    bool,
    Field(
        description="rematerialise every block/layer in the backward pass (nn.remat: "
        "less activation memory, about one more forward pass)"
    ),
]
LoraRank = Annotated[int, Field(ge=0, description="LoRA adapters of rank r on the block projections (0 = none)")]
LoraAlpha = Annotated[float, Field(gt=0, description="LoRA scale α: an adapter adds (α/r)·x A B")]


class ModelConfig(Registered):
    """Fields every model family uses. A family subclasses it (or :class:`AttentionConfig`), narrows
    ``family`` to ``Literal["its_name"]`` (which registers it), adds the fields it honours and
    implements :meth:`build`. Its module must be imported by ``spiraljax/models/__init__.py``."""

    KEY: ClassVar[str] = "family"
    SECTION: ClassVar[str] = "model"
    PACKAGE: ClassVar[str] = "spiraljax.models"
    REGISTRY: ClassVar[dict[str, type[Registered]]] = {}
    # the old shared fields and defaults (before each family declared its own): see without_retired
    RETIRED: ClassVar[dict[str, Any]] = {
        "d_model": 128,
        "n_layers": 4,
        "n_heads": 4,
        "dropout": 0.0,
        "dtype": "float32",
    }

    family: str = Field("transformer", description="model family: picks the config class and the model")
    vocab_size: int = Field(256, gt=0, description="number of token ids the model embeds and predicts")
    seq_len: int = Field(128, gt=0, description="training window length in tokens (the data sources cut it)")

    def build(self):
        """The Flax module of this config. ``logits, aux = model.apply(variables, tokens, *, train=False,
        step=0, **extras)`` with ``logits [B, T, V]`` and ``aux`` a dict of named internals."""
        raise ConfigError(f"model.family {self.family!r} is not a trainable Flax model")


class AttentionConfig(ModelConfig):
    """Fields of the families built from multi-head attention layers."""

    d_model: DModel = 128
    n_layers: NLayers = 4
    n_heads: NHeads = 4

    @model_validator(mode="after")
    def _heads_divide_width(self) -> "AttentionConfig":
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model={self.d_model} is not divisible by n_heads={self.n_heads}")
        return self


# --------------------------------------------------------------------------- data
class DataConfig(Registered):
    """Fields every data source uses. A source subclasses it, narrows ``source`` to
    ``Literal["its_name"]`` (which registers it) and implements :meth:`build`. Its module must be
    imported by ``spiraljax/data/__init__.py``."""

    KEY: ClassVar[str] = "source"
    SECTION: ClassVar[str] = "data"
    PACKAGE: ClassVar[str] = "spiraljax.data"
    REGISTRY: ClassVar[dict[str, type[Registered]]] = {}
    RETIRED: ClassVar[dict[str, Any]] = {"val_fraction": 0.1}  # once shared by every source: see without_retired

    source: str = Field("text", description="data source: picks the config class and the dataset")

    def build(self, cfg: "Config"):
        """The dataset (``spiraljax.data.base.Dataset``) for the whole experiment config ``cfg``."""
        raise NotImplementedError


# --------------------------------------------------------------------------- the rest
class TrainConfig(Section):
    steps: int = Field(1000, gt=0, description="optimizer steps to train")
    batch_size: int = Field(16, gt=0, description="sequences per optimizer step (over all devices)")
    lr: float = Field(3e-3, gt=0.0, description="peak learning rate (after warmup; cosine decay to lr·min_lr_ratio)")
    min_lr_ratio: float = Field(0.1, ge=0.0, le=1.0, description="final learning rate as a share of lr")
    warmup_steps: int = Field(50, ge=0, description="linear learning-rate warmup steps")
    weight_decay: float = Field(0.1, ge=0.0, description="AdamW weight decay, on matrices only (kernels, embeddings)")
    b1: float = Field(0.9, ge=0.0, lt=1.0, description="AdamW β1")
    b2: float = Field(0.95, ge=0.0, lt=1.0, description="AdamW β2")
    clip_norm: float = Field(1.0, gt=0.0, description="global gradient-norm clipping threshold")
    grad_accum: int = Field(1, gt=0, description="micro-batches accumulated per optimizer step")
    carry_state: bool = Field(
        False,
        description="carry the model's state from each window to the next window of "
        "the same batch row, without gradient (truncated BPTT); reset at "
        "document starts (data.source: longdocs)",
    )
    trainable: str = Field("all", description='"all", or a substring of the parameter paths to train (e.g. "lora")')
    seed: int = Field(0, description="seed of the parameters, dropout and the data order")
    eval_every: int = Field(200, gt=0, description="steps between validation passes")
    log_every: int = Field(10, gt=0, description="steps between metrics.jsonl lines")
    progress: bool = Field(True, description="show a progress bar")
    tensorboard: bool = Field(False, description="also write TensorBoard event files")


class EvalConfig(Section):
    batches: int = Field(8, gt=0, description="validation batches per validation pass")
    batch_size: int = Field(16, gt=0, description="sequences per validation batch")
    sample_tokens: int = Field(200, ge=0, description="tokens sampled after each validation pass (0 = none)")
    sample_prompt: str = Field("\n", description="prompt of those samples")
    temperature: float = Field(0.8, gt=0.0, description="sampling temperature")
    top_k: int = Field(0, ge=0, description="sample from the k most likely tokens (0 = all)")
    top_p: float = Field(1.0, gt=0.0, le=1.0, description="nucleus sampling mass (1 = all)")


class CheckpointConfig(Section):
    every: int = Field(200, gt=0, description="steps between checkpoints")
    keep: int = Field(3, gt=0, description="checkpoints kept (the newest, or the best by val_loss)")
    async_save: bool = Field(True, description="write checkpoints in the background")


class MeshConfig(Section):
    """Device mesh ``(data, fsdp, model)``: the batch is split over data × fsdp; parameters and
    optimizer state are sharded over ``fsdp`` (FSDP) and, for attention/MLP kernels, over ``model``
    (tensor parallel: heads and hidden units). ``data = -1`` means 'all remaining devices'."""

    data: int = Field(
        -1, description="data-parallel size (batch split, parameters replicated); -1: all remaining devices"
    )
    fsdp: int = Field(
        1, gt=0, description="fully-sharded data-parallel size: batch split and parameters/optimizer state sharded"
    )
    model: int = Field(1, gt=0, description="tensor-parallel size: attention heads and MLP hidden units split")


class Config(Section):
    name: str = Field("experiment", description="experiment name (the default run directory is runs/<name>)")
    model: ModelConfig = Field(
        default_factory=lambda: ModelConfig.lookup("transformer", "<defaults>")(),
        description="the model: model.family picks the family",
    )
    data: DataConfig = Field(
        default_factory=lambda: DataConfig.lookup("text", "<defaults>")(),
        description="the data: data.source picks the source",
    )
    train: TrainConfig = Field(default_factory=TrainConfig, description="optimisation and logging")
    eval: EvalConfig = Field(default_factory=EvalConfig, description="validation and samples during training")
    checkpoint: CheckpointConfig = Field(default_factory=CheckpointConfig, description="checkpoints")
    mesh: MeshConfig = Field(default_factory=MeshConfig, description="device mesh")

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json", serialize_as_any=True)  # keep family/source subclass fields

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False, allow_unicode=True)


# --------------------------------------------------------------------------- loading
def _first_error(err: ValidationError, prefix: str) -> str:
    e = err.errors()[0]
    loc = ".".join(str(p) for p in (prefix, *e["loc"]) if p != "")
    msg = e["msg"]
    if e["type"] == "extra_forbidden":
        msg = "unknown key"
    elif msg.startswith("Value error, "):
        msg = msg[len("Value error, ") :]
    scalar = not isinstance(e.get("input"), (dict, list))
    got = f" (got {e.get('input')!r})" if scalar and e["type"] not in ("extra_forbidden", "missing") else ""
    return f"{loc}: {msg}{got}"


def from_dict(raw: dict[str, Any], source: str = "<dict>") -> Config:
    """Validate a plain nested dict into a :class:`Config` (errors name ``source``)."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: top level must be a mapping of sections, got {type(raw).__name__}")
    raw = dict(raw)
    sections = {
        "model": ModelConfig.parse(raw.pop("model", {}) or {}, source, "transformer"),
        "data": DataConfig.parse(raw.pop("data", {}) or {}, source, "text"),
    }
    try:
        return Config(**raw, **sections)
    except ValidationError as err:
        raise ConfigError(f"{source}: {_first_error(err, '')}") from None


def drop_retired(raw: dict[str, Any]) -> dict[str, Any]:
    """A config file's mapping without the retired keys of its model and data sections (see
    :meth:`Registered.without_retired`); anything it cannot resolve is left for :func:`from_dict` to report."""
    raw = dict(raw)
    for cls, default in ((ModelConfig, "transformer"), (DataConfig, "text")):
        body = raw.get(cls.SECTION)
        if isinstance(body, dict):
            name = body.get(cls.KEY, default)
            if isinstance(name, str) and name in cls.registered():
                raw[cls.SECTION] = cls.REGISTRY[name].without_retired(body)
    return raw


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


def _section_fields(raw: dict[str, Any]) -> dict[str, set[str] | None]:
    """The field names of each section a config built from ``raw`` has (model/data: of the family /
    source ``raw`` names; None when that name is unknown: validation reports it)."""
    out: dict[str, set[str] | None] = {}
    for name, field in Config.model_fields.items():
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, Registered):
            body = raw.get(name) if isinstance(raw.get(name), dict) else {}
            sub = ann.registered().get(body.get(ann.KEY, "transformer" if ann is ModelConfig else "text"))
            out[name] = set(sub.model_fields) if sub else None
        elif isinstance(ann, type) and issubclass(ann, BaseModel):
            out[name] = set(ann.model_fields)
    return out


def check_override_keys(raw: dict[str, Any], overrides: list[str] | None) -> None:
    """Refuse a ``--set`` key the config does not have, blaming the override (not the file) and
    suggesting the closest key: ``--set train.step=100: unknown key train.step (did you mean
    train.steps?)``. A key another model family / data source has names the one in use instead."""
    sections = _section_fields(raw)
    known = {k for k in Config.model_fields if k not in sections}
    known |= {f"{sec}.{f}" for sec, fields in sections.items() for f in fields or ()}
    for item in overrides or []:
        dotted = item.split("=", 1)[0].strip()
        section, _, key = dotted.partition(".")
        if section in sections and sections[section] is None:
            continue  # an unknown family/source: from_dict names the choices
        if dotted in known or section in sections and not key or f"{section}.{key.split('.')[0]}" in known:
            continue  # a known key (or a value inside a list/tuple field: validation checks it)
        if section in sections and issubclass(Config.model_fields[section].annotation, Registered):
            cls = Config.model_fields[section].annotation
            if any(key in sub.model_fields for sub in cls.registered().values()):
                chosen = (raw.get(section) or {}).get(cls.KEY, "transformer" if cls is ModelConfig else "text")
                raise ConfigError(f"--set {item}: unknown key {dotted} for {section}.{cls.KEY} {chosen}")
        close = _closest_key(dotted, sections)
        hint = f" (did you mean {close}?)" if close else ""
        raise ConfigError(f"--set {item}: unknown key {dotted}{hint}")


def _closest_key(dotted: str, sections: dict[str, set[str] | None]) -> str | None:
    """The known key ``dotted`` was probably meant to be: section and field names compared separately
    (``modle.d_model`` → ``model.d_model``, ``train.step`` → ``train.steps``); None when nothing is close."""
    section, _, key = dotted.partition(".")
    tops = [k for k in Config.model_fields if k not in sections]
    if not key:
        close = difflib.get_close_matches(section, tops + list(sections), n=1, cutoff=0.6)
        return close[0] if close else None
    if section not in sections:
        close = difflib.get_close_matches(section, list(sections), n=1, cutoff=0.6)
        if not close:
            return None
        section = close[0]
    fields = sorted(sections[section] or ())
    head = key.split(".")[0]
    match = [head] if head in fields else difflib.get_close_matches(head, fields, n=1, cutoff=0.6)
    return f"{section}.{match[0]}" if match else None


CONFIG_DIR = "configs"


def find_config(path: str | Path) -> Path:
    """The config file ``path`` names: as given (absolute, or relative to the current directory), else
    relative to the project root. A bare name (no directory) is also looked up in ``configs/`` of
    both, with ``.yaml`` added when it has no extension: ``transformer_tiny`` is
    ``configs/transformer_tiny.yaml``. Raises ConfigError naming the file once, every distinct place
    it looked and, when one is close, the shipped config it probably meant."""
    path = Path(path)
    if path.is_file():
        return path
    bases = [Path.cwd()] if path.is_absolute() else [Path.cwd(), PROJECT_ROOT]
    names = [path]
    if not path.is_absolute() and path.parent == Path("."):
        names.append(Path(CONFIG_DIR) / (path.name if path.suffix else f"{path.name}.yaml"))
    tried: list[Path] = []
    for name in names:
        for base in bases:
            candidate = base / name
            if candidate.is_file():
                return candidate
            if candidate.resolve() not in tried:
                tried.append(candidate.resolve())
    shipped = sorted(p.stem for p in (PROJECT_ROOT / CONFIG_DIR).glob("*.yaml"))
    close = difflib.get_close_matches(path.stem, shipped, n=1, cutoff=0.6)
    hint = f"; did you mean {CONFIG_DIR}/{close[0]}.yaml?" if close else ""
    where = "" if tried == [path] else f" (looked in {', '.join(map(str, tried))})"
    raise ConfigError(f"{path}: config file not found{where}{hint}")


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
    raw = apply_overrides(drop_retired(raw), overrides, source)
    check_override_keys(raw, overrides)
    return from_dict(raw, source)


def save(cfg: Config, path: str | Path) -> None:
    Path(path).write_text(cfg.to_yaml(), encoding="utf-8")


def resolve_path(p: str | Path) -> Path:
    """Relative data paths resolve against the cwd first, then the project root."""
    p = Path(p)
    if p.is_absolute() or p.exists():
        return p
    return PROJECT_ROOT / p


# --------------------------------------------------------------------------- help
def field_description(cls: type[BaseModel], name: str) -> str:
    """The description of field ``name`` of ``cls``; a subclass that only changes a field's default
    keeps the description of the class it inherits the field from."""
    for klass in cls.__mro__:
        if issubclass(klass, BaseModel) and name in klass.model_fields and klass.model_fields[name].description:
            return klass.model_fields[name].description
    return ""


def _type_name(annotation: Any) -> str:
    origin, args = get_origin(annotation), get_args(annotation)
    if origin is Literal:
        return " | ".join(repr(a) for a in args)
    if args and origin is not None and origin is not Annotated:
        inner = ", ".join(_type_name(a) for a in args)
        return (
            f"{getattr(origin, '__name__', str(origin))}[{inner}]"
            if origin in (list, tuple, dict)
            else " | ".join(_type_name(a) for a in args)
        )
    if annotation is type(None):
        return "None"
    return getattr(annotation, "__name__", str(annotation))


def _field_lines(cls: type[BaseModel], prefix: str) -> list[str]:
    import json

    from pydantic_core import to_jsonable_python

    lines = []
    for name, info in cls.model_fields.items():
        key = f"{prefix}{name}"
        ann = info.annotation
        if isinstance(ann, type) and issubclass(ann, Section) and not issubclass(ann, Registered):
            lines.append(f"  {key}: {field_description(cls, name)}")
            lines += _field_lines(ann, f"{key}.")
            continue
        default = json.dumps(to_jsonable_python(info.get_default(call_default_factory=True)), ensure_ascii=False)
        lines.append(f"  {key}: {_type_name(ann)} = {default}  —  {field_description(cls, name)}")
    return lines


def describe(names: list[str] | None = None, first: list[str] | tuple[str, ...] = ()) -> str:
    """Every config field with its type, default and description (``python train.py --help-config``).

    ``names``: model families and/or data sources to show (default: all of them). ``first``: families
    and sources printed at the top, before the train/eval/checkpoint/mesh sections (default: ``names``;
    ``train.py`` passes the default experiment's); the other shown families and sources follow those
    sections. When ``names`` leaves some out, a last line names them."""
    families, sources = ModelConfig.registered(), DataConfig.registered()
    names = list(names or [])
    unknown = [n for n in [*names, *first] if n not in families and n not in sources]
    if unknown:
        raise ConfigError(
            f"--help-config: unknown family or source {unknown[0]!r} (families: "
            f"{', '.join(families)}; sources: {', '.join(sources)})"
        )
    shown_families = [n for n in names if n in families] or list(families)
    shown_sources = [n for n in names if n in sources] or list(sources)
    top = [n for n in (first or names) if n in shown_families + shown_sources]
    out = ["Config fields: YAML sections as below, or --set section.key=value (key: type = default  —  meaning)."]
    out.append(f'  name: str = "{Config.model_fields["name"].default}"  —  {field_description(Config, "name")}')

    def registered_sections(pick: list[str]) -> list[str]:
        lines = []
        for section, base, shown in (("model", ModelConfig, shown_families), ("data", DataConfig, shown_sources)):
            for name in (n for n in shown if n in pick):
                cls = base.REGISTRY[name]
                lines += ["", f"{section} ({section}.{base.KEY}: {name}; {cls.__module__}.{cls.__qualname__})"]
                lines += _field_lines(cls, f"{section}.")
        return lines

    out += registered_sections(top)
    for section in ("train", "eval", "checkpoint", "mesh"):
        out += ["", f"{section} ({field_description(Config, section)})"]
        out += _field_lines(Config.model_fields[section].annotation, f"{section}.")
    out += registered_sections([n for n in shown_families + shown_sources if n not in top])
    hidden = [n for n in [*families, *sources] if n not in shown_families + shown_sources]
    if hidden:
        out += ["", f"Not shown: {', '.join(hidden)} (python train.py --help-config NAME ...)."]
    return "\n".join(out)
