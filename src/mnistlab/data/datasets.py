"""Datasets of 28x28 grayscale digits: a validating IDX reader, the dataset registry, checksum-verified
downloads into a cache, and fast in-memory batching.

Images stay ``uint8`` tensors of shape (N, 28, 28) in memory; a batch is indexed and converted to
float in one vectorised call (``to_float``), so no per-item Python runs in the training loop.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import math
import os
import stat
import urllib.error
import urllib.request
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from mnistlab.core.errors import check, check_float, check_int, check_seed
from mnistlab.core.fsio import atomic_write_bytes

IDX_UBYTE = 0x08
SPLIT_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


@dataclass(frozen=True)
class DataConfig:
    """Which images to train on and how to split them."""

    dataset: str = "mnist"  # a name from DATASETS; ignored when data_dir is set
    data_dir: str = ""  # a folder with the four IDX files (gzip or raw); "" = embedded / cache
    val_fraction: float = 0.2  # share of the training set held out for validation
    split_seed: int = 0
    train_limit: int = 0  # use only the first N training images (0 = all); for quick runs
    test_limit: int = 0  # likewise for the test set

    def __post_init__(self):
        check(isinstance(self.dataset, str), f"data.dataset must be a name, got {self.dataset!r}")
        # A NUL byte makes every file call raise ValueError ("embedded null byte") instead of OSError.
        ok = isinstance(self.data_dir, str) and "\0" not in self.data_dir
        check(ok, f"data.data_dir must be a folder path, got {self.data_dir!r}")
        check_float(self.val_fraction, "data.val_fraction", 0, 1, high_open=True)
        check_seed(self.split_seed, "data.split_seed")
        check_int(self.train_limit, "data.train_limit", 0, 2**31 - 1, "0 = all")
        check_int(self.test_limit, "data.test_limit", 0, 2**31 - 1, "0 = all")


@dataclass(frozen=True)
class RemoteDataset:
    """A dataset that can be fetched: base URL plus one checksum per file.

    A checksum reads "sha256:<hex>" (of the decompressed IDX bytes, so gzip and raw copies verify
    alike) or "md5:<hex>" (of the published .gz file, as the dataset's authors list it).
    """

    base_url: str
    checksums: dict[str, str]  # file stem (e.g. "train-images-idx3-ubyte") -> checksum


MNIST_SHA256 = {
    "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}

DATASETS: dict[str, RemoteDataset] = {
    "mnist": RemoteDataset(
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        {stem: "sha256:" + digest for stem, digest in MNIST_SHA256.items()},
    ),
    "fashion-mnist": RemoteDataset(
        "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
        {
            "train-images-idx3-ubyte": "md5:8d4fb7e6c68d591d4c3dfef9ec88bf0d",
            "train-labels-idx1-ubyte": "md5:25c81989df183df01b3e8a0aad5dffbe",
            "t10k-images-idx3-ubyte": "md5:bef4ecab320f06d8554ea6380940ec79",
            "t10k-labels-idx1-ubyte": "md5:bb300cfdad3c16e7a12a480ee83cd310",
        },
    ),
    "kmnist": RemoteDataset(
        "http://codh.rois.ac.jp/kmnist/dataset/kmnist/",
        {
            "train-images-idx3-ubyte": "md5:bdb82020997e1d708af4cf47b453dcf7",
            "train-labels-idx1-ubyte": "md5:e144d726b3acfaa3e44228e80efcd344",
            "t10k-images-idx3-ubyte": "md5:5c965bf0a639b31b8f53240b1b52f4d7",
            "t10k-labels-idx1-ubyte": "md5:7320c461ea6c1c855c0b718fb2a4b134",
        },
    ),
}


class DataError(ValueError):
    """A dataset is missing, malformed or fails its checksum; the message says which file and why."""


# --------------------------------------------------------------------------------------------- IDX


# The largest IDX file read (decompressed): 2^31 bytes, 2.7 million 28x28 images, some 45 x MNIST's
# training set. A header asking for more is refused before anything is allocated or decompressed.
MAX_IDX_BYTES = 1 << 31
# Deflate compresses at most about 1032:1; a gzip file whose header asks for more bytes than that
# ratio allows of its size cannot hold them, so it is refused as truncated before allocating.
MAX_GZIP_RATIO = 1100
_CHUNK = 1 << 20


def _gzip_stream(payload: bytes, name: str) -> gzip.GzipFile:
    return gzip.GzipFile(fileobj=io.BytesIO(payload), mode="rb")


def _read_exactly(stream, n: int, name: str) -> bytes:
    """Up to `n` bytes of a (gzip) stream, read in chunks so that a stream shorter than `n` never
    costs more than it holds; gzip errors are DataErrors naming the file."""
    parts, got = [], 0
    try:
        while got < n:
            part = stream.read(min(_CHUNK, n - got))
            if not part:
                break
            parts.append(part)
            got += len(part)
    except EOFError as e:
        raise DataError(f"{name}: truncated gzip stream ({e})") from e
    except (gzip.BadGzipFile, zlib.error, OSError) as e:
        raise DataError(f"{name}: corrupt gzip data ({e})") from e
    return b"".join(parts)


def _decompress(payload: bytes, name: str, limit: int = MAX_IDX_BYTES) -> bytes:
    """Return IDX bytes, decompressing gzip (detected by its magic, not its name), at most `limit`
    bytes of them: a gzip bomb is refused after `limit` + 1 bytes, not after all of them."""
    if payload[:2] != b"\x1f\x8b":
        return payload
    data = _read_exactly(_gzip_stream(payload, name), limit + 1, name)
    if len(data) > limit:
        raise DataError(
            f"{name}: decompresses to more than {limit:,} bytes; no IDX file of digits is so large"
        )
    return data


def read_idx(path: Path, ndim: int, checksum: str | None = None) -> np.ndarray:
    """Read the IDX file at `path` (raw or gzip) with `ndim` dimensions, verifying `checksum` if given.

    The header is read first and its dimensions bound what follows: a raw file must be exactly as long
    as they say (checked on its size before reading it), a gzip stream is decompressed in chunks up
    to that length plus one byte (a stream that runs on is refused as trailing bytes, whatever it would
    decompress to), so memory never exceeds the size the header states, itself bounded by MAX_IDX_BYTES
    and, for gzip, by what the compressed file could hold."""
    name = str(path)
    try:
        with open(path, "rb") as f:
            info = os.fstat(f.fileno())
            if not stat.S_ISREG(info.st_mode):
                raise DataError(f"{name}: not a regular file")
            compressed = f.read(2) == b"\x1f\x8b"
            f.seek(0)
            if compressed or checksum:
                if info.st_size > MAX_IDX_BYTES:
                    raise DataError(f"{name}: {info.st_size:,} bytes; no IDX file of digits is so large")
                payload = f.read()
            else:
                payload = None
                head = f.read(4 + 4 * ndim)
                dims = _idx_dims(head, ndim, name, body=info.st_size - len(head))
                body = f.read(math.prod(dims))
    except OSError as e:
        raise DataError(f"{name}: cannot read ({e.strerror or e})") from e
    if payload is None:  # a raw file, its size checked against its header before its body was read
        data = head + body
    elif compressed:
        stream = _gzip_stream(payload, name)
        head = _read_exactly(stream, 4 + 4 * ndim, name)
        dims = _idx_dims(head, ndim, name, body=None, compressed_size=len(payload))
        rest = _read_exactly(stream, math.prod(dims) + 1, name)  # one byte more shows a stream running on
        if len(rest) > math.prod(dims):
            raise DataError(
                f"{name}: trailing bytes after {dims} of data (the stream runs on past its header)"
            )
        data = head + rest
    else:
        data = payload
    if checksum:
        _verify(payload, data, checksum, name)
    return parse_idx(data, ndim, name)


def _idx_dims(
    head: bytes, ndim: int, name: str, body: int | None, compressed_size: int | None = None
) -> tuple[int, ...]:
    """The dimensions of an IDX header, checked: magic, type, rank, and what they need against the
    body's length when it is known (`body`), MAX_IDX_BYTES, and what a gzip file of `compressed_size`
    bytes could hold."""
    dims = _header(head, ndim, name)
    need = math.prod(dims)
    if need > MAX_IDX_BYTES:
        raise DataError(f"{name}: dimensions {dims} need {need} bytes, more than any IDX file of digits")
    if body is not None and body != need:
        _size_error(name, dims, need, body)
    if compressed_size is not None and need > MAX_GZIP_RATIO * compressed_size + (1 << 16):
        raise DataError(
            f"{name}: data truncated: dimensions {dims} need {need} bytes, more than "
            f"{compressed_size} compressed bytes can hold"
        )
    return dims


def _size_error(name: str, dims: tuple[int, ...], need: int, body: int) -> None:
    if body < need:
        raise DataError(f"{name}: data truncated: dimensions {dims} need {need} bytes, got {body}")
    raise DataError(f"{name}: {body - need} trailing bytes after {dims} of data")


def _verify(payload: bytes, data: bytes, checksum: str, name: str) -> None:
    """Check a file against "sha256:<hex>" (of the IDX bytes) or "md5:<hex>" (of the file as stored)."""
    algo, _, expected = checksum.partition(":")
    if algo == "sha256":
        got = hashlib.sha256(data).hexdigest()
    elif algo == "md5":
        got = hashlib.md5(payload, usedforsecurity=False).hexdigest()
    else:
        raise DataError(f"{name}: unknown checksum kind {algo!r}")
    if got != expected:
        raise DataError(f"{name}: {algo} {got} does not match the expected {expected}")


def _header(data: bytes, ndim: int, name: str) -> tuple[int, ...]:
    """The dimensions in the header at the start of `data`: magic, element type and rank checked."""
    if len(data) < 4:
        raise DataError(f"{name}: too short for an IDX header ({len(data)} bytes)")
    if data[0] != 0 or data[1] != 0:
        raise DataError(f"{name}: bad magic number {data[:4].hex()} (not an IDX file)")
    if data[2] != IDX_UBYTE:
        raise DataError(f"{name}: element type 0x{data[2]:02x} unsupported (expected 0x08, ubyte)")
    if data[3] != ndim:
        raise DataError(f"{name}: {data[3]} dimensions, expected {ndim}")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{name}: header truncated ({len(data)} of {header} bytes)")
    return tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))


def parse_idx(data: bytes, ndim: int, name: str) -> np.ndarray:
    """Parse IDX bytes holding unsigned bytes with `ndim` dimensions; raise DataError naming `name`."""
    dims = _header(data, ndim, name)
    # Python integers: numpy's int64 product wraps for headers such as 2^22 x 2^22 x 2^20, which then
    # passed the size checks below and failed in reshape (or reported a wrong byte count).
    expected = math.prod(dims)
    body = len(data) - (4 + 4 * ndim)
    if body != expected:
        _size_error(name, dims, expected, body)
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def _find(folder: Path, stem: str) -> Path:
    """The file for `stem` in `folder`: raw or .gz, with the common '-idx' or '.idx' spellings."""
    alt = stem.replace("-idx", ".idx")
    for name in (stem, stem + ".gz", alt, alt + ".gz"):
        if (folder / name).is_file():
            return folder / name
    raise DataError(f"{folder}: no {stem}[.gz] found (a dataset folder holds the four IDX files)")


@dataclass(frozen=True)
class Split:
    """One split held in memory: images (N, 28, 28) uint8 and labels (N,) int64."""

    images: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return len(self.labels)

    def take(self, index: torch.Tensor | slice) -> Split:
        return Split(self.images[index], self.labels[index])


def read_split(folder: Path, split: str, checksums: dict[str, str] | None = None) -> Split:
    """Read and validate one split ("train" or "test") from `folder`, verifying checksums if given."""
    img_stem, lbl_stem = SPLIT_FILES[split]
    arrays = []
    for stem, ndim in ((img_stem, 3), (lbl_stem, 1)):
        path = _find(folder, stem)
        arrays.append(read_idx(path, ndim, (checksums or {}).get(stem)))
    images, labels = arrays
    if images.shape[1:] != (28, 28):
        raise DataError(f"{folder}: {split} images are {images.shape[1:]}, expected 28x28")
    if len(images) != len(labels):
        raise DataError(f"{folder}: {len(images)} {split} images but {len(labels)} labels")
    if len(labels) and labels.max() > 9:
        raise DataError(f"{folder}: {split} labels must be 0-9, found {int(labels.max())}")
    return Split(torch.from_numpy(images.copy()), torch.from_numpy(labels.astype(np.int64)))


# ------------------------------------------------------------------------------ locating datasets


def embedded_dir() -> Path:
    """The MNIST shipped with mnistlab: inside the wheel, or `data/mnist` of a source checkout."""
    packaged = Path(__file__).parents[1] / "_data" / "mnist"
    return packaged if packaged.is_dir() else Path(__file__).resolve().parents[3] / "data" / "mnist"


def cache_dir() -> Path:
    return Path(os.environ.get("MNISTLAB_CACHE", Path.home() / ".cache" / "mnistlab"))


def download(
    name: str,
    dest: Path | None = None,
    registry: dict[str, RemoteDataset] | None = None,
    timeout: float = 30.0,
) -> Path:
    """Fetch dataset `name` into `dest` (default: the cache), verifying every file before it lands.

    A file whose checksum or gzip stream fails is refused and nothing is written for it; files
    already present and valid are not fetched again.
    """
    registry = DATASETS if registry is None else registry
    if name not in registry:
        raise DataError(f"unknown dataset {name!r}; known: {', '.join(sorted(registry))}")
    spec = registry[name]
    dest = (cache_dir() / name) if dest is None else dest
    for stem, checksum in spec.checksums.items():
        target = dest / (stem + ".gz")
        if target.is_file():
            try:
                payload = target.read_bytes()
                _verify(payload, _decompress(payload, str(target)), checksum, str(target))
                continue
            except DataError:
                pass  # a stale or damaged copy: fetch it again
        url = spec.base_url + stem + ".gz"
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response:
                payload = response.read()
        except (urllib.error.URLError, OSError) as e:
            raise DataError(
                f"could not download {url} ({e}). When offline, put the four IDX files in a folder "
                f"and pass --data-dir DIR."
            ) from e
        try:
            _verify(payload, _decompress(payload, url), checksum, url)
        except DataError as e:
            raise DataError(f"{e}; download refused, nothing written") from e
        atomic_write_bytes(target, payload)
    return dest


def resolve_dir(cfg: DataConfig) -> tuple[Path, dict[str, str] | None]:
    """The folder to read and the checksums to verify it against (None for user folders)."""
    if cfg.data_dir:
        folder = Path(cfg.data_dir).expanduser()
        if not folder.is_dir():
            raise DataError(f"--data-dir {folder}: no such folder")
        return folder, None
    if cfg.dataset not in DATASETS:
        raise DataError(f"unknown dataset {cfg.dataset!r}; known: {', '.join(sorted(DATASETS))}")
    sums = DATASETS[cfg.dataset].checksums
    if cfg.dataset == "mnist" and embedded_dir().is_dir():
        return embedded_dir(), sums
    cached = cache_dir() / cfg.dataset
    if not cached.is_dir():
        raise DataError(
            f"dataset {cfg.dataset!r} is not in the cache ({cached}). Run "
            f"`mnistlab data download {cfg.dataset}` when online, or pass --data-dir DIR."
        )
    return cached, sums


# ---------------------------------------------------------------------------------- in memory


@dataclass(frozen=True)
class Data:
    """Train / validation / test splits in memory, plus where they came from."""

    train: Split
    val: Split
    test: Split
    source: str


def load(cfg: DataConfig) -> Data:
    """Read, verify and split a dataset as `cfg` says. The split is seeded and independent of torch's
    global RNG, so the same config always holds out the same images."""
    folder, sums = resolve_dir(cfg)
    full = read_split(folder, "train", sums)
    test = load_test(cfg)
    if cfg.train_limit:
        full = full.take(slice(0, cfg.train_limit))
    order = torch.randperm(len(full), generator=torch.Generator().manual_seed(cfg.split_seed))
    n_val = int(round(cfg.val_fraction * len(full)))
    _check_not_empty(folder, cfg, len(full), n_val)
    return Data(full.take(order[n_val:]), full.take(order[:n_val]), test, str(folder))


def load_test(cfg: DataConfig) -> Split:
    """The test split alone, read and verified, as `load(cfg).test` holds it (for readers that need
    no training images, such as the explorer starting from its cache)."""
    folder, sums = resolve_dir(cfg)
    test = read_split(folder, "test", sums)
    if len(test) == 0:  # every command ends on test metrics and figures: refused here, in one line
        raise DataError(f"{folder}: the test split ({SPLIT_FILES['test'][0]}) holds no images; add some")
    return test.take(slice(0, cfg.test_limit)) if cfg.test_limit else test


def _check_not_empty(folder: Path, cfg: DataConfig, n_full: int, n_val: int) -> None:
    """Refuse a training split of 0 images: the loop would run no step and call the run finished."""
    if n_full - n_val > 0:
        return
    limit = f", data.train_limit={cfg.train_limit}" if cfg.train_limit else ""
    raise DataError(
        f"{folder}: no training images left ({n_full} in the train split{limit}, "
        f"{n_val} held out by data.val_fraction={cfg.val_fraction}); nothing to train on"
    )


def to_float(images: torch.Tensor, device: torch.device | str = "cpu") -> torch.Tensor:
    """uint8 (B, 28, 28) -> float32 (B, 1, 28, 28) in [0, 1] on `device`."""
    return images.to(device, non_blocking=True).unsqueeze(1).float().div_(255.0)


def batches(n: int, batch_size: int, generator: torch.Generator | None = None):
    """Yield index tensors covering range(n): shuffled when a generator is given, else in order.
    The last batch may be short."""
    order = torch.randperm(n, generator=generator) if generator is not None else torch.arange(n)
    yield from order.split(batch_size)


def add_noise(
    x: torch.Tensor, sigma: float, clip: bool, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Gaussian noise N(0, sigma^2) added to images in [0, 1]; clipped back to [0, 1] if `clip`."""
    noisy = x + sigma * torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    return noisy.clamp_(0.0, 1.0) if clip else noisy
