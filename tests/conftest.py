"""Fixtures. Runtime tests read the bundles committed under tests/bundles/ (rebuilt by
`python tests/bundles/make.py`) and need no torch: `pytest -m "not export"` runs them without the
export extra. Tests marked `export` train and export with PyTorch: a tiny random BERT with its own
WordPiece tokenizer and tasks trained on it, built in a temp folder (no network, no ../shared).

Committed bundles are shared by every test: a test that changes a bundle copies it first."""

from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path

import pytest

from .tiny import (  # noqa: F401  (re-exported: tests import these helpers from .conftest)
    BUNDLES,
    FILLER,
    KINDS,
    MULTI_BUNDLE,
    NEGATIVE,
    PAIR_BUNDLE,
    POSITIVE,
    SENTIMENT_BUNDLE,
    sentiment_rows,
    train_checkpoint,
    write_backbone,
    write_tsv,
)


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "export: needs the export extra (torch): trains, exports, or compares with PyTorch"
    )


def pytest_collection_modifyitems(config, items):
    if importlib.util.find_spec("torch") is None:  # looked up, not imported
        skip = pytest.mark.skip(reason="needs the export extra (torch); run -m 'not export' without it")
        for item in items:
            if "export" in item.keywords:
                item.add_marker(skip)


def _committed_files() -> dict[str, str]:
    return {
        str(path.relative_to(BUNDLES)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(BUNDLES.rglob("*"))
        if path.is_file() and "__pycache__" not in path.parts
    }


@pytest.fixture(scope="session", autouse=True)
def committed_bundles_stay_as_committed():
    """Tests share the committed bundles: one that changed a file would change every later test."""
    before = _committed_files()
    yield
    assert _committed_files() == before, "a test changed tests/bundles/: copy a bundle before changing it"


@pytest.fixture(scope="session")
def bundle() -> Path:
    """The committed one-task bundle: an mlp-prefix task "sentiment", labels neg/pos. Read-only."""
    return SENTIMENT_BUNDLE


@pytest.fixture(scope="session")
def multi() -> Path:
    """The committed bundle of tiny.MULTI_TASKS (rating3's labels differ from the rest). Read-only."""
    return MULTI_BUNDLE


@pytest.fixture(scope="session")
def pair_bundle() -> Path:
    """The committed pair task "entail" (premise, hypothesis; labels differ/same). Read-only."""
    return PAIR_BUNDLE


@pytest.fixture(scope="session")
def tiny_backbone(tmp_path_factory) -> Path:
    """A 2-layer, hidden-32 BERT folder (config.json, model.safetensors, tokenizer.json). Needs torch."""
    return write_backbone(tmp_path_factory.mktemp("backbones") / "tiny-bert")


@pytest.fixture(scope="session")
def sentiment_files(tmp_path_factory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("data")
    train = write_tsv(folder / "train.tsv", ["text", "label"], sentiment_rows(96, seed=1))
    dev = write_tsv(folder / "dev.tsv", ["text", "label"], sentiment_rows(24, seed=2))
    return train, dev


@pytest.fixture(scope="session")
def checkpoints(tiny_backbone, sentiment_files, tmp_path_factory) -> dict[str, Path]:
    """One trained checkpoint per generator family (a few steps each), and "mlp-prefix@1": an
    mlp-prefix task prompting from layer 1 on (of the tiny BERT's 2). Needs torch."""
    folder = tmp_path_factory.mktemp("checkpoints")
    train, dev = sentiment_files
    made = {
        kind: train_checkpoint(tiny_backbone, train, dev, folder / kind, generator=kind) for kind in KINDS
    }
    made["mlp-prefix@1"] = train_checkpoint(
        tiny_backbone, train, dev, folder / "mlp-prefix-1", generator="mlp-prefix", prefix_from_layer=1
    )
    return made
