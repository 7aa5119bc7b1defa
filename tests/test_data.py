import numpy as np
import pytest

from spiraljax import config
from spiraljax.data.base import DataError, build_dataset
from spiraljax.data.text import read_corpus
from spiraljax.data.tokenizers import BPETokenizer, ByteTokenizer, train_bpe

CORPUS = config.PROJECT_ROOT / "data" / "tinyshakespeare.txt"
RANKS = config.PROJECT_ROOT / "data" / "tinyshakespeare_bpe.tiktoken"


@pytest.fixture(scope="module")
def shakespeare():
    return read_corpus(CORPUS)


def test_byte_roundtrip(shakespeare):
    tok = ByteTokenizer()
    ids = tok.encode(shakespeare)
    assert len(ids) == 1_115_394 and ids.max() < 256
    assert tok.decode(ids) == shakespeare


def test_bpe_roundtrip_and_compression(shakespeare):
    tok = BPETokenizer(str(RANKS))
    ids = tok.encode(shakespeare)
    assert tok.decode(ids) == shakespeare
    assert len(ids) < 0.6 * len(shakespeare)
    assert tok.token_bytes.sum() > tok.vocab_size  # merged tokens span several bytes


def test_train_bpe_learns_frequent_pair():
    ranks = train_bpe("ab ab ab ab cd", 257)
    assert ranks[b"ab"] == 256


def test_missing_named_encoding_is_clear(tmp_path):
    with pytest.raises(DataError, match="ranks file not found"):
        BPETokenizer(str(tmp_path / "nope.tiktoken"))


def test_batches_are_pure_functions_of_seed_and_step(tiny_cfg):
    a, b = build_dataset(tiny_cfg), build_dataset(tiny_cfg)
    for s in (0, 5, 123):
        for k in ("inputs", "targets"):
            np.testing.assert_array_equal(a.train_batch(s)[k], b.train_batch(s)[k])
    assert not np.array_equal(a.train_batch(1)["inputs"], a.train_batch(2)["inputs"])
    batch = a.train_batch(3)
    np.testing.assert_array_equal(batch["inputs"][:, 1:], batch["targets"][:, :-1])
    other = build_dataset(tiny_cfg.model_copy(update={"train": tiny_cfg.train.model_copy(update={"seed": 9})}))
    assert not np.array_equal(other.train_batch(3)["inputs"], batch["inputs"])


def test_validation_is_disjoint_and_fixed(tiny_cfg):
    ds = build_dataset(tiny_cfg)
    v1 = [b["inputs"] for b in ds.val_batches()]
    v2 = [b["inputs"] for b in ds.val_batches()]
    assert len(v1) == tiny_cfg.eval.batches
    np.testing.assert_array_equal(np.stack(v1), np.stack(v2))
    assert len(ds.train_tokens) + len(ds.val_tokens) == 1_115_394


@pytest.mark.parametrize("content, needle", [(b"", "empty"), (b"\xff\xfe\xfa", "not valid UTF-8")])
def test_bad_corpora(tmp_path, content, needle):
    p = tmp_path / "c.txt"
    p.write_bytes(content)
    with pytest.raises(DataError, match=needle):
        read_corpus(p)
    with pytest.raises(DataError, match="not found"):
        read_corpus(tmp_path / "missing.txt")


def test_token_cache_reused(tiny_cfg, tmp_path):
    build_dataset(tiny_cfg)
    files = list((tmp_path / "cache").glob("*.u32"))
    assert len(files) == 1
    mtime = files[0].stat().st_mtime_ns
    build_dataset(tiny_cfg)
    assert files[0].stat().st_mtime_ns == mtime
