"""deploy/: the worker image and Flex Template launcher stay in step with the pinned versions."""

import importlib.util
import os
import re
import sys

from pipeline_helpers import REPO


def _read(*parts):
  with open(os.path.join(REPO, *parts), encoding="utf-8") as handle:
    return handle.read()


def _locked(name):
  match = re.search(r"^%s==(\S+)$" % re.escape(name), _read("requirements.lock"), re.M | re.I)
  assert match, name
  return match.group(1)


def test_worker_image_uses_the_locked_beam_and_python():
  dockerfile = _read("deploy", "Dockerfile")
  beam = _locked("apache-beam")
  python = "%d.%d" % sys.version_info[:2]
  assert f"ARG BEAM_IMAGE=apache/beam_python{python}_sdk:{beam}" in dockerfile
  assert f"ARG PYTHON_IMAGE=python:{python}-" in dockerfile
  assert "COPY --from=beam /opt/apache/beam /opt/apache/beam" in dockerfile
  assert 'ENTRYPOINT ["/opt/apache/beam/boot"]' in dockerfile
  # TensorFlow's version is read from the lock at build time, as the CUDA build.
  assert _locked("tensorflow_cpu")
  assert "tensorflow[and-cuda]==${TF_VERSION}" in dockerfile
  for path in re.findall(r"^COPY (?!--from)(\S+(?: \S+)*) \S+$", dockerfile, re.M):
    for source in path.split():
      assert os.path.exists(os.path.join(REPO, source)), source


def test_flex_template_entry_point_adapts_launcher_arguments(monkeypatch):
  spec = importlib.util.spec_from_file_location("flex_main", os.path.join(REPO, "deploy", "flex_template", "main.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  monkeypatch.setenv("DECONVSEG_WORKER_IMAGE", "us-docker.pkg.dev/p/r/deconvseg-worker:1")
  assert module.template_argv(["--output=gs://b/o", "--skip_existing=true", "--overlays=false"]) == [
    "--output=gs://b/o",
    "--skip_existing",
    "--worker_image=us-docker.pkg.dev/p/r/deconvseg-worker:1",
  ]
  assert module.template_argv(["--sdk_container_image=x:2"]) == ["--sdk_container_image=x:2"]
  launcher = _read("deploy", "flex_template", "Dockerfile")
  assert "FLEX_TEMPLATE_PYTHON_PY_FILE=/template/main.py" in launcher
  assert "COPY deploy/flex_template/main.py /template/main.py" in launcher
