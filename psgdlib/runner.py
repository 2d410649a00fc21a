"""The resumable runner of the synthetic-problem runs (Experiments 1 and 2).

A run is a :class:`psgdlib.train.TrainConfig` dict; each finished run is one JSON file
(:class:`psgdlib.results.RunResult`: config, outcome, curve, wall time, provenance) named by
:func:`run_name`, written atomically.  A rerun skips finished runs, refuses a stored run made
with other settings (its resolved config is compared, not just the file name), redoes one
whose file is unreadable, and continues an unfinished run from its mid-run checkpoint under
``<out>/_checkpoints``.  Runs go to a local process pool (``jobs``) or, with ``scheduler``, to
the workers of a Dask distributed cluster, which write to the same (shared) folder by the
same rules.  ``python -m psgdlib.experiments run`` is the command line.
"""
from __future__ import annotations

import itertools
import os
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict
from pathlib import Path
from typing import Any, Iterable, Sequence

from .results import RunResult
from .utils import provenance

__all__ = ["run_name", "grid", "CHECKPOINT_DIR", "checkpoint_path", "run_file", "run_grid"]

def run_name(cfg: dict) -> str:
    """File name of a run: everything that distinguishes runs of one grid."""
    tail = "" if cfg.get("stop_when_solved", True) else "_full"
    if cfg.get("model", "rnn") != "rnn":
        tail += f"_{cfg['model']}"
    if cfg.get("lr") is not None:       # non-default settings are part of the name
        tail += f"_lr{cfg['lr']:g}"
    if cfg.get("clip") is not None:
        tail += f"_clip{cfg['clip']:g}"
    return (f"{cfg['problem']}_T{cfg['T']}_{cfg['optimizer']}_{cfg['pairs']}_h{cfg['hidden']}"
            f"_n{cfg['iterations']}{tail}_s{cfg['seed']}.json")


def grid(problems: Iterable[str], Ts: Iterable[int], optimizers: Iterable[str], seeds: Iterable[int],
         **common: Any) -> list[dict]:
    """All run configs of a grid (validated: unknown problems/optimizers or bad T raise)."""
    from .train import TrainConfig
    out = []
    for p, T, o, s in itertools.product(problems, Ts, optimizers, seeds):
        cfg = TrainConfig(problem=p, T=int(T), optimizer=o, seed=int(s), **common)
        cfg.resolved()  # raises ValueError on nonsense
        out.append(asdict(cfg))
    return out


CHECKPOINT_DIR = "_checkpoints"   # mid-run checkpoints, one per unfinished run, under --out


def checkpoint_path(out_dir: str | os.PathLike, cfg: dict) -> Path:
    """Where the mid-run checkpoint of run ``cfg`` lives: ``<out_dir>/_checkpoints/<name>.pt``."""
    return Path(out_dir) / CHECKPOINT_DIR / (Path(run_name(cfg)).stem + ".pt")


def _stored_config_mismatch(path: Path, cfg: dict) -> dict:
    """The settings in which the finished run stored at ``path`` differs from ``cfg``
    (resolved); empty when it is the same run.  A file that cannot be read is renamed to
    ``<name>.corrupt`` (so the run is redone) and reported as ``{"file": "unreadable"}``."""
    from .train import TrainConfig
    try:
        stored = RunResult.read(path).config
    except ValueError as e:
        bad = path.with_name(path.name + ".corrupt")
        os.replace(path, bad)
        print(f"unreadable result file: {e}; moved to {bad.name}, the run is redone",
              file=sys.stderr, flush=True)
        return {"file": "unreadable"}
    want = asdict(TrainConfig(**cfg).resolved())
    return {k: (stored.get(k), v) for k, v in want.items() if k in stored and stored[k] != v}


def _finished(path: Path, cfg: dict) -> bool:
    """Whether run ``cfg`` is stored at ``path``: False when the file is missing or unreadable
    (then set aside); ``ValueError`` when it holds a run made with other settings."""
    if not path.exists():
        return False
    diff = _stored_config_mismatch(path, cfg)
    if diff and diff != {"file": "unreadable"}:
        raise ValueError(f"{path} holds a run with other settings (stored vs requested: {diff}); "
                         "use another --out folder")
    return not diff




def run_file(cfg: dict, out_dir: str | os.PathLike, device: str | None = None,
             max_seconds: float | None = None, threads: int | None = 1, progress: bool = False,
             command: str | None = None, checkpoint_every: int = 2000,
             pause_after: float | None = None) -> Path | None:
    """Train one run unless its file exists; write the result atomically; return the path.

    The run checkpoints its whole state to ``<out_dir>/_checkpoints/<name>.pt`` every
    ``checkpoint_every`` iterations and continues from there when restarted (bit-identical to
    an uninterrupted run); the checkpoint is removed once the result is written.  With
    ``pause_after`` seconds the run stops at its next evaluation after that long, keeps its
    checkpoint, writes no result and returns None.  A stored file made with other settings
    than ``cfg`` raises ``ValueError``; an unreadable one is set aside and the run redone.
    ``command`` is recorded as the provenance command (default: this process's argv)."""
    import torch

    from .train import NonFiniteLossError, RunPaused, TrainConfig, train
    path = Path(out_dir) / run_name(cfg)
    if _finished(path, cfg):
        return path
    if threads is not None:
        torch.set_num_threads(threads)
    config = TrainConfig(**cfg)
    ckpt = checkpoint_path(out_dir, cfg)
    if ckpt.exists() and progress is not None:
        it = torch.load(ckpt, map_location="cpu", weights_only=False).get("state", {}).get("it")
        print(f"{path.name}: resuming from iteration {it}", flush=True)
    try:
        result = train(config, device=device, progress=progress, max_seconds=max_seconds,
                       checkpoint=ckpt, checkpoint_every=checkpoint_every, pause_after=pause_after)
    except RunPaused as e:
        print(f"{path.name}: {e}", flush=True)
        return None
    except NonFiniteLossError as e:   # a genuine failure: keep what the run did before it diverged
        result = e.partial if e.partial is not None else RunResult(
            asdict(config.resolved()), False, None, None, None, "non_finite", None, None,
            error=str(e)).to_dict()
    if command is None:
        command = " ".join(["python -m psgdlib.experiments"] + sys.argv[1:])
    run = RunResult.from_dict(result, str(path))
    run.provenance = provenance(device, command=command)
    run.write(path)
    ckpt.unlink(missing_ok=True)
    return path




def _check_writable(out_dir: Path) -> None:
    """Fail before any training when results could not be written to ``out_dir``."""
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"--out {out_dir} is a file, not a folder")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        probe = tempfile.NamedTemporaryFile(dir=out_dir, prefix=".write-test-", delete=True)
        probe.close()
    except OSError as e:
        raise ValueError(f"--out {out_dir} is not writable ({e.strerror or e})") from e


def _die_with_parent() -> None:
    """Worker initializer: exit as soon as the parent process is gone (even after ``kill -9``,
    which runs no clean-up in the parent), instead of finishing a run nobody collects."""
    import threading
    parent = os.getppid()

    def watch() -> None:
        while True:
            time.sleep(0.5)
            if os.getppid() != parent:
                os._exit(1)

    threading.Thread(target=watch, daemon=True).start()


def _run_one(cfg: dict, out_dir: Path, device, max_seconds, threads, progress, command,
             checkpoint_every: int, pause_at: float | None) -> Path | None:
    """:func:`run_file` with an absolute pause time (``time.time()``); a run that has not
    started yet is not started once that time has passed."""
    pause_after = None
    if pause_at is not None:
        pause_after = pause_at - time.time()
        if pause_after <= 0 and not checkpoint_path(out_dir, cfg).exists():
            return None
        pause_after = max(pause_after, 0.0)
    return run_file(cfg, out_dir, device, max_seconds, threads=threads, progress=progress, command=command,
                    checkpoint_every=checkpoint_every, pause_after=pause_after)


def run_grid(configs: Sequence[dict], out_dir: str | os.PathLike, jobs: int = 1, device: str | None = None,
             max_seconds: float | None = None, progress: bool = True,
             command: str | None = None, threads: int | None = None, checkpoint_every: int = 2000,
             pause_at: float | None = None, scheduler: Any = None) -> list[Path]:
    """Run every config not already done, in ``jobs`` processes; return the finished files.

    ``threads`` is the number of torch threads per run: default 1 when ``jobs > 1``,
    else torch's default (all cores).  Give 1 when other runs share the machine:
    two processes with two threads each on two cores run several times slower
    than two with one thread each.  Every run checkpoints mid-run (see :func:`run_file`);
    ``pause_at`` (a ``time.time()`` value) pauses the runs in progress at their next
    evaluation after it and starts no new one: a later call continues them.  A stored run
    with other settings than its config raises ``ValueError`` before anything is trained.

    ``scheduler`` (a Dask scheduler address such as ``tcp://host:8786``, or a
    ``distributed.Client`` or cluster object) sends each unfinished run to that cluster as one
    task instead (see :func:`_run_on_cluster`); ``jobs`` must then be 1."""
    if threads is not None and threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    if jobs < 1:
        raise ValueError(f"jobs must be >= 1, got {jobs}")
    if scheduler is not None and jobs > 1:
        raise ValueError("--scheduler and --jobs > 1 exclude each other: the cluster's workers "
                         "are the parallel runs (start them with --nworkers N --nthreads 1)")
    out_dir = Path(out_dir)
    _check_writable(out_dir)
    todo, done = [], []
    for c in configs:
        path = out_dir / run_name(c)
        if _finished(path, c):
            done.append(path)
        else:
            todo.append(c)
    if progress:
        print(f"{len(configs)} runs in the grid, {len(done)} already done, {len(todo)} to run", flush=True)
    args = (device, max_seconds)
    if scheduler is not None:
        if command is None:   # the workers' own argv is ``dask worker ...``: record the sweep's
            command = " ".join(["python -m psgdlib.experiments"] + sys.argv[1:])
        kwargs = dict(device=device, max_seconds=max_seconds, threads=threads or 1, progress=False,
                      command=command, checkpoint_every=checkpoint_every, pause_at=pause_at)
        return done + _run_on_cluster(scheduler, todo, out_dir, kwargs, progress)
    if jobs == 1 or len(todo) <= 1:
        threads = 1 if threads is None and jobs > 1 else threads
        results = (_run_one(c, out_dir, *args, threads, progress, command, checkpoint_every, pause_at)
                   for c in todo)
        return done + _collect(results, progress)
    import multiprocessing as mp
    with ProcessPoolExecutor(max_workers=jobs, mp_context=mp.get_context("spawn"),
                             initializer=_die_with_parent) as ex:
        futs = [ex.submit(_run_one, c, out_dir, *args, threads or 1, False, command, checkpoint_every, pause_at)
                for c in todo]
        return done + _collect((f.result() for f in as_completed(futs)), progress)


def _collect(results: Iterable[Path | None], progress: bool) -> list[Path]:
    out = []
    for p in results:
        if p is not None:
            out.append(p)
            if progress:
                print("finished", p.name, flush=True)
    return out


class MissingPackageError(ImportError):
    """An optional package that the requested feature needs is not installed."""


_NO_DISTRIBUTED = ("--scheduler needs the Dask 'distributed' package, which is not installed: "
                   "pip install distributed  (or: pip install 'psgdlib[cluster]')")


def _client(scheduler: Any):
    """A ``distributed.Client`` for ``scheduler`` and whether this runner owns (closes) it."""
    try:
        import distributed
    except ImportError as e:
        raise MissingPackageError(_NO_DISTRIBUTED) from e
    if isinstance(scheduler, distributed.Client):
        return scheduler, False
    if not isinstance(scheduler, str) and not hasattr(scheduler, "scheduler_address"):
        raise ValueError(f"scheduler must be an address such as tcp://host:8786, a distributed.Client "
                         f"or a cluster, got {type(scheduler).__name__}")
    try:
        return distributed.Client(scheduler, set_as_default=False), True
    except (OSError, TimeoutError) as e:
        raise ValueError(f"--scheduler {scheduler}: cannot connect to a Dask scheduler there ({e}); "
                         "start one with `dask scheduler` (see the README)") from None


def _probe_exists(path: str) -> bool:
    """Run on each worker: whether ``path`` (the client's probe file) is visible there."""
    return os.path.exists(path)


def _check_shared(client, out_dir: Path) -> None:
    """Fail before any training when a worker does not see ``out_dir`` (not a shared folder):
    its results would land on that worker's own disk."""
    with tempfile.NamedTemporaryFile(dir=out_dir, prefix=".dask-probe-") as probe:
        seen = client.run(_probe_exists, probe.name)
    blind = sorted(w for w, ok in seen.items() if not ok)
    if blind:
        raise ValueError(f"--out {out_dir} is not visible to the workers {', '.join(blind)}: with "
                         "--scheduler the output folder must be on a filesystem that every worker "
                         "shares (same path)")


def _task_key(cfg: dict, out_dir: Path) -> str:
    """The cluster's name of run ``cfg`` into ``out_dir``: its run name, plus a hash of the
    folder so that one run written to two folders is two tasks."""
    import hashlib
    tag = hashlib.sha1(str(out_dir).encode()).hexdigest()[:8]
    return f"{Path(run_name(cfg)).stem}-{tag}"


def _run_on_cluster(scheduler: Any, todo: Sequence[dict], out_dir: Path, kwargs: dict,
                    progress: bool) -> list[Path]:
    """Run ``todo`` on a Dask cluster, one task per run; return the finished files.

    Each task is :func:`_run_one` on a worker, which writes the result file itself (atomically)
    into ``out_dir``, so the folder must be shared by every worker (checked first).  A task
    whose worker dies (killed, lost, out of memory) is rescheduled by the scheduler on another
    worker (up to ``distributed.scheduler.allowed-failures`` times, default 3), and continues
    from the run's last checkpoint under ``out_dir/_checkpoints``.  An exception in a run is
    not retried (it would fail again); the other runs go on, and the first error is raised
    once they are done."""
    shared = out_dir.resolve()   # the workers' working folders differ from ours
    client, own = _client(scheduler)
    try:
        _check_shared(client, shared)
        if progress:
            n = len(client.scheduler_info().get("workers", {}))
            print(f"submitting {len(todo)} runs to {client.scheduler.address} ({n} workers now)",
                  flush=True)
        from distributed import as_completed as dask_completed
        futs = [client.submit(_run_one, c, shared, key=_task_key(c, shared), pure=False, **kwargs)
                for c in todo]
        finished, errors = [], []
        for f in dask_completed(futs, loop=client.loop):   # (not the default client)
            try:
                p = f.result()
            except Exception as e:   # noqa: BLE001 - reported below, after the other runs
                errors.append(e)
                print(f"run {f.key} failed: {type(e).__name__}: {e}", file=sys.stderr, flush=True)
                continue
            finished.append(None if p is None else out_dir / Path(p).name)
        finished = _collect(finished, progress)
        if errors:
            raise errors[0]
        return finished
    finally:
        if own:
            client.close()
