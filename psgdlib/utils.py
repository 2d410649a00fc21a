"""Small shared helpers: profiles, device choice, seeding, provenance, atomic writes."""
from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import subprocess
import tempfile
from pathlib import Path
from typing import Any, Mapping

import torch

__all__ = ["PROFILES", "PROFILE_ENV", "get_profile", "pick_device", "seed_everything", "provenance",
           "atomic_write_json", "atomic_torch_save", "setup_notebook", "configure_cpu"]

PROFILES = ("smoke", "cpu", "paper")
PROFILE_ENV = "PSGD_PROFILE"


def get_profile(default: str = "cpu") -> str:
    """The run profile from ``$PSGD_PROFILE``: ``smoke`` (CI), ``cpu`` (default) or ``paper``."""
    p = os.environ.get(PROFILE_ENV, default).strip().lower() or default
    if p not in PROFILES:
        raise ValueError(f"{PROFILE_ENV}={p!r} is not a profile; choose one of {PROFILES}")
    return p


def pick_device(device: str | torch.device | None = None) -> torch.device:
    """``device`` if given, else CUDA when available, else CPU."""
    if device is not None:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def configure_cpu(threads: int | None = None) -> None:
    """Flush denormals (tanh states decay into them and slow CPU kernels ~10x) and set threads."""
    torch.set_flush_denormal(True)
    if threads is not None:
        torch.set_num_threads(threads)


def seed_everything(seed: int) -> torch.Generator:
    """Seed torch's global generators; returns a CPU generator seeded with ``seed``."""
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def _git_commit() -> str:
    try:
        root = Path(__file__).resolve().parent.parent
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                             timeout=5)
        commit = out.stdout.strip() if out.returncode == 0 else "unknown"
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return commit + ("+dirty" if dirty and commit != "unknown" else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def hardware(device: torch.device | str | None = None) -> str:
    """A one-line description of the hardware a run used."""
    device = pick_device(device)
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (CUDA)"
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads"


def provenance(device: torch.device | str | None = None, command: str | None = None) -> dict:
    """Where a result came from: command, commit, hardware, versions, date."""
    import sys
    return {
        "command": command if command is not None else " ".join(sys.argv),
        "git_commit": _git_commit(),
        "hardware": hardware(device),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write JSON so that readers see either the old file or the complete new one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix="." + path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(obj, f, indent=1, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save`` so that readers see either the old file or the complete new one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix="." + path.name, suffix=".tmp")
    os.close(fd)
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def setup_notebook(seed: int = 0, expected: Mapping[str, Mapping[str, str]] | None = None,
                   default_profile: str = "cpu") -> tuple[str, torch.device, torch.Generator]:
    """First-cell set-up of a chapter: profile, device, seed; prints the expected run time.

    ``expected`` maps profile -> {"cpu": "...", "gpu": "..."} run-time estimates.
    Returns ``(profile, device, generator)``.
    """
    profile = get_profile(default_profile)
    device = pick_device()
    # one thread: the RNN matrices are small, and a second thread oversubscribes a 2-core
    # machine as soon as anything else runs (measured: 15 ms -> 7.8 s per PSGD iteration)
    configure_cpu(threads=1 if device.type == "cpu" else None)
    gen = seed_everything(seed)
    print(f"psgdlib profile: {profile!r} (set {PROFILE_ENV}=smoke|cpu|paper to change)")
    print(f"device: {device} -- {hardware(device)}; torch {torch.__version__}")
    if expected:
        for prof, est in expected.items():
            mark = "->" if prof == profile else "  "
            print(f"{mark} {prof:6s} expected run time: CPU {est.get('cpu', '?')}, GPU {est.get('gpu', '?')}")
    return profile, device, gen
