from typing import Literal

import flax.linen as nn
import jax.numpy as jnp
import pytest
import yaml
from pydantic import Field

from spiraljax import config
from spiraljax.config import ConfigError


def write(tmp_path, text):
    p = tmp_path / "exp.yaml"
    p.write_text(text)
    return p


def test_defaults_load_and_roundtrip(tmp_path):
    cfg = config.load(None, ["train.steps=7", "model.d_model=64"])
    assert cfg.train.steps == 7 and cfg.model.d_model == 64
    config.save(cfg, tmp_path / "c.yaml")
    assert config.load(tmp_path / "c.yaml") == cfg


def test_unknown_key_names_key_and_file(tmp_path):
    p = write(tmp_path, "model:\n  family: transformer\n  d_modle: 64\n")
    with pytest.raises(ConfigError) as e:
        config.load(p)
    msg = str(e.value)
    assert "model.d_modle" in msg and str(p) in msg and "unknown key" in msg and "\n" not in msg


def test_wrong_type_names_key(tmp_path):
    p = write(tmp_path, "train:\n  steps: lots\n")
    with pytest.raises(ConfigError, match=r"exp.yaml: train.steps: .*integer.*'lots'"):
        config.load(p)


@pytest.mark.parametrize(
    "override, needle",
    [
        ("model.d_model=30", "not divisible by n_heads"),
        ("model.seq_len=0", "model.seq_len"),
        ("model.family=nonsense", "unknown model.family 'nonsense'"),
        ("data.source=nowhere", "unknown data.source"),
        ("bogus.key=1", "--set bogus.key=1: unknown key bogus.key"),
    ],
)
def test_impossible_values(override, needle):
    with pytest.raises(ConfigError, match=needle):
        config.load(None, [override])


def test_missing_and_broken_files(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        config.load(tmp_path / "absent.yaml")
    with pytest.raises(ConfigError, match="not valid YAML"):
        config.load(write(tmp_path, "model: [unclosed\n"))


def test_relative_config_path_resolves_from_any_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert config.load("configs/transformer_tiny.yaml").model.family == "transformer"
    with pytest.raises(ConfigError) as err:
        config.load("configs/absent.yaml")
    message = str(err.value)
    assert str(tmp_path / "configs" / "absent.yaml") in message
    assert str(config.PROJECT_ROOT / "configs" / "absent.yaml") in message


def test_override_syntax():
    with pytest.raises(ConfigError, match="key=value"):
        config.load(None, ["train.steps"])
    assert config.load(None, ["train.lr=1e-4"]).train.lr == pytest.approx(1e-4)


def test_shipped_configs_validate_and_roundtrip(tmp_path):
    paths = sorted((config.PROJECT_ROOT / "configs").glob("*.yaml"))
    assert {"spiralformer_femto.yaml", "holographic.yaml", "kssm_v3_tiny.yaml"} <= {p.name for p in paths}
    for path in paths:
        cfg = config.load(path)
        config.save(cfg, tmp_path / path.name)
        assert config.load(tmp_path / path.name) == cfg, path.name


def test_family_and_source_fields_survive_save_and_load(tmp_path):
    cfg = config.load(config.PROJECT_ROOT / "configs" / "hebbian_tiny.yaml", ["data.source=mqar", "data.max_pairs=4"])
    config.save(cfg, tmp_path / "c.yaml")
    back = config.load(tmp_path / "c.yaml")
    assert back == cfg and back.model.head_hidden == 32 and back.data.max_pairs == 4


# --------------------------------------------------------------------------- the config class is the registry
def _sections(cls, prefix):
    """(dotted key, owning class, field name) of every field of ``cls``, nested sections included."""
    for name, info in cls.model_fields.items():
        yield f"{prefix}{name}", cls, name
        ann = info.annotation
        if isinstance(ann, type) and issubclass(ann, config.Section) and not issubclass(ann, config.Registered):
            yield from _sections(ann, f"{prefix}{name}.")


def test_every_field_of_every_family_and_source_has_a_description():
    classes = [
        ("", config.Config),
        *(("model.", c) for c in config.ModelConfig.registered().values()),
        *(("data.", c) for c in config.DataConfig.registered().values()),
        *((f"{s}.", config.Config.model_fields[s].annotation) for s in ("train", "eval", "checkpoint", "mesh")),
    ]
    missing = {
        key
        for prefix, cls in classes
        for key, owner, name in _sections(cls, prefix)
        if not config.field_description(owner, name)
    }
    assert not missing, sorted(missing)


def test_families_and_sources_register_themselves():
    assert {"transformer", "spiralformer", "kssm_v1", "kssm_v2", "kssm_v3", "hebbian_lm", "holographic"} <= set(
        config.ModelConfig.registered()
    )
    assert {"text", "mycelial", "mqar", "induction", "curriculum"} <= set(config.DataConfig.registered())
    assert not hasattr(config, "MODEL_MODULES") and not hasattr(config, "DATA_MODULES")


def test_the_family_and_source_tables_list_exactly_the_registered_in_tree_classes():
    """spiraljax.models.FAMILIES / spiraljax.data.SOURCES are the one visible list: every class of the package
    that registers is in it under its own name (tests may register out-of-tree classes beside them)."""
    from spiraljax.data import SOURCES
    from spiraljax.models import FAMILIES

    for table, base in ((FAMILIES, config.ModelConfig), (SOURCES, config.DataConfig)):
        in_tree = {name: cls for name, cls in base.registered().items() if cls.__module__.startswith("spiraljax.")}
        assert table == in_tree
        assert all(cls.model_fields[base.KEY].default == name for name, cls in table.items())


@pytest.mark.parametrize(
    "family, key",
    [
        ("kssm_v1", "n_heads"),
        ("kssm_v3", "dropout"),
        ("kssm_v2", "window"),
        ("spiralformer", "dropout"),
        ("spiralformer", "mlp_kind"),
        ("hebbian_lm", "mlp_kind"),
        ("holographic", "d_model"),
        ("kssm_v1", "coupling_scale"),
        ("holographic", "dtype"),
        ("holographic", "remat"),
    ],
)
def test_a_field_the_family_does_not_use_is_an_error(family, key):
    with pytest.raises(ConfigError) as err:
        config.load(None, [f"model.family={family}", f"model.{key}=2"])
    assert str(err.value) == f"--set model.{key}=2: unknown key model.{key} for model.family {family}"


def test_a_source_without_a_validation_split_has_no_val_fraction():
    with pytest.raises(ConfigError, match="unknown key data.val_fraction for data.source mqar"):
        config.load(None, ["data.source=mqar", "data.val_fraction=0.2"])


def test_saved_configs_keep_loading_when_retired_keys_hold_their_old_defaults(tmp_path):
    """The compatibility rule (Registered.without_retired): a saved config.yaml from before the per-family
    split carries every old shared field; one the family does not use is dropped if it holds the value it
    had then, and is an error with any other value (it would not do what it says)."""
    shipped = config.load(config.PROJECT_ROOT / "configs" / "kssm_v3_shakespeare.yaml")
    old = shipped.to_dict()
    old["model"].update(n_heads=4, dropout=0.0, dtype="float32")
    old["data"]["val_fraction"] = 0.1  # text still uses it: kept as a field
    assert config.load(write(tmp_path, yaml.safe_dump(old))) == shipped
    for key, value in (("dropout", 0.1), ("n_heads", 8)):
        changed = {**old, "model": {**old["model"], key: value}}
        with pytest.raises(ConfigError, match=f"model.{key}: unknown key for model.family kssm_v3"):
            config.load(write(tmp_path, yaml.safe_dump(changed)))
    holo = {
        "model": {
            "family": "holographic",
            "d_model": 16,
            "n_heads": 1,
            "n_layers": 1,
            "dropout": 0.0,
            "dtype": "float32",
        },
        "data": {"source": "mqar", "val_fraction": 0.1},
    }
    holographic = config.load(None, ["model.family=holographic"]).model
    assert config.load(write(tmp_path, yaml.safe_dump(holo))).model == holographic
    holo["model"]["d_model"] = 128  # holographic's old default was 16
    with pytest.raises(ConfigError, match="model.d_model: unknown key for model.family holographic"):
        config.load(write(tmp_path, yaml.safe_dump(holo)))
    # overrides are what someone asks for now: no compatibility rule there
    with pytest.raises(ConfigError, match="unknown key model.dropout for model.family kssm_v1"):
        config.load(None, ["model.family=kssm_v1", "model.dropout=0.0"])


def test_kssm_versions_differ_by_fields_only():
    """v1 is v2 with one layer (n_layers is honoured, not overridden by the family name); v3 has the bistable
    core and its two extra fields."""
    import jax
    import jax.numpy as jnp

    from spiraljax import models

    small = [
        "model.d_model=8",
        "model.seq_len=8",
        "model.n_oscillators=8",
        "model.n_harmonics=3",
        "model.readout_hidden=8",
    ]
    v1, v2, v3 = (config.load(None, [f"model.family=kssm_{v}", *small]).model for v in ("v1", "v2", "v3"))
    assert (v1.n_layers, v1.core, v2.n_layers, v2.core, v3.core) == (1, "softplus", 4, "softplus", "bistable")
    assert v1.model_dump(exclude={"family", "n_layers"}) == v2.model_dump(exclude={"family", "n_layers"})
    two = config.load(None, ["model.family=kssm_v1", "model.n_layers=2", *small]).model
    params = models.build(two).init(jax.random.key(0), jnp.zeros((1, 8), jnp.int32))["params"]
    assert {"osc_0", "osc_1"} <= set(params) and "osc_2" not in params


def test_default_experiment_is_the_femto_config_plus_its_overrides():
    """A bare ``python train.py`` trains configs/spiralformer_femto.yaml with DEFAULT_OVERRIDES: the same
    config field for field as the dict that spiraljax/defaults.py used to embed."""
    train_py = _train_module()
    cfg = config.load(train_py.DEFAULT_CONFIG, train_py.DEFAULT_OVERRIDES)
    was = {
        "name": "spiralformer_femto_default",
        "model": {
            "family": "spiralformer",
            "vocab_size": 65,
            "seq_len": 32,
            "d_model": 128,
            "n_heads": 4,
            "n_layers": 4,
        },
        "data": {"source": "mycelial", "num_echoes": 4000, "chaos_mode": True, "seed": 0},
        "train": {"steps": 800, "batch_size": 32, "lr": 2e-3, "warmup_steps": 30, "eval_every": 200, "log_every": 10},
        "eval": {"sample_tokens": 24, "sample_prompt": "…"},
        "checkpoint": {"every": 200},
    }
    assert cfg == config.from_dict(was)


def _train_module():
    import importlib.util

    spec = importlib.util.spec_from_file_location("train_cli", config.PROJECT_ROOT / "train.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_help_config_lists_every_field_with_type_default_and_description(capsys):
    train_py = _train_module()
    assert train_py.main(["--help-config"]) == 0
    out = capsys.readouterr().out
    for line in (
        "model.n_oscillators: int = 128  —  oscillators per layer (N)",
        "model.breath.durations: list[int] = [4, 2, 4, 2]  —  positions per phase",
        "data.max_pairs: int = 16  —  most key-value pairs per sequence",
        "train.steps: int = 1000  —  optimizer steps to train",
        "model.mlp_kind: 'swiglu' | 'gelu' = \"swiglu\"  —  MLP of each block",
    ):
        assert line in out, line
    assert train_py.main(["--help-config", "kssm_v3"]) == 0
    out = capsys.readouterr().out
    assert "model (model.family: kssm_v3;" in out and "model.coupling_scale" in out
    assert "model (model.family: kssm_v1;" not in out and "data (data.source: text;" in out
    assert train_py.main(["--help-config", "nonsense"]) == 2
    assert "unknown family or source 'nonsense'" in capsys.readouterr().err


def test_help_config_starts_with_the_default_experiment_or_the_given_config(capsys):
    """A bare --help-config shows the default experiment's family and source before anything else; with
    --config, only that config's family and source (the others are named on the last line)."""
    train_py = _train_module()
    default = config.read_yaml(train_py.DEFAULT_CONFIG)
    assert train_py.main(["--help-config"]) == 0
    sections = [ln for ln in capsys.readouterr().out.splitlines() if ln and not ln.startswith(" ")]
    assert sections[1].startswith(f"model (model.family: {default['model']['family']};")
    assert sections[2].startswith(f"data (data.source: {default['data']['source']};")
    assert sections[3].startswith("train (") and len([s for s in sections if s.startswith("model (")]) > 1
    path = str(config.PROJECT_ROOT / "configs" / "kssm_v3_shakespeare.yaml")
    assert train_py.main(["--help-config", "--config", path]) == 0
    out = capsys.readouterr().out
    sections = [ln for ln in out.splitlines() if ln and not ln.startswith(" ")]
    assert sections[1].startswith("model (model.family: kssm_v3;")
    assert sections[2].startswith("data (data.source: text;")
    assert sum(s.startswith(("model (", "data (")) for s in sections) == 2
    assert sections[-1].startswith("Not shown: ") and "spiralformer" in sections[-1]


def test_print_config_prints_the_resolved_config(capsys, tmp_path):
    train_py = _train_module()
    path = config.PROJECT_ROOT / "configs" / "kssm_v1_tiny.yaml"
    assert train_py.main(["--config", str(path), "--set", "model.n_layers=2", "--print-config"]) == 0
    printed = write(tmp_path, capsys.readouterr().out)
    assert config.load(printed) == config.load(path, ["model.n_layers=2"])


# --------------------------------------------------------------------------- a new family, defined right here
# The example of docs/configs.md: one config class and one Flax module make a family that train.py can train; no table
# is edited anywhere (defining the class registers it).
class BagOfTokensConfig(config.ModelConfig):
    family: Literal["test_bag_of_tokens"] = "test_bag_of_tokens"
    d_model: int = Field(16, gt=0, description="embedding width")

    def build(self) -> nn.Module:
        return BagOfTokens(self)


class BagOfTokens(nn.Module):
    """Predicts the next token from the mean embedding of the prefix (causal by construction)."""

    cfg: BagOfTokensConfig

    @nn.compact
    def __call__(self, tokens, *, train: bool = False, step=0):
        x = nn.Embed(self.cfg.vocab_size, self.cfg.d_model)(tokens)
        x = jnp.cumsum(x, axis=1) / jnp.arange(1, tokens.shape[1] + 1)[:, None]
        return nn.Dense(self.cfg.vocab_size)(x), {}


def test_a_family_defined_anywhere_trains_through_the_registry(tmp_path):
    from spiraljax.train.loop import train

    cfg = config.load(
        None,
        [
            "model.family=test_bag_of_tokens",
            "model.d_model=8",
            "model.seq_len=16",
            "train.steps=4",
            "train.batch_size=2",
            "train.eval_every=4",
            "train.progress=false",
            "checkpoint.every=4",
            "eval.batches=1",
            "eval.batch_size=2",
            "eval.sample_tokens=0",
            f"data.cache_dir={tmp_path / 'cache'}",
        ],
    )
    assert type(cfg.model) is BagOfTokensConfig
    result = train(cfg, tmp_path / "run")
    assert result.step == 4 and result.val["loss"] > 0
    assert config.load(tmp_path / "run" / "config.yaml") == cfg
    with pytest.raises(ConfigError, match="unknown key model.n_heads for model.family test_bag_of_tokens"):
        config.load(None, ["model.family=test_bag_of_tokens", "model.n_heads=2"])


def test_a_family_name_cannot_be_registered_twice():
    with pytest.raises(TypeError, match="registered twice"):

        class Again(config.ModelConfig):
            family: Literal["test_bag_of_tokens"] = "test_bag_of_tokens"


def test_docs_configs_names_every_field_of_every_family():
    """docs/configs.md's "Family and source keys" paragraph names each family's fields (a new field
    must be documented there; ``--help-config`` has the descriptions)."""
    import re
    from pathlib import Path

    from spiraljax.models import FAMILIES

    text = (Path(__file__).resolve().parent.parent / "docs" / "configs.md").read_text(encoding="utf-8")
    para = " ".join(text[text.index("Family and source keys") : text.index("; text data")].split())
    labels = {
        "transformer": "baseline",
        "spiralformer": "Spiralformer",
        "kssm_v1": "K-SSM",
        "kssm_v2": "K-SSM",
        "kssm_v3": "K-SSM",
        "hebbian_lm": "Hebbian",
        "holographic": "holographic",
    }
    order = ["baseline", "Spiralformer", "K-SSM", "Hebbian", "holographic", None]
    missing = []
    for family, cls in FAMILIES.items():
        label = labels[family]
        start = para.index(f"; {label} `" if label != "baseline" else f"{label} `")
        nxt = order[order.index(label) + 1]
        part = para[start : para.index(f"; {nxt} `") if nxt else len(para)]
        words = set(re.findall(r"\w+", part))
        missing += [
            f"{family}.{f}" for f in cls.model_fields if f not in ("family", "vocab_size", "seq_len") and f not in words
        ]
    assert not missing, f"docs/configs.md lacks {missing}"
