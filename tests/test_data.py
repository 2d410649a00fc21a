"""Tests of psgdlib.data on small synthetic IDX files (no real data needed)."""

from __future__ import annotations

import gzip
import os
import struct
from pathlib import Path

import pytest
import torch

from psgdlib import data as D

torch.set_num_threads(1)

N_TRAIN, N_TEST = 20, 12
# read before the autouse fixture below clears it for the synthetic-data tests
_REAL_DATA_ENV = os.environ.get("PSGD_DATA")


def _idx_bytes(arr: torch.Tensor) -> bytes:
    """IDX encoding of a uint8 tensor: magic 0x0000_08_nd, big-endian dims, data."""
    assert arr.dtype == torch.uint8
    header = struct.pack(">HBB", 0, 0x08, arr.dim()) + struct.pack(f">{arr.dim()}I", *arr.shape)
    return header + arr.contiguous().numpy().tobytes()


def _make_split(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 28, 28), generator=g, dtype=torch.uint8)
    labels = torch.randint(0, 10, (n,), generator=g, dtype=torch.uint8)
    return images, labels


def _write_raw(root: Path, folder: str = "MNIST", gz: bool = False, plain: bool = True):
    """Write the four files (plain and/or .gz) under root/folder/raw; return the tensors."""
    raw = root / folder / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    tr_x, tr_y = _make_split(N_TRAIN, 1)
    te_x, te_y = _make_split(N_TEST, 2)
    contents = {
        "train-images-idx3-ubyte": _idx_bytes(tr_x),
        "train-labels-idx1-ubyte": _idx_bytes(tr_y),
        "t10k-images-idx3-ubyte": _idx_bytes(te_x),
        "t10k-labels-idx1-ubyte": _idx_bytes(te_y),
    }
    for name, blob in contents.items():
        if plain:
            (raw / name).write_bytes(blob)
        if gz:
            with gzip.open(raw / (name + ".gz"), "wb") as f:
                f.write(blob)
    return {"train": (tr_x, tr_y), "test": (te_x, te_y)}


def _check(images, labels, expected, dtype=torch.float32):
    ex_x, ex_y = expected
    assert images.shape == (ex_x.shape[0], 1, 28, 28)
    assert images.dtype == dtype
    assert labels.dtype == torch.int64 and labels.shape == (ex_x.shape[0],)
    torch.testing.assert_close(images[:, 0], ex_x.to(dtype) / 255, rtol=0, atol=0)
    assert torch.equal(labels, ex_y.long())


@pytest.fixture(autouse=True)
def _no_env(monkeypatch):
    monkeypatch.delenv(D.ENV_VAR, raising=False)


def test_uncompressed_via_root(tmp_path):
    exp = _write_raw(tmp_path)
    _check(*D.load_mnist(tmp_path, train=True, download=False), exp["train"])
    _check(*D.load_mnist(str(tmp_path), train=False, download=False), exp["test"])
    x, _ = D.load_mnist(tmp_path, train=False, download=False, dtype=torch.float64)
    assert x.dtype == torch.float64 and 0 <= x.min() and x.max() <= 1


def test_default_download_none_uses_present_files(tmp_path):
    exp = _write_raw(tmp_path)  # present files: download=None must not try the network
    _check(*D.load_mnist(tmp_path, train=False), exp["test"])


def test_env_var_root(tmp_path, monkeypatch):
    exp = _write_raw(tmp_path)
    monkeypatch.setenv("PSGD_DATA", str(tmp_path))
    assert D.resolve_root() == tmp_path
    assert D.raw_folder() == tmp_path / "MNIST" / "raw"
    _check(*D.load_mnist(train=True, download=False), exp["train"])
    # an explicit root wins over the environment variable
    monkeypatch.setenv("PSGD_DATA", str(tmp_path / "elsewhere"))
    _check(*D.load_mnist(root=tmp_path, train=False, download=False), exp["test"])


def test_default_root_without_env(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    assert D.resolve_root() == D.default_root()
    assert "psgdlib" in str(D.default_root())


def test_gz_only_is_decompressed(tmp_path):
    exp = _write_raw(tmp_path, gz=True, plain=False)
    raw = tmp_path / "MNIST" / "raw"
    assert not (raw / "train-images-idx3-ubyte").exists()
    _check(*D.load_mnist(tmp_path, train=True, download=False), exp["train"])
    _check(*D.load_mnist(tmp_path, train=False, download=False), exp["test"])
    for name in D.MNIST_FILES:  # decompressed next to the .gz files, no temp files left
        assert (raw / name).is_file() and (raw / (name + ".gz")).is_file()
    assert sorted(p.name for p in raw.iterdir()) == sorted(
        [*D.MNIST_FILES, *(n + ".gz" for n in D.MNIST_FILES)]
    )


def test_gz_only_read_only_folder_reads_gz_directly(tmp_path, monkeypatch):
    exp = _write_raw(tmp_path, gz=True, plain=False)

    def deny(*args, **kwargs):
        raise PermissionError("read-only file system")

    monkeypatch.setattr(D.shutil, "copyfileobj", deny)
    _check(*D.load_mnist(tmp_path, train=False, download=False), exp["test"])
    raw = tmp_path / "MNIST" / "raw"
    assert sorted(p.name for p in raw.iterdir()) == sorted(n + ".gz" for n in D.MNIST_FILES)


def test_fashion_mnist_folder(tmp_path):
    exp = _write_raw(tmp_path, folder="FashionMNIST")
    _check(*D.load_mnist(tmp_path, train=False, download=False, dataset="fashion_mnist"), exp["test"])
    with pytest.raises(FileNotFoundError, match="MNIST"):
        D.load_mnist(tmp_path, download=False, dataset="mnist")
    with pytest.raises(ValueError, match="unknown dataset"):
        D.load_mnist(tmp_path, dataset="cifar")


def test_missing_data_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("PSGD_DATA", str(tmp_path / "nothing"))
    with pytest.raises(FileNotFoundError, match=r"MNIST/raw.*PSGD_DATA") as info:
        D.load_mnist(download=False)
    msg = str(info.value)
    assert str(tmp_path / "nothing" / "MNIST" / "raw") in msg
    assert "train-images-idx3-ubyte.gz" in msg


def test_partial_files_clear_error(tmp_path):
    _write_raw(tmp_path)
    os.remove(tmp_path / "MNIST" / "raw" / "t10k-labels-idx1-ubyte")
    with pytest.raises(FileNotFoundError, match="PSGD_DATA"):
        D.load_mnist(tmp_path, download=False)


def test_failed_download_clear_error(tmp_path, monkeypatch):
    tv = pytest.importorskip("torchvision")
    # an unreachable local mirror: fails at once, without touching the internet
    monkeypatch.setattr(tv.datasets.MNIST, "mirrors", ["http://127.0.0.1:9/"])
    with pytest.raises(RuntimeError, match=r"(?s)could not download MNIST.*PSGD_DATA"):
        D.load_mnist(tmp_path, download=None)


def test_limit_and_device(tmp_path):
    exp = _write_raw(tmp_path)
    x, y = D.load_mnist(tmp_path, download=False, limit=7, device="cpu")
    ex_x, ex_y = exp["train"]
    _check(x, y, (ex_x[:7], ex_y[:7]))


def test_read_idx_roundtrip_and_errors(tmp_path):
    arr = torch.randint(0, 256, (3, 5, 4), dtype=torch.uint8)
    (tmp_path / "a").write_bytes(_idx_bytes(arr))
    assert torch.equal(D.read_idx(tmp_path / "a"), arr)
    with gzip.open(tmp_path / "a.gz", "wb") as f:
        f.write(_idx_bytes(arr))
    assert torch.equal(D.read_idx(tmp_path / "a.gz"), arr)
    (tmp_path / "bad").write_bytes(b"\x00\x00\x0d\x01" + b"\x00" * 12)
    with pytest.raises(ValueError, match="IDX"):
        D.read_idx(tmp_path / "bad")
    (tmp_path / "short").write_bytes(_idx_bytes(arr)[:-1])
    with pytest.raises(ValueError, match="data bytes"):
        D.read_idx(tmp_path / "short")


# ---------------------------------------------------------------------------------------
def _toy(n=53):
    x = torch.arange(n, dtype=torch.float32).reshape(n, 1, 1, 1).expand(n, 1, 28, 28)
    y = torch.arange(n) % 10
    return x, y


def test_batches_cover_epoch_and_reproducible():
    x, y = _toy()
    bs = list(D.batches(x, y, 10, generator=torch.Generator().manual_seed(0)))
    assert [len(b[1]) for b in bs] == [10, 10, 10, 10, 10, 3]
    ids = torch.cat([b[0][:, 0, 0, 0] for b in bs]).long()
    assert sorted(ids.tolist()) == list(range(53))
    assert not torch.equal(ids, torch.arange(53))  # shuffled
    for bx, by in bs:  # image and label stay paired
        assert torch.equal(bx[:, 0, 0, 0].long() % 10, by)
    again = list(D.batches(x, y, 10, generator=torch.Generator().manual_seed(0)))
    assert all(torch.equal(a[1], b[1]) for a, b in zip(bs, again))
    plain = list(D.batches(x, y, 10, shuffle=False, drop_last=True))
    assert len(plain) == 5 and torch.equal(plain[0][1], y[:10])
    with pytest.raises(ValueError):
        next(D.batches(x, y, 0))


def test_subset_modes():
    x, y = _toy(100)
    sx, sy = D.subset(x, y, 15)
    assert torch.equal(sy, y[:15])
    g = torch.Generator().manual_seed(3)
    rx, ry = D.subset(x, y, 15, mode="random", generator=g)
    ids = rx[:, 0, 0, 0].long()
    assert len(set(ids.tolist())) == 15 and torch.equal(ids, ids.sort().values)
    tx, ty = D.subset(x, y, 25, mode="stratified")
    assert torch.bincount(ty, minlength=10).tolist() == [3] * 5 + [2] * 5
    tx2, ty2 = D.subset(x, y, 25, mode="stratified", generator=torch.Generator().manual_seed(1))
    assert torch.bincount(ty2, minlength=10).tolist() == [3] * 5 + [2] * 5
    assert torch.equal(tx2[:, 0, 0, 0].long() % 10, ty2)
    with pytest.raises(ValueError):
        D.subset(x, y, 5, mode="nope")


# ---------------------------------------------------------------------------------------
def _real_root() -> Path | None:
    env = _REAL_DATA_ENV
    if not env:
        return None
    raw = Path(env) / "MNIST" / "raw"
    ok = all((raw / n).is_file() or (raw / (n + ".gz")).is_file() for n in D.MNIST_FILES)
    return Path(env) if ok else None


def test_real_mnist_if_configured(monkeypatch):
    """Optional: uses the real MNIST when $PSGD_DATA points at a root that holds it."""
    root = _real_root()
    if root is None:
        pytest.skip("PSGD_DATA is not set to a data root with MNIST/raw/")
    monkeypatch.setenv("PSGD_DATA", str(root))
    x, y = D.load_mnist(train=False, download=False)
    assert x.shape == (10000, 1, 28, 28) and y.shape == (10000,)
    assert y[:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]
    assert float(x.min()) == 0.0 and float(x.max()) == 1.0
    assert torch.bincount(y, minlength=10).sum() == 10000
