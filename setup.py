"""deconvseg: batch image segmentation with a deconvolution network on Apache Beam.

One distribution for the launcher, the Dataflow workers (``--setup_file``) and
CI. Exact versions live in ``requirements.lock``; the ranges here only say
what the code is written against, so that ``pip install -c requirements.lock``
decides.
"""

import setuptools

REQUIRED = [
  "apache-beam[gcp]>=2.77,<2.78",
  "tensorflow-cpu>=2.21,<2.22",
  "numpy>=1.26",
  "pillow>=10",
  # Multi-band and 16-bit TIFF (Pillow reads at most 4 bands of 8 bits).
  "tifffile>=2024.8",
  "google-cloud-storage>=2.18",
  # The run report's HTML templates (pipeline/report/templates), autoescaped.
  "jinja2>=3.1",
  # The CPU inference engine (model/engines): bf16 on AMX / AVX-512 BF16, int8 IRs, no TensorFlow import.
  "openvino>=2026.4,<2026.5",
  # 16-bit colour PNG inputs (Pillow reads them as 8 bits).
  "pypng>=0.20220715",
  # python -m model.wrap --onnx: reads the user's ONNX model and writes the served graph (the pipeline runs its IR).
  "onnx>=1.23",
]

EXTRAS = {
  # Dataset generation uses scikit-image's bundled public-domain textures;
  # python -m model.ablation draws its figures with matplotlib.
  "train": ["scikit-image>=0.24", "matplotlib>=3.9"],
  # python -m bench: ONNX Runtime as a measured alternative CPU engine (the SavedModel through tf2onnx).
  "bench": ["onnxruntime>=1.32", "onnx>=1.23", "tf2onnx>=1.17"],
  # python -m model.quantize: post-training int8 quantisation of the OpenVINO IR.
  "quantize": ["nncf>=3.4,<3.5"],
  "test": [
    "pytest>=8",
    "pytest-timeout>=2.3",
    # ./run_tests.sh spreads test files over the cores (the suite is mostly single-threaded).
    "pytest-xdist>=3.6",
    "gcp-storage-emulator>=2024.8",
    "scikit-image>=0.24",
    "matplotlib>=3.9",
    "dask[distributed]>=2024.4.2",
    "rasterio>=1.4",
    "pyproj>=3.6",
    "shapely>=2.1",
    # The test command's style and layering checks (run_tests.sh).
    "ruff>=0.17",
    "import-linter>=2.16",
    # The type checker of model/, transforms/ and pipeline/ (mypy.ini).
    "mypy>=2.4",
    "nncf>=3.4,<3.5",
    # tests/test_bench.py runs the quick bench, whose engine rows include ONNX Runtime.
    "onnxruntime>=1.32",
    "onnx>=1.23",
    "tf2onnx>=1.17",
  ],
  # GeoTIFF inputs with their CRS, GeoTIFF masks, areas in m^2, --polygons (transforms/imaging/geo.py).
  # About 48 MB of wheels (150 MB installed; rasterio bundles GDAL and PROJ), so optional.
  "geo": ["rasterio>=1.4", "pyproj>=3.6", "shapely>=2.1"],
  # Run on a Dask cluster (--runner=DaskRunner): Beam's dask extra.
  "dask": ["dask[distributed]>=2024.4.2"],
  # GPU workers: the CUDA build of the same TensorFlow release (see deploy/).
  "gpu": ["tensorflow[and-cuda]>=2.21,<2.22"],
  # Models wrapped from ONNX on NVIDIA GPUs (--engine auto picks it where a GPU is visible). It provides the same
  # onnxruntime module as the CPU package: install it in place of onnxruntime, not beside it.
  "onnx-gpu": ["onnxruntime-gpu>=1.31"],
}

setuptools.setup(
  name="deconvseg",
  version="0.1.0",
  description="Batch image segmentation with a bilinear-initialised deconvolution FCN on Apache Beam",
  python_requires=">=3.10",
  license="Apache-2.0",
  # The bundled model's and the report templates' folders hold data, not code; naming them as
  # (namespace) packages ships their files and silences setuptools' "package would be ignored" warnings.
  packages=setuptools.find_packages(
    include=["pipeline", "pipeline.*", "transforms", "transforms.*", "model", "model.*"]
  )
  + [
    "pipeline.report.templates",
    "model.default",
    "model.default.saved_model",
    "model.default.saved_model.variables",
    "model.default.openvino",
  ],
  # The packages sit at the repository root: saying so lets an editable install use a plain .pth
  # entry, which setuptools installs without its "Editable installation" notice.
  package_dir={"": "."},
  include_package_data=True,
  package_data={
    "pipeline.report.templates": ["*.j2"],
    "model.default": ["card.json"],
    "model.default.saved_model": ["*.pb"],
    "model.default.saved_model.variables": ["variables.*"],
    "model.default.openvino": ["model.xml", "model.bin", "model_int8.xml", "model_int8.bin"],
  },
  install_requires=REQUIRED,
  extras_require=EXTRAS,
  entry_points={"console_scripts": ["deconvseg-run=pipeline.run:main"]},
)
