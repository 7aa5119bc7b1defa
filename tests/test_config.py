import pytest

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


@pytest.mark.parametrize("override, needle", [
    ("model.d_model=30", "not divisible by n_heads"),
    ("model.seq_len=0", "model.seq_len"),
    ("model.family=nonsense", "unknown model.family 'nonsense'"),
    ("data.source=nowhere", "unknown data.source"),
    ("bogus.key=1", "bogus: unknown key"),
])
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


def test_shipped_configs_validate():
    for path in sorted((config.PROJECT_ROOT / "configs").glob("*.yaml")):
        config.load(path)


def test_family_and_source_fields_survive_save_and_load(tmp_path):
    cfg = config.load(config.PROJECT_ROOT / "configs" / "hebbian_tiny.yaml", ["data.source=mqar", "data.max_pairs=4"])
    config.save(cfg, tmp_path / "c.yaml")
    back = config.load(tmp_path / "c.yaml")
    assert back == cfg and back.model.head_hidden == 32 and back.data.max_pairs == 4
