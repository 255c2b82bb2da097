"""Large GeoTIFF inputs read window by window, as their tiles are segmented, instead of whole.

A scene of tens of thousands of pixels a side, often several 16-bit bands, is
gigabytes once decoded; read whole, it has to fit in a worker's memory next to
its encoded bytes. GDAL reads any rectangle of a GeoTIFF (a tiled or
Cloud-Optimized one a block at a time), so such an image can travel through
the pipeline as a ``WindowedRaster``: an array-like that reads, on slicing,
just the window asked for, through rasterio, from the local file or over
Beam's FileSystems (``gs://`` included, as ranged reads), and applies the same
band and depth rules (``transforms.imaging.bands.conform``) as a whole read. Tiling
slices it (``transforms.tiles.TileImagesFn``), so at any time a worker
holds a batch of tiles and the uint8 mask, not the scene.

Only images whose rules are pixel by pixel are windowed: samples of 8 or 16
bits (wider integers and floats are scaled by the whole image's range) and
paletted scenes. The per-image numbers taken at decode time (the display
stretch, the out-of-distribution features) read the image once, in strips, on
the same strided sample as a whole read, so they are the same numbers.
"""

import threading
import warnings
from collections.abc import Callable
from typing import IO, Any, Optional, Tuple

import numpy as np

from model.text import one_line
from transforms.imaging import geo
from transforms.imaging.bands import DecodeError, NativeImage, conform, kind_of_colours
from transforms.imaging.input_spec import InputSpec
from transforms.staging import open_for_reading

# File names worth opening to see whether they are windowable GeoTIFFs.
WINDOWED_SUFFIXES = (".tif", ".tiff")
# Sample types whose band and depth rules need no whole-image statistics.
WINDOWED_DTYPES = ("uint8", "uint16")
# Bytes of native pixels read at once by a strided (subsampled) read of the whole image.
STRIP_BYTES = 16 << 20
# GCS read-ahead of a windowed read: a few COG blocks, not Beam's default 16 MiB per seek.
GCS_READ_BUFFER = 1 << 20
# GDAL's block cache while windows are read (its default, 5% of RAM, would keep every decoded block of
# the scene: the whole image again); enough for a row of tiles' blocks of most scenes.
WINDOW_CACHE_BYTES = 64 << 20
_GDAL_ENV = {"GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR"}  # no sidecar (.ovr, .aux.xml) probes per open


def _open_file(path: str, mode: str = "rb") -> IO[bytes]:
  """rasterio's opener for ``gs://`` datasets: a seekable file through Beam's GcsIO, fetching ranges."""
  return open_for_reading(path, GCS_READ_BUFFER)


def _open_dataset(uri: str) -> Any:
  import rasterio
  from rasterio.errors import NotGeoreferencedWarning

  with rasterio.Env(**_GDAL_ENV), warnings.catch_warnings():
    warnings.simplefilter("ignore", NotGeoreferencedWarning)  # a plain TIFF: read whole, as before
    if uri.startswith("gs://"):
      return rasterio.open(uri, opener=_open_file)
    return rasterio.open(uri)


def _bounds(index: slice, size: int) -> Tuple[int, int, int]:
  if not isinstance(index, slice):
    raise TypeError("a WindowedRaster is sliced with slices only")
  start, stop, step = index.indices(size)
  if step < 1:
    raise TypeError("a WindowedRaster is read with positive steps only")
  return start, max(start, stop), step


class WindowedRaster:
  """[H, W, spec.channels] pixels of spec.dtype, read from a GeoTIFF on slicing; pickles as its URI.

  ``image[top:bottom, left:right]`` reads that window (steps read strips and
  keep every step-th row); ``np.asarray(image)`` reads all of it. The dataset
  is opened on the first read and kept until ``close``, which its users call
  on the thread that read (a ``gs://`` file's handle belongs to that thread);
  a lock serialises reads from several threads.
  """

  ndim = 3

  def __init__(self, uri: str, height: int, width: int, spec: InputSpec) -> None:
    self.uri = uri
    self.height, self.width = int(height), int(width)
    self.spec = spec
    self._dataset: Any = None  # the open rasterio dataset, from the first read until close
    self._lock = threading.Lock()

  def __getstate__(self) -> dict[str, Any]:
    return {key: value for key, value in self.__dict__.items() if key not in ("_dataset", "_lock")}

  def __setstate__(self, state: dict[str, Any]) -> None:
    self.__dict__.update(state, _dataset=None, _lock=threading.Lock())

  def close(self) -> None:
    dataset, self._dataset = getattr(self, "_dataset", None), None
    if dataset is not None:
      dataset.close()

  @property
  def shape(self) -> Tuple[int, int, int]:
    return (self.height, self.width, self.spec.channels)

  @property
  def dtype(self) -> np.dtype:
    return self.spec.numpy_dtype

  @property
  def nbytes(self) -> int:
    return self.height * self.width * self.spec.channels * self.dtype.itemsize

  def __len__(self) -> int:
    return self.height

  def __array__(self, dtype: Any = None, copy: Optional[bool] = None) -> np.ndarray:
    pixels = self[:, :]
    return pixels if dtype is None else pixels.astype(dtype)

  def __getitem__(self, key: Any) -> np.ndarray:
    key = key if isinstance(key, tuple) else (key,)
    rows, cols, rest = (tuple(key) + (slice(None), slice(None)))[:2] + (key[2:],)
    native = self._read(_bounds(rows, self.height), _bounds(cols, self.width))
    pixels = conform(native, self.spec)
    return pixels[(slice(None), slice(None)) + rest] if rest else pixels

  def _read(self, rows: Tuple[int, int, int], cols: Tuple[int, int, int]) -> NativeImage:
    """The native pixels of rows x cols (start, stop, step): one window, or strips of it when strided."""
    from rasterio.windows import Window

    (top, bottom, row_step), (left, right, col_step) = rows, cols
    with self._lock:
      if self._dataset is None:
        self._dataset = _open_dataset(self.uri)
      dataset = self._dataset
      bands = dataset.count
      itemsize = np.dtype(dataset.dtypes[0]).itemsize
      strip = max(row_step, STRIP_BYTES // max(1, (right - left) * bands * itemsize) // row_step * row_step)
      parts = []
      for start in range(top, bottom, strip):
        window = Window(left, start, right - left, min(bottom, start + strip) - start)
        parts.append(_read_strided(dataset, window, row_step, col_step))
      if not parts:
        parts = [np.zeros((0, len(range(left, right, col_step)), bands), dataset.dtypes[0])]
      pixels = parts[0] if len(parts) == 1 else np.concatenate(parts, axis=0)
      pixels, colours = geo.band_colours(dataset, pixels)
    return NativeImage(pixels=pixels, kind=kind_of_colours(colours))


def _read_window(dataset: Any, window: Any = None, **read_kwargs: Any) -> np.ndarray:
  """[K, h, w] of one window (or, with ``out_shape``, the whole scene decimated), GDAL's block cache bounded.

  Data GDAL cannot decode fails as a whole read words it: a DecodeError with GDAL's reason.
  """
  import rasterio
  from rasterio.errors import RasterioError

  try:
    with rasterio.Env(GDAL_CACHEMAX=WINDOW_CACHE_BYTES):
      return dataset.read(window=window, **read_kwargs)
  except RasterioError as exc:
    cause = one_line(exc.__cause__ or exc, 200)
    rows = f" (rows {window.row_off}-{window.row_off + window.height})" if window is not None else ""
    raise DecodeError(f"image data is corrupt or truncated{rows}: {cause}") from None


def _read_strided(dataset: Any, window: Any, row_step: int, col_step: int) -> np.ndarray:
  """[h, w, K] of every row_step-th row and col_step-th column of a window (a copy: a view would keep the strip)."""
  part = np.moveaxis(_read_window(dataset, window), 0, -1)
  return part if row_step == col_step == 1 else part[::row_step, ::col_step].copy()


def _open_windowable(uri: str) -> Optional[Tuple[Any, geo.Georef]]:
  """(open dataset, Georef) of a georeferenced GeoTIFF whose bands all have 8 or 16 bits, else None (nothing open).

  A file GDAL cannot open is left to the whole read, which words its error.
  """
  if not geo.available():
    return None
  from rasterio.errors import RasterioError

  try:
    dataset = _open_dataset(uri)
  except (RasterioError, OSError, ValueError):
    return None
  georef = geo.georef_of(dataset)
  dtypes = set(dataset.dtypes)
  if georef is None or len(dtypes) != 1 or dtypes - set(WINDOWED_DTYPES):
    dataset.close()
    return None
  return dataset, georef


def open_windowed(
  uri: str, spec: InputSpec, check_size: Callable[[int, int], object], min_bytes: int
) -> Optional[Tuple[WindowedRaster, geo.Georef]]:
  """(WindowedRaster, Georef) for a GeoTIFF worth reading by windows, else None (read it whole).

  Worth it: georeferenced, all bands of 8 or 16 bits, and more than
  ``min_bytes`` once conformed to ``spec``. ``check_size(width, height)``
  runs on the header (``--max_image_pixels``), and the band rule on one
  pixel, so a refused image fails at decode, as a whole read would.
  """
  opened = _open_windowable(uri) if min_bytes else None
  if opened is None:
    return None
  from rasterio.windows import Window

  dataset, georef = opened
  with dataset:
    if dataset.width * dataset.height * spec.channels * spec.numpy_dtype.itemsize <= min_bytes:
      return None
    check_size(dataset.width, dataset.height)
    corner = np.moveaxis(_read_window(dataset, Window(0, 0, 1, 1)), 0, -1)
    pixels, colours = geo.band_colours(dataset, corner)
    conform(NativeImage(pixels=pixels, kind=kind_of_colours(colours)), spec)
    return WindowedRaster(uri, dataset.height, dataset.width, spec), georef


def overview(uri: str, spec: InputSpec, longest: int) -> Optional[np.ndarray]:
  """[h, w, spec.channels] of a GeoTIFF decimated so its long side is at most ``longest``; None when not windowable.

  For thumbnails (the report's gallery): GDAL reads the scene block by block
  (or its overviews, when it has them) into the small array, so a scene of
  any size costs about the thumbnail, where a whole decode costs the scene a
  few times over. Nearest-neighbour sampling, then the same band and depth rules.
  """
  opened = _open_windowable(uri)
  if opened is None:
    return None
  from rasterio.enums import Resampling

  dataset, _ = opened
  with dataset:
    scale = max(1, -(-max(dataset.height, dataset.width) // max(1, longest)))
    shape = (dataset.count, -(-dataset.height // scale), -(-dataset.width // scale))
    native = _read_window(dataset, out_shape=shape, resampling=Resampling.nearest)
    pixels, colours = geo.band_colours(dataset, np.moveaxis(native, 0, -1))
  return conform(NativeImage(pixels=pixels, kind=kind_of_colours(colours)), spec)
