"""What a newcomer sees when exporting an MPNet task (issue #17, real weights): the default backbone
graph is unfused for every architecture, so the export has nothing to say about fusion (with
`--optimize` it says that MPNet's attention is not fused, as expected: test_architectures.py), and
`--quantize int8` does not flood the terminal with the quantizer's per-layer shape-inference
warnings. A tiny random MPNet (tests/tiny_architectures.py); no real weights, no ../shared."""

from __future__ import annotations

import logging

import pytest

pytestmark = pytest.mark.export


def test_mpnet_export_with_int8_says_what_to_expect_and_nothing_more(tmp_path, caplog):
    from ipt_edge_export.onnx_export import Calibration, export_checkpoint

    from .tiny import sentiment_rows, train_checkpoint, write_tsv
    from .tiny_architectures import write_architecture

    train = write_tsv(tmp_path / "train.tsv", ["text", "label"], sentiment_rows(48, seed=1))
    dev = write_tsv(tmp_path / "dev.tsv", ["text", "label"], sentiment_rows(16, seed=2))
    backbone = write_architecture("mpnet", tmp_path / "mpnet")
    checkpoint = train_checkpoint(backbone, train, dev, tmp_path / "ckpt", generator="attn-prefix")
    messages: list[str] = []
    with caplog.at_level(logging.WARNING):
        export_checkpoint(
            checkpoint, tmp_path / "bundle", int8=Calibration(dev, tolerance=100.0), log=messages.append
        )
    assert not [m for m in messages if "fuse" in m], messages
    shape_noise = [r.getMessage() for r in caplog.records if "unsupported type to quantize" in r.getMessage()]
    assert not shape_noise, shape_noise[:1]
    assert any(m.startswith("int8 encoder on dev.tsv") for m in messages)  # the int8 check still reports
