"""The "Adding a model family" example of docs/configs.md, run exactly as written (so it cannot rot).

The block between ``<!-- example:new-family -->`` and ``<!-- /example:new-family -->`` in docs/configs.md holds
three fenced blocks: the family's module (python), its config (yaml) and the training lines (python). The
module is executed as the module ``bigram``, the YAML written to ``bigram.yaml`` in a temporary directory, and
the training lines run there for real, with only the sizes and step count made tiny.
"""

from __future__ import annotations

import math
import re
import sys
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import ROOT, assert_future_independent
from spiraljax import config
from spiraljax.errors import ConfigError

START, END = "<!-- example:new-family -->", "<!-- /example:new-family -->"
FAMILY, MODULE = "bigram", "bigram"
DOC = "docs/configs.md"
# Sizes for a test: a few steps of tiny shapes, one validation pass, a short sample.
TINY = [
    "model.seq_len=16",
    "model.hidden=32",
    "train.steps=3",
    "train.batch_size=4",
    "train.warmup_steps=1",
    "train.eval_every=3",
    "train.log_every=1",
    "train.progress=false",
    "checkpoint.every=3",
    "eval.batches=1",
    "eval.batch_size=4",
    "eval.sample_tokens=8",
]


def example_blocks() -> list[tuple[str, str]]:
    """``(language, code)`` of every fenced block between the example's markers in :data:`DOC`."""
    text = (ROOT / DOC).read_text(encoding="utf-8")
    assert text.count(START) == 1 and text.count(END) == 1, f"{DOC}: the new-family example's markers"
    example = text[text.index(START) + len(START) : text.index(END)]
    return re.findall(r"^```(\w+)\n(.*?)^```$", example, flags=re.M | re.S)


@pytest.fixture
def family(monkeypatch):
    """The example's module, imported as ``bigram``; unregistered afterwards."""
    blocks = example_blocks()
    assert [lang for lang, _ in blocks] == ["python", "yaml", "python"]
    module = types.ModuleType(MODULE)
    monkeypatch.setitem(sys.modules, MODULE, module)
    exec(compile(blocks[0][1], f"{DOC}:{MODULE}.py", "exec"), module.__dict__)
    yield module, blocks
    config.ModelConfig.REGISTRY.pop(FAMILY, None)


def test_the_docs_example_is_about_20_lines():
    module = example_blocks()[0][1]
    code = [line for line in module.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    assert len(code) <= 30, f"the new family of {DOC} grew to {len(code)} lines"


def test_the_docs_family_registers_and_documents_its_fields(family):
    module, _ = family
    assert config.ModelConfig.lookup(FAMILY, "test") is module.BigramConfig
    text = config.describe([FAMILY])
    assert "model.hidden: int = 256  —  hidden units of the MLP" in text
    assert "model.d_model: int = 64  —  width of the hidden state" in text  # the shared DModel description
    with pytest.raises(ConfigError, match=f"unknown key model.n_heads for model.family {FAMILY}"):
        config.load(None, [f"model.family={FAMILY}", "model.n_heads=4"])


def test_the_docs_family_is_causal_with_the_loop_signature(family):
    module, _ = family
    cfg = config.load(None, [f"model.family={FAMILY}", "model.seq_len=8", "model.hidden=16"])
    model = cfg.model.build()
    assert isinstance(model, module.BigramLM)
    tokens = jax.random.randint(jax.random.key(0), (2, 8), 0, cfg.model.vocab_size)
    variables = model.init(jax.random.key(1), tokens)
    logits, aux = model.apply(variables, tokens, train=True, step=jnp.int32(3))
    assert logits.shape == (2, 8, cfg.model.vocab_size) and logits.dtype == jnp.float32 and aux == {}
    assert_future_independent(lambda t: model.apply(variables, t)[0], tokens, [0, 3, 6], cfg.model.vocab_size)


def test_the_docs_training_lines_train_the_family(family, tmp_path, monkeypatch):
    """The YAML and the training lines as written; only ``config.load`` is given the tiny sizes on top."""
    _, blocks = family
    (tmp_path / "bigram.yaml").write_text(blocks[1][1], encoding="utf-8")
    monkeypatch.chdir(tmp_path)  # bigram.yaml and runs/bigram are relative; the corpus resolves to the project
    load = config.load

    def tiny_load(path=None, overrides=None):
        return load(path, [*(overrides or []), *TINY, f"data.cache_dir={tmp_path / 'cache'}"])

    monkeypatch.setattr(config, "load", tiny_load)
    namespace: dict = {"__name__": "docs_training"}
    exec(compile(blocks[2][1], f"{DOC}:training", "exec"), namespace)
    cfg, result = namespace["cfg"], namespace["result"]
    assert cfg.model.family == FAMILY and cfg.model.d_model == 32 and cfg.model.hidden == 32  # YAML, then --set
    assert result.step == 3 and not result.interrupted
    assert math.isfinite(result.val["loss"]) and result.val["loss"] > 0
    run = tmp_path / "runs" / "bigram"
    assert (run / "config.yaml").is_file() and any((run / "checkpoints").iterdir())
    assert (run / "samples" / "step_0000003.txt").is_file()  # the standard hooks ran (sampling this family)
    monkeypatch.setattr(config, "load", load)
    from spiraljax.runs import load_run  # the run reloads while the family is importable

    saved, variables = load_run(run, "latest")
    assert saved == cfg
    assert np.all(np.isfinite(np.asarray(variables["params"]["head"]["kernel"])))
