"""The long-document corpus (data.source: longdocs): determinism, the cache, splits by document and the
document-aware batcher (windows never straddle documents; reset / doc_pos; pure function of step)."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from conftest import ROOT, subprocess_env
from spiraljax import config
from spiraljax.data import longdocs
from spiraljax.data.base import STREAM_KEYS, DataError, build_dataset
from spiraljax.losses import model_extras

SHAKESPEARE = (ROOT / "data" / "tinyshakespeare.txt").read_bytes()
# TinyShakespeare is in the repository, so its corpus SHA-256 is the same on every machine.
SHAKESPEARE_SHA = "873889395d0a97ed777641ec7eb8debfa2617b38ab93ff9a4cfaaa0fa12354ad"
# The python corpus of the requirements.lock install (docs/long_context.md).
PYTHON_SHA = "48b855260e1072ebe1c93e22a302bffc0a4e3af60211f883e49cbb4590d18f34"


SMALL = ("data.corpus=shakespeare", "data.segment_bytes=200", "data.val_fraction=0.49", "data.test_fraction=0.5")


def load(tmp_path, *extra, seq_len=16, batch=4):
    return config.load(
        None,
        [
            "data.source=longdocs",
            f"data.cache_dir={tmp_path / 'cache'}",
            f"model.seq_len={seq_len}",
            f"train.batch_size={batch}",
            "eval.batch_size=4",
            "eval.batches=3",
            *extra,
        ],
    )


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """Shakespeare cut into 200-byte documents, read in windows of 16: many document boundaries; 1 % of
    it (56 documents) is the train split, so an epoch is short."""
    tmp = tmp_path_factory.mktemp("small")
    return build_dataset(load(tmp, *SMALL))


def test_shakespeare_corpus_sha_and_splits_by_position(tmp_path, capsys):
    ds = build_dataset(load(tmp_path, "data.corpus=shakespeare"))
    assert ds.sha256 == SHAKESPEARE_SHA
    assert SHAKESPEARE_SHA in ds.describe()
    names = ds.corpus.names
    starts = [int(n.split("/")[1]) for n in names]
    assert starts == sorted(starts) and np.asarray(ds.corpus.data).tobytes() == SHAKESPEARE  # one stream, in order
    n = len(SHAKESPEARE)
    val_lo, test_lo = n - int(0.05 * n) - int(0.05 * n), n - int(0.05 * n)
    for name, split in zip(names, ds.corpus.splits):
        start = int(name.split("/")[1])
        assert split == ("train" if start < val_lo else "val" if start < test_lo else "test"), name
    assert all(d.size <= 32768 for d in ds.documents("train"))
    again = build_dataset(load(tmp_path, "data.corpus=shakespeare"))  # from the cache now
    assert again.sha256 == ds.sha256
    other = build_dataset(load(tmp_path, "data.corpus=shakespeare", "data.segment_bytes=1000"))
    assert other.sha256 != ds.sha256  # the document layout is part of the corpus


def test_corpus_is_cached_once_and_memory_mapped(tmp_path):
    ds = build_dataset(load(tmp_path, "data.corpus=shakespeare"))
    files = sorted(p.name for p in (tmp_path / "cache").iterdir())
    stem = f"longdocs-shakespeare-{SHAKESPEARE_SHA}"
    assert files == [f"{stem}.json", f"{stem}.offsets.npy", f"{stem}.u8"]
    assert isinstance(ds.corpus.data, np.memmap) and ds.corpus.data.mode == "r"
    assert all(isinstance(d, np.memmap) for d in ds.documents("val"))
    np.testing.assert_array_equal(np.load(tmp_path / "cache" / f"{stem}.offsets.npy"), ds.corpus.offsets)
    mtime = (tmp_path / "cache" / f"{stem}.u8").stat().st_mtime_ns
    build_dataset(load(tmp_path, "data.corpus=shakespeare"))
    assert (tmp_path / "cache" / f"{stem}.u8").stat().st_mtime_ns == mtime


def test_concurrent_builders_write_one_complete_cache(tmp_path):
    script = textwrap.dedent(f"""
        from spiraljax import config
        from spiraljax.data.base import build_dataset
        cfg = config.load(None, ["data.source=longdocs", "data.corpus=shakespeare", "data.segment_bytes=4096",
                                 "data.cache_dir={tmp_path / "cache"}"])
        print(build_dataset(cfg).sha256)
    """)
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", script],
            env=subprocess_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    assert len({o[0].strip() for o in outs}) == 1
    assert not list((tmp_path / "cache").glob("*.tmp"))
    ds = build_dataset(load(tmp_path, "data.corpus=shakespeare", "data.segment_bytes=4096"))
    assert np.asarray(ds.corpus.data).tobytes() == SHAKESPEARE


def test_the_python_corpus_from_the_locked_packages(tmp_path):
    """The real corpus: ≥ 10 MB, every document ≥ 8 KB, ordered by (distribution, path), split by a
    hash of the name; building it again gives the same SHA-256."""
    ds = build_dataset(load(tmp_path))
    names, lengths = ds.corpus.names, np.diff(ds.corpus.offsets)
    assert len(ds.corpus.data) >= 10_000_000 and lengths.min() >= 8192
    assert list(names) == sorted(names, key=lambda n: (n.split("/")[0], n.split("/", 1)[1]))
    assert {n.split("/")[0] for n in names} == set(longdocs.PYTHON_PACKAGES)
    for name, split in zip(names, ds.corpus.splits):
        h = int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "little") / 2**64
        assert split == ("train" if h < 0.9 else "val" if h < 0.95 else "test")
    n_train, n_val, n_test = (ds.split_sizes[s][0] for s in ("train", "val", "test"))
    assert n_val > 10 and n_test > 10 and n_train > 10 * n_val
    first = ds.documents("train", max_docs=1)[0]
    path = (
        __import__("importlib.metadata")
        .metadata.distribution(names[0].split("/")[0])
        .locate_file(names[0].split("/", 1)[1])
    )
    assert first.tobytes() == path.read_bytes()
    assert build_dataset(load(tmp_path)).sha256 == ds.sha256
    pins = longdocs.locked_versions()
    installed = {p: __import__("importlib.metadata").metadata.version(p) for p in longdocs.PYTHON_PACKAGES}
    if all(pins.get(p) == v for p, v in installed.items()):  # the locked install: the documented corpus
        assert ds.sha256 == PYTHON_SHA and len(names) == 568 and len(ds.corpus.data) == 18_778_302


def test_a_missing_package_or_too_small_corpus_is_one_line(tmp_path):
    with pytest.raises(DataError, match=r"data.packages: 'no-such-package-xyz' is not installed") as err:
        build_dataset(load(tmp_path, "data.packages=[chex, no_such_package_xyz]"))
    assert "\n" not in str(err.value)
    with pytest.raises(
        DataError,
        match=r"data.packages: the python corpus has [\d,]+ bytes in \d+ files.*"
        r"data.min_total_bytes=10,000,000",
    ):
        build_dataset(load(tmp_path, "data.packages=[chex]"))
    with pytest.raises(DataError, match="corpus file not found"):
        build_dataset(load(tmp_path, "data.corpus=shakespeare", "data.path=nope.txt"))


def test_a_version_other_than_the_lock_is_one_warning_line(tmp_path, monkeypatch, capsys):
    installed = __import__("importlib.metadata").metadata.version("chex")
    monkeypatch.setattr(longdocs, "locked_versions", lambda: {"chex": "0.0.1", "optax": "0.2.8"})
    ds = build_dataset(load(tmp_path, "data.packages=[chex, optax]", "data.min_total_bytes=0"))
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "chex" in err and installed in err and "0.0.1" in err
    assert all(len(d) >= 8192 for s in ("train", "val", "test") for d in ds.documents(s))


def test_train_batches_are_pure_functions_of_seed_and_step(tmp_path, small):
    fresh = build_dataset(load(tmp_path, *SMALL))
    for step in (37, 0, 5000, 1):  # any order: no iterator state
        a, b = small.train_batch(step), fresh.train_batch(step)
        assert set(a) == {"inputs", "targets", "mask", *STREAM_KEYS}
        for k in a:
            np.testing.assert_array_equal(a[k], b[k])
    other = build_dataset(load(tmp_path, *SMALL, "train.seed=3"))
    assert not np.array_equal(other.train_batch(0)["inputs"], small.train_batch(0)["inputs"])
    batch = small.train_batch(3)
    assert batch["reset"].dtype == bool and batch["doc_pos"].dtype == np.int32 and batch["inputs"].dtype == np.int32


def test_windows_follow_their_document_and_never_straddle(small):
    """Every row reads consecutive windows of one document, then (reset, doc_pos 0) the next; the
    padded tail of a document's last window is masked; one epoch reads every train document once."""
    t, data, off = small.seq_len, small.corpus.data, small.corpus.offsets
    epoch = small.epoch_windows
    prev = [None] * small.batch_size
    seen = [[] for _ in range(small.batch_size)]
    for step in range(epoch):
        batch = small.train_batch(step)
        for r in range(small.batch_size):
            doc, k = small.train_position(r, step)
            pos = int(batch["doc_pos"][r])
            assert pos == k * t
            n = int(batch["mask"][r].sum())
            doc_bytes = np.asarray(data[off[doc] : off[doc + 1]], np.int32)
            np.testing.assert_array_equal(batch["inputs"][r, :n], doc_bytes[pos : pos + n])
            np.testing.assert_array_equal(batch["targets"][r, :n], doc_bytes[pos + 1 : pos + n + 1])
            assert 1 <= n == min(t, len(doc_bytes) - 1 - pos) and (batch["mask"][r, n:] == 0).all()
            if prev[r] is None or bool(batch["reset"][r]):
                assert pos == 0 and bool(batch["reset"][r])
                if prev[r] is not None:  # the previous window was its document's last
                    pdoc, ppos = prev[r]
                    assert ppos + t >= off[pdoc + 1] - off[pdoc] - 1
                seen[r].append(doc)
            else:
                assert (doc, pos) == (prev[r][0], prev[r][1] + t)
            prev[r] = (doc, pos)
    train = sorted(small.split_docs["train"].tolist())
    for r in range(small.batch_size):
        assert sorted(seen[r]) == train  # a permutation per row and epoch
    assert len({tuple(s) for s in seen}) == small.batch_size  # rows follow different orders
    assert small.train_batch(epoch)["reset"].all()  # the next epoch starts new documents


def test_validation_reads_documents_from_their_start(small):
    batches = list(small.val_batches())
    again = list(small.val_batches())
    assert len(batches) == 3
    for a, b in zip(batches, again):
        for k in a:
            np.testing.assert_array_equal(a[k], b[k])
    assert batches[0]["reset"].all() and (batches[0]["doc_pos"] == 0).all()
    val = small.split_docs["val"]
    t, data, off = small.seq_len, small.corpus.data, small.corpus.offsets
    for r in range(4):
        doc = val[r]  # row r starts at validation document r
        for i, batch in enumerate(batches):
            assert int(batch["doc_pos"][r]) == i * t and bool(batch["reset"][r]) == (i == 0)
            np.testing.assert_array_equal(batch["inputs"][r], data[off[doc] + i * t : off[doc] + (i + 1) * t])


def test_a_validation_row_without_documents_is_masked(tmp_path):
    ds = build_dataset(load(tmp_path, "data.corpus=shakespeare"))  # 2 validation documents, 4 rows
    assert ds.split_sizes["val"][0] == 2
    for batch in ds.val_batches():
        assert (batch["mask"][:2] == 1).all() and (batch["mask"][2:] == 0).all()


def test_documents_are_memmap_slices_with_limits(small):
    docs = small.documents("val", max_docs=3, max_bytes=50)
    assert len(docs) == 3 and all(len(d) == 50 and isinstance(d, np.memmap) for d in docs)
    whole = small.documents("test")
    assert len(whole) == small.split_sizes["test"][0] and sum(map(len, whole)) == small.split_sizes["test"][1]
    with pytest.raises(DataError, match="unknown split 'dev'"):
        small.documents("dev")


def test_stream_keys_never_reach_the_model(small):
    batch = small.train_batch(0)
    assert model_extras(batch) == {}
    assert model_extras({**batch, "conditions": 1}) == {"conditions": 1}


def test_fractions_that_leave_no_training_data_are_refused():
    with pytest.raises(config.ConfigError, match="leaves no training data"):
        config.load(None, ["data.source=longdocs", "data.val_fraction=0.5", "data.test_fraction=0.5"])
