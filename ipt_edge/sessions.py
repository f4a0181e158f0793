"""ONNX Runtime sessions, made in one place: providers, threads, optimization level.

Asking for CUDA where ONNX Runtime cannot use it is an error, never a silent fallback to CPU.
"""

from __future__ import annotations

import os
from pathlib import Path

import onnxruntime as ort

PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}


class ProviderError(RuntimeError):
    """The asked execution provider is not available, or did not take the graph."""


def resolve_providers(providers: str | list[str] | None) -> list[str]:
    """'cpu' / 'cuda' / ONNX Runtime provider names -> the list to give InferenceSession."""
    if providers is None:
        return [PROVIDERS["cpu"]]
    names = [providers] if isinstance(providers, str) else list(providers)
    resolved = [PROVIDERS.get(name.lower(), name) for name in names]
    available = ort.get_available_providers()
    for name in resolved:
        if name not in available:
            hint = (
                " (install onnxruntime-gpu, with CUDA and cuDNN it supports)"
                if name == PROVIDERS["cuda"]
                else ""
            )
            raise ProviderError(
                f"{name} is not available in this onnxruntime{hint}; available: {', '.join(available)}"
            )
    if PROVIDERS["cpu"] not in resolved:
        resolved.append(PROVIDERS["cpu"])  # for the few ops a GPU provider leaves to the CPU
    return resolved


def session_options(threads: int | None = None) -> ort.SessionOptions:
    options = ort.SessionOptions()
    # The backbone was optimized at export; basic fusions at load are cheap, the rest are already done.
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    threads = threads or int(os.environ.get("IPT_EDGE_THREADS", "0")) or None
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    options.log_severity_level = 3  # warnings from ORT's own graph passes are not actionable here
    return options


def create_session(path: Path, providers: list[str], threads: int | None = None) -> ort.InferenceSession:
    session = ort.InferenceSession(str(path), sess_options=session_options(threads), providers=providers)
    asked = providers[0]
    if asked not in session.get_providers():
        raise ProviderError(
            f"{path.name}: asked for {asked}, but the session runs on {session.get_providers()}"
        )
    return session
