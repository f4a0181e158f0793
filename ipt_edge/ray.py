"""Scoring with Ray Data (`pip install "ipt-edge[ray]"`): a bundle's task across a cluster's workers.

    import ray
    from ipt_edge.ray import score_dataset

    ray.init(address="auto")                        # or ray.init(num_cpus=2) on one machine
    ds = ray.data.read_parquet("s3://bucket/reviews/")
    scored = score_dataset(ds, "/shared/bundle", task="sentiment", workers=8, threads=2)
    scored.write_parquet("s3://bucket/scored/")

`IptPredictor` is the callable class `Dataset.map_batches` runs in a pool of actors
(`compute=ray.data.ActorPoolStrategy(size=workers)`, Ray 2.51+ API): each actor opens the bundle
once, from a path every worker can read (a shared file system, or a copy shipped with the job:
`ray.init(runtime_env={"working_dir": "bundle"})` and `bundle="."`), so no ONNX Runtime session
is ever pickled; its ONNX Runtime intra-op threads are the actor's `num_cpus` (`threads`: ORT
ignores OMP_NUM_THREADS, which Ray sets to 1). Batches are Arrow tables; the predictor adds the
same `prediction` (string) and `prob_<label>` (float32) columns as `ipt-edge score`, through the
same code (ipt_edge.scoring).

`ipt-edge score IN -o OUT --engine ray` reads and checks the input as the local engine does,
ships the texts to the actors, and writes what comes back, in input order, through the same
writer and the same chunked commits (so `--resume` works too): its output equals the local one.
"""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ipt_edge.bundle import check_texts
from ipt_edge.scoring import Outputs, Scorer, chunk_texts, probabilities, refused_row, scored_table
from ipt_edge.tables import Chunk, TableError
from ipt_edge.tokenizer import Text, TextError

if TYPE_CHECKING:
    from ipt_edge.task import Task

ROW_ID = "__ipt_row"
TRUNCATED = "__ipt_truncated"


class RayUnavailable(Exception):
    """Ray Data is not installed, or the cluster cannot be reached."""


def _quiet_environment() -> None:
    # Silence what Ray would print on every start: token auth, usage stats, the dashboard.
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")


def import_ray() -> Any:
    _quiet_environment()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # Ray's own modules emit them
            import ray
            import ray.data
    except ImportError:
        raise RayUnavailable('--engine ray needs Ray Data: pip install "ipt-edge[ray]"') from None
    return ray


def _quiet_data_context(ray: Any, preserve_order: bool) -> None:
    for name in ("ray", "ray.data"):  # start-up and per-dataset INFO lines; warnings still show
        logging.getLogger(name).setLevel(logging.WARNING)
    # We turn Ray's progress bars off (the command draws its own), and Ray warns that it is off.
    logging.getLogger("ray.data._internal.progress").setLevel(logging.ERROR)
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    context.print_on_execution_start = False
    if preserve_order:
        context.execution_options.preserve_order = True


class IptPredictor:
    """The callable class for `Dataset.map_batches(IptPredictor, batch_format="pyarrow", ...)`.

    Opens `bundle` once per actor with `threads` ONNX Runtime intra-op threads (give the actor
    `num_cpus=threads`); each call takes an Arrow table and returns it with `prediction` and
    `prob_<label>` columns added. A row without a usable text raises TableError naming the column
    and the row (within the batch)."""

    def __init__(
        self,
        bundle: str | Path,
        task: str | None = None,
        *,
        text_column: str = "text",
        text_pair_column: str | None = None,
        threads: int = 1,
        batch_size: int = 32,
        precision: str = "fp32",
        provider: str = "cpu",
        count_truncated: bool = False,
    ):
        from ipt_edge.bundle import Bundle

        self.bundle = Bundle.load(bundle, providers=provider, threads=threads, precision=precision)
        self.task = self.bundle.task(task)  # None: the bundle's only task
        self.outputs = Outputs.single(self.task.name, self.task.labels)
        self.text_column = text_column
        self.text_pair_column = text_pair_column
        self.batch_size = batch_size
        self.count_truncated = count_truncated

    def __call__(self, batch: Any) -> Any:
        import pyarrow as pa

        clash = [c for c in self.outputs.added if c in batch.schema.names]
        if clash:
            raise TableError(f"the dataset already has column(s) {clash}, which scoring adds")
        chunk = Chunk([f"batch row {i + 1}" for i in range(batch.num_rows)], None, batch)
        texts, tasks, _ = chunk_texts(
            Path("dataset"), chunk, self.text_column, self.text_pair_column, self.outputs
        )
        try:
            probs, truncated = probabilities(self.bundle, texts, tasks, self.outputs, self.batch_size)
        except TextError as error:
            columns = [self.text_column, self.text_pair_column]
            raise refused_row(error, Path("dataset"), chunk, columns) from None
        table = scored_table(batch, self.outputs, probs)
        if self.count_truncated:  # the batch's count in its first row, for the driver's note
            counts = np.zeros(batch.num_rows, dtype=np.int64)
            counts[:1] = truncated
            table = table.append_column(TRUNCATED, pa.array(counts))
        return table


def score_dataset(
    ds: Any,
    bundle: str | Path,
    task: str | None = None,
    *,
    text_column: str = "text",
    text_pair_column: str | None = None,
    workers: int | None = None,
    threads: int = 1,
    batch_size: int = 32,
    batch_rows: int = 1024,
    precision: str = "fp32",
    provider: str = "cpu",
    preserve_order: bool = True,
    count_truncated: bool = False,
) -> Any:
    """`ds` with `prediction` and `prob_<label>` columns, scored by `workers` actors of `threads`
    CPUs each (default: the cluster's CPUs / threads, less one actor on a cluster with room for
    more than one, so read tasks keep a CPU: N one-CPU actors on N CPUs leave a read task none).

    `bundle` must be readable at that path on every worker. `batch_rows` rows go to an actor at a
    time (sorted by length there, then run `batch_size` at a time). `preserve_order` (default)
    sets Ray Data's `execution_options.preserve_order`, so the rows come out in input order."""
    ray = import_ray()
    import pyarrow as pa  # noqa: F401  (ray[data] brings it; fail here rather than in an actor)

    if not ray.is_initialized():
        raise RayUnavailable("call ray.init(...) before score_dataset")
    _quiet_data_context(ray, preserve_order)
    if preserve_order:  # a Dataset keeps the context of its creation: set it on `ds` too
        ds.context.execution_options.preserve_order = True
    if workers is None:
        cpus = int(ray.cluster_resources().get("CPU", 1))
        workers = max(1, cpus // threads - 1) if cpus // threads > 1 else 1
    return ds.map_batches(
        IptPredictor,
        fn_constructor_kwargs={
            "bundle": str(bundle), "task": task, "text_column": text_column,
            "text_pair_column": text_pair_column, "threads": threads, "batch_size": batch_size,
            "precision": precision, "provider": provider, "count_truncated": count_truncated,
        },
        batch_format="pyarrow",
        batch_size=batch_rows,
        compute=ray.data.ActorPoolStrategy(size=workers),
        num_cpus=threads,
        # A failed actor fails the job (with its error) rather than restarting without its arguments.
        max_restarts=0,
    )  # fmt: skip


class RayScorer(Scorer):
    """`ipt-edge score --engine ray`: every chunk's texts are shipped first (`submit`), then the
    actors' probabilities come back in input order, chunk by chunk (`probabilities`)."""

    needs_all_texts = True

    def __init__(
        self,
        bundle: Path,
        task: Task,
        *,
        address: str | None = None,
        workers: int | None = None,
        threads: int = 1,
        batch_size: int = 32,
        precision: str = "fp32",
        provider: str = "cpu",
    ):
        """`task`: the bundle's task as the driver opened it, for its name, labels and text kind;
        each actor opens the bundle at `bundle` itself."""
        self.ray = ray = import_ray()
        self.provider = provider
        self.bundle = Path(bundle).resolve()
        self.task, self.labels, self.text_pair = task, list(task.labels), task.text_pair
        self.outputs = Outputs.single(task.name, self.labels)
        self.label_indexes = {task.name: dict(task.label_index)}
        self.threads, self.batch_size, self.precision = threads, batch_size, precision
        self._started = not ray.is_initialized()
        if self._started:
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", DeprecationWarning)
                    ray.init(
                        address=address,
                        include_dashboard=False,
                        logging_level=logging.ERROR,
                        log_to_driver=False,
                    )
            except (ConnectionError, RuntimeError, ValueError) as error:
                raise RayUnavailable(f"--address {address}: cannot join the Ray cluster ({error})") from None
        cpus = int(ray.cluster_resources().get("CPU", 1))
        # The texts come from the driver's object store, not from read tasks: every CPU can host an actor.
        self.workers = workers or max(1, cpus // threads)
        self._refs: list[Any] = []
        self._rows = 0
        self._batch_rows = 1
        self._stream: Any = None
        self._pending: list[Any] = []
        self._next = 0

    def submit(self, texts: list[Text]) -> None:
        """Checks the texts (a TextError names each refused one), as Bundle.run would in an actor,
        where a refused text could be named only by its row in the actor's batch."""
        import pyarrow as pa

        check_texts(texts, [self.task] * len(texts))
        columns: dict[str, Any] = {ROW_ID: pa.array(range(self._rows, self._rows + len(texts)), pa.int64())}
        if self.text_pair:
            columns["text"] = pa.array([t[0] for t in texts], pa.string())
            columns["text_pair"] = pa.array([t[1] for t in texts], pa.string())
        else:
            columns["text"] = pa.array(texts, pa.string())
        self._refs.append(self.ray.put(pa.table(columns)))
        self._rows += len(texts)
        self._batch_rows = max(self._batch_rows, len(texts))

    def run(self) -> None:
        _quiet_data_context(self.ray, preserve_order=True)  # before the Dataset copies the context
        ds = self.ray.data.from_arrow_refs(self._refs)
        # A chunk is a block and goes to one actor: more actors than chunks would idle (Ray warns).
        self.workers = max(1, min(self.workers, len(self._refs)))
        self._refs = []
        scored = score_dataset(
            ds, self.bundle, self.task.name, text_column="text",
            text_pair_column="text_pair" if self.text_pair else None, workers=self.workers,
            threads=self.threads, batch_size=self.batch_size, batch_rows=self._batch_rows,
            precision=self.precision, provider=self.provider, preserve_order=True, count_truncated=True,
        )  # fmt: skip
        self._stream = iter(scored.iter_batches(batch_format="pyarrow", batch_size=None))

    def probabilities(self, texts: list[Text], tasks: list[str] | None = None) -> tuple[np.ndarray, int]:
        import pyarrow as pa

        need, have = len(texts), sum(t.num_rows for t in self._pending)
        try:
            while have < need:
                table = next(self._stream)
                self._pending.append(table)
                have += table.num_rows
        except StopIteration:
            raise RuntimeError(f"Ray Data returned {self._next + have} rows of {self._rows}") from None
        except self.ray.exceptions.RayTaskError as error:
            cause = getattr(error, "cause", None)
            if isinstance(cause, TableError):
                raise TableError(str(cause)) from None
            raise
        table = pa.concat_tables(self._pending)
        taken, rest = table.slice(0, need), table.slice(need)
        self._pending = [rest] if rest.num_rows else []
        ids = taken.column(ROW_ID).to_numpy()
        if not np.array_equal(ids, np.arange(self._next, self._next + need)):
            raise RuntimeError("Ray Data returned rows out of order, lost or duplicated")
        self._next += need
        truncated = int(taken.column(TRUNCATED).to_numpy().sum())
        probs = [taken.column(f"prob_{label}").to_numpy().astype(np.float32) for label in self.labels]
        return np.stack(probs, axis=1), truncated

    def close(self) -> None:
        if self._stream is not None:  # let Ray's iterator finish before its cluster goes
            try:
                for _ in self._stream:
                    pass
            except Exception:  # an error already reported, or a stream cut short by it
                pass
            self._stream = None
        if self._started and self.ray.is_initialized():
            self.ray.shutdown()
