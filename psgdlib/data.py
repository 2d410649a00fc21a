"""MNIST / Fashion-MNIST as in-memory tensors, plus minibatch helpers.

Where the data lives
--------------------
:func:`load_mnist` looks for the data under a *data root*, chosen in this order:

1. the ``root`` argument;
2. the environment variable ``PSGD_DATA`` (see :data:`ENV_VAR`);
3. ``~/.cache/psgdlib/data`` (see :func:`default_root`).

Below the root the layout is torchvision's: ``<root>/MNIST/raw/`` (or
``<root>/FashionMNIST/raw/``) holds the four official files ``train-images-idx3-ubyte``,
``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte`` and ``t10k-labels-idx1-ubyte``,
uncompressed and/or gzipped (``*.gz``). When only the ``.gz`` files are present they are
decompressed next to themselves (no network, no checksum check); if the folder is
read-only, the ``.gz`` files are read directly instead. A truncated or corrupt ``.gz`` raises
a ValueError naming it, and no partial file is left behind. When no files are present the
loader can download them with torchvision (``download``), which needs internet access.

Images are converted to a float tensor once (torchvision's ``.data`` / ``.targets``,
divided by 255), which is far faster than iterating a ``DataLoader``.
"""

from __future__ import annotations

import gzip
import os
import shutil
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path

import torch
from torch import Tensor

__all__ = [
    "ENV_VAR",
    "DATASETS",
    "MNIST_FILES",
    "default_root",
    "resolve_root",
    "raw_folder",
    "load_mnist",
    "read_idx",
    "subset",
    "batches",
]

#: Environment variable naming the data root (used when ``root`` is not given).
ENV_VAR = "PSGD_DATA"

#: ``dataset`` argument -> torchvision class name (also the folder name below the root).
DATASETS: dict[str, str] = {"mnist": "MNIST", "fashion_mnist": "FashionMNIST"}

#: Uncompressed file names, shared by MNIST and Fashion-MNIST.
MNIST_FILES: tuple[str, ...] = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


def default_root() -> Path:
    """Data root used when neither ``root`` nor ``$PSGD_DATA`` is given:
    ``~/.cache/psgdlib/data``."""
    return Path.home() / ".cache" / "psgdlib" / "data"


def resolve_root(root: str | os.PathLike | None = None) -> Path:
    """``root`` if given, else ``$PSGD_DATA`` if set and non-empty, else :func:`default_root`."""
    if root is not None:
        return Path(root).expanduser()
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env).expanduser()
    return default_root()


def _dataset_name(dataset: str) -> str:
    key = dataset.lower().replace("-", "_")
    if key in ("fashionmnist", "fashion"):
        key = "fashion_mnist"
    if key not in DATASETS:
        raise ValueError(f"unknown dataset {dataset!r}: use one of {sorted(DATASETS)}")
    return DATASETS[key]


def raw_folder(root: str | os.PathLike | None = None, dataset: str = "mnist") -> Path:
    """``<root>/MNIST/raw`` (or ``<root>/FashionMNIST/raw``), root resolved as in
    :func:`resolve_root`."""
    return resolve_root(root) / _dataset_name(dataset) / "raw"


def read_idx(path: str | os.PathLike) -> Tensor:
    """Read an IDX file (``.gz`` or not) of unsigned bytes into a uint8 tensor.

    Format: 4-byte big-endian magic ``0x0000 08 nd`` (type 0x08 = uint8, ``nd`` dims), then
    ``nd`` big-endian uint32 sizes, then the data.
    """
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = _read(f, path)
    if len(data) < 4:
        raise ValueError(f"{path}: not an IDX file (too short)")
    zero, dtype_code, nd = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype_code != 0x08 or not 1 <= nd <= 3:
        raise ValueError(f"{path}: not an IDX file of unsigned bytes (magic {data[:4].hex()})")
    dims = struct.unpack(f">{nd}I", data[4 : 4 + 4 * nd])
    n = 1
    for s in dims:
        n *= s
    offset = 4 + 4 * nd
    if len(data) - offset != n:
        raise ValueError(f"{path}: expected {n} data bytes for shape {dims}, found {len(data) - offset}")
    return torch.frombuffer(bytearray(data[offset:]), dtype=torch.uint8).reshape(dims)


#: what reading a truncated or corrupt gzip stream raises
_CORRUPT_GZIP = (EOFError, gzip.BadGzipFile, zlib.error)


def _corrupt(path: Path, e: Exception) -> ValueError:
    return ValueError(f"{path}: truncated or corrupt gzip file ({type(e).__name__}: {e}); "
                      "delete it and copy or download it again")


def _read(f, path: Path) -> bytes:
    """``f.read()``; a truncated or corrupt gzip stream raises ValueError naming ``path``."""
    try:
        return f.read()
    except _CORRUPT_GZIP as e:
        raise _corrupt(path, e) from e


def _decompress(src: Path, dst: Path) -> bool:
    """Decompress ``src`` (``.gz``) into ``dst`` through a temporary file in the same folder.

    Returns False if the folder cannot be written. A truncated or corrupt ``src`` raises
    ValueError naming it. The temporary file is removed on every error.
    """
    tmp = dst.with_name(f"{dst.name}.tmp-{os.getpid()}")
    try:
        with gzip.open(src, "rb") as f, open(tmp, "wb") as out:
            shutil.copyfileobj(f, out)
        os.replace(tmp, dst)
    except _CORRUPT_GZIP as e:           # before OSError: BadGzipFile is one
        raise _corrupt(src, e) from e
    except OSError:                      # e.g. a read-only folder or a full disk
        return False
    finally:
        tmp.unlink(missing_ok=True)
    return True


def _missing_error(raw: Path, name: str, reason: str) -> FileNotFoundError:
    return FileNotFoundError(
        f"{name} data not found: {reason}. Expected the four files "
        f"{', '.join(f + '.gz' for f in MNIST_FILES)} (gzipped or uncompressed) in {raw} "
        f"(that is <root>/{name}/raw/). Put them there, pass root=... to load_mnist, or set "
        f"the environment variable {ENV_VAR} to a data root that contains {name}/raw/."
    )


def _prepare_raw(raw: Path) -> str:
    """Make the uncompressed files available. Returns ``"ok"`` (uncompressed files present,
    possibly after decompressing), ``"gz"`` (only ``.gz`` usable, folder not writable) or
    ``"missing"``."""
    missing = [f for f in MNIST_FILES if not (raw / f).is_file()]
    if not missing:
        return "ok"
    if not all((raw / (f + ".gz")).is_file() for f in missing):
        return "missing"
    for f in missing:
        if not _decompress(raw / (f + ".gz"), raw / f):  # read-only folder: read the .gz directly
            return "gz"
    return "ok"


def load_mnist(
    root: str | os.PathLike | None = None,
    train: bool = True,
    download: bool | None = None,
    dataset: str = "mnist",
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
    limit: int | None = None,
) -> tuple[Tensor, Tensor]:
    """Load MNIST or Fashion-MNIST as tensors.

    Args:
        root: data root (see the module docstring); default ``$PSGD_DATA``, then
            ``~/.cache/psgdlib/data``. The files go in ``<root>/MNIST/raw/``.
        train: the 60,000 training images if True, else the 10,000 test images.
        download: ``None`` (default): download with torchvision only if the files are
            missing; ``True``: let torchvision check / download (it skips the download of
            ``.gz`` files whose checksums match); ``False``: never download.
        dataset: ``"mnist"`` or ``"fashion_mnist"``.
        device, dtype: of the returned images.
        limit: if given, keep only the first ``limit`` images (smoke runs; see also
            :func:`subset`).
    Returns:
        ``(images, labels)``: images ``(N, 1, 28, 28)`` in ``[0, 1]`` (pixel / 255),
        labels ``(N,)`` int64.
    Raises:
        FileNotFoundError: data absent and download disabled.
        RuntimeError: data absent and the download failed (e.g. no internet access).
    """
    name = _dataset_name(dataset)
    data_root = resolve_root(root)
    raw = data_root / name / "raw"
    state = _prepare_raw(raw) if raw.is_dir() else "missing"

    if state == "gz":
        prefix = "train" if train else "t10k"
        images = read_idx(raw / f"{prefix}-images-idx3-ubyte.gz")
        labels = read_idx(raw / f"{prefix}-labels-idx1-ubyte.gz")
    else:
        if state == "missing" and download is False:
            raise _missing_error(raw, name, "download=False and the files are missing")
        try:
            from torchvision import datasets  # noqa: PLC0415 (optional dependency)
        except ImportError:
            datasets = None
        if datasets is None:
            if state == "missing":
                raise _missing_error(raw, name, "the files are missing and torchvision "
                                     "(needed to download them) is not installed")
            prefix = "train" if train else "t10k"
            images = read_idx(raw / f"{prefix}-images-idx3-ubyte")
            labels = read_idx(raw / f"{prefix}-labels-idx1-ubyte")
        else:
            cls = getattr(datasets, name)
            want_download = bool(download) or (download is None and state == "missing")
            try:
                ds = cls(str(data_root), train=train, download=want_download)
            except Exception as e:  # noqa: BLE001 (network errors come in many types)
                if want_download:
                    raise RuntimeError(
                        f"could not download {name} into {raw} ({type(e).__name__}: {e}). "
                        f"Without internet access, put the four official files "
                        f"({', '.join(f + '.gz' for f in MNIST_FILES)}) in {raw} "
                        f"(that is <root>/{name}/raw/), or point the environment variable "
                        f"{ENV_VAR} (or root=...) at a data root that has them."
                    ) from e
                raise RuntimeError(
                    f"torchvision could not read {name} from {raw} ({type(e).__name__}: {e}); "
                    f"the folder should hold the four files {', '.join(MNIST_FILES)} "
                    f"(or their .gz versions)."
                ) from e
            images, labels = ds.data, ds.targets

    if images.dim() != 3 or labels.dim() != 1 or images.shape[0] != labels.shape[0]:
        raise ValueError(
            f"{raw}: inconsistent files: images {tuple(images.shape)}, labels {tuple(labels.shape)}"
        )
    if limit is not None:
        images, labels = images[:limit], labels[:limit]
    images = images.to(device=device, dtype=dtype).div_(255.0).unsqueeze(1)
    labels = labels.to(device=device, dtype=torch.int64)
    return images, labels


def subset(
    images: Tensor,
    labels: Tensor,
    n: int,
    mode: str = "first",
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """A fixed subset of ``n`` examples, for smoke profiles.

    Modes:
        ``"first"``: the first ``n`` examples.
        ``"random"``: ``n`` examples drawn without replacement (``generator`` makes it
            reproducible), kept in their original order.
        ``"stratified"``: ``n // C`` examples of each of the ``C`` classes present (the
            first ``n % C`` classes get one more), taken from a random permutation if a
            ``generator`` is given, else the first ones of each class; kept in original
            order. A class with too few examples contributes all it has.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    total = labels.shape[0]
    n = min(n, total)
    if mode == "first":
        return images[:n], labels[:n]
    if mode == "random":
        idx = torch.randperm(total, generator=generator)[:n].sort().values
    elif mode == "stratified":
        lab = labels.cpu()
        order = torch.randperm(total, generator=generator) if generator is not None else torch.arange(total)
        classes = torch.unique(lab).tolist()
        per, extra = divmod(n, len(classes)) if classes else (0, 0)
        parts = []
        for c_i, c in enumerate(classes):
            members = order[lab[order] == c]
            parts.append(members[: per + (1 if c_i < extra else 0)])
        idx = torch.cat(parts).sort().values if parts else torch.zeros(0, dtype=torch.long)
    else:
        raise ValueError(f"unknown mode {mode!r}: use 'first', 'random' or 'stratified'")
    idx = idx.to(labels.device)
    return images[idx], labels[idx]


def batches(
    images: Tensor,
    labels: Tensor,
    batch_size: int,
    generator: torch.Generator | None = None,
    shuffle: bool = True,
    drop_last: bool = False,
) -> Iterator[tuple[Tensor, Tensor]]:
    """Iterate over one epoch of ``(images[idx], labels[idx])`` minibatches.

    With ``shuffle`` the order is a random permutation drawn on the CPU with ``generator``
    (reproducible); otherwise the original order. The last, smaller batch is yielded unless
    ``drop_last``.
    """
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    n = labels.shape[0]
    if images.shape[0] != n:
        raise ValueError(f"images ({images.shape[0]}) and labels ({n}) differ in length")
    if shuffle:
        order = torch.randperm(n, generator=generator).to(labels.device)
    else:
        order = None
    stop = n - n % batch_size if drop_last else n
    for start in range(0, stop, batch_size):
        if order is None:
            yield images[start : start + batch_size], labels[start : start + batch_size]
        else:
            idx = order[start : start + batch_size]
            yield images[idx], labels[idx]
