"""ONNX Runtime sessions, made in one place: providers, threads, optimization level.

Asking for CUDA where ONNX Runtime cannot use it is an error, never a silent fallback to CPU.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
import threading

import onnxruntime as ort

from ipt_edge.errors import BundleError

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


def threads_from_env() -> int | None:
    """IPT_EDGE_THREADS, if set: a whole number >= 0 (0: ONNX Runtime's default)."""
    value = os.environ.get("IPT_EDGE_THREADS", "").strip()
    if not value:
        return None
    if not value.isdigit() or int(value) > 4096:
        raise ValueError(f"IPT_EDGE_THREADS should be a whole number of threads (0 to 4096), got {value!r}")
    return int(value) or None


def session_options(threads: int | None = None) -> ort.SessionOptions:
    if threads is not None and threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    options = ort.SessionOptions()
    # ONNX Runtime's own fusions at load (layer norms, GELU, the scaled QK product, quantized matmuls):
    # the default backbone graph is exported unfused and relies on them (export_encoder says why).
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    threads = threads or threads_from_env()
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    options.log_severity_level = 3  # warnings from ORT's own graph passes are not actionable here
    return options


# Graphs are loaded from their checked bytes, never by path: ONNX Runtime would then read
# "external data" files the graph names, which no checksum covers. From bytes it looks for them in
# this folder, which stays empty, so a graph with external data is refused.
_no_external_data: str | None = None


def _empty_folder() -> str:
    """Made once per process, on first use, and removed at exit."""
    global _no_external_data
    if _no_external_data is None:
        _no_external_data = tempfile.mkdtemp(prefix="ipt-edge-no-external-data-")
        atexit.register(shutil.rmtree, _no_external_data, True)
    return _no_external_data


_shared_arena_lock = threading.Lock()
_shared_arena = False


def _use_shared_arena(options: ort.SessionOptions) -> None:
    """Let a session take CPU memory from one arena shared by the process (ONNX Runtime's
    environment allocator, registered on first use), not an arena of its own."""
    global _shared_arena
    with _shared_arena_lock:
        if not _shared_arena:
            memory = ort.OrtMemoryInfo(
                "Cpu", ort.OrtAllocatorType.ORT_ARENA_ALLOCATOR, 0, ort.OrtMemType.DEFAULT
            )
            ort.create_and_register_allocator(memory, ort.OrtArenaCfg(0, -1, -1, -1))  # ORT's defaults
            _shared_arena = True
    options.add_session_config_entry("session.use_env_allocators", "1")


def create_session(
    model: bytes,
    name: str,
    providers: list[str],
    threads: int | None = None,
    small: bool = False,
    spin: bool = True,
) -> ort.InferenceSession:
    """A session for the graph `model` (its bytes, already checked); `name` is for messages.

    small: a tiny graph run between backbone calls (the embedding gather, a task's generator). Its
    thread pool does not spin while idle (a spinning pool takes cores from the backbone; docs/
    performance.md), and its memory comes from one arena shared by every small session, so an
    extra task costs about its weights (an arena of its own held ~6 MB per task once it had run)."""
    options = session_options(threads)
    if small or not spin:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if small:
        _use_shared_arena(options)
    options.add_session_config_entry("session.model_external_initializers_file_folder_path", _empty_folder())
    try:
        session = ort.InferenceSession(model, sess_options=options, providers=providers)
    except Exception as error:  # ORT raises its own exception types (Fail, InvalidGraph, ...)
        detail = str(error).strip().splitlines()[0][:300] if str(error).strip() else type(error).__name__
        if "external data" in detail.lower():
            raise BundleError(
                f"{name}: the graph keeps weights in external data files, which a bundle may not"
            ) from None
        raise BundleError(f"{name}: ONNX Runtime cannot load this graph ({detail})") from None
    # The Python InferenceSession keeps the bytes it was made from for as long as it lives (only to
    # re-create itself in set_providers, which we never call): the graphs' size again, held for
    # nothing. The C++ session has its own copy of the weights; let the bytes go.
    if getattr(session, "_model_bytes", None) is not None:
        session._model_bytes = None
    asked = providers[0]
    if asked not in session.get_providers():
        raise ProviderError(f"{name}: asked for {asked}, but the session runs on {session.get_providers()}")
    return session
