"""The `ipt-edge` command line, one module per command; app.py holds what they share.

`train` and `export` need the PyTorch side (`pip install 'ipt-edge[export]'`) and import it only
when called; `predict`, `score` and `info` run on the torch-free runtime, and `serve` on it with
the serve extra (`pip install 'ipt-edge[serve]'`), which it too imports only when called.
"""

# Each module registers its command; --help lists them in this order.
from ipt_edge.cli import train, export, predict, score, info, serve  # noqa: F401, I001
from ipt_edge.cli.app import app, main

__all__ = ["app", "main"]
