"""What some benchmark runs need beyond the virtualenv, fetched with ``pip --target`` into the work folder.

Never installed into the venv: the stock handler's ``tensorflow_hub`` and
``tf_keras`` would pull a second TensorFlow there, and ``py-spy`` is only for
the profile. Each returns None when pip cannot get them (offline), and the
run that needs them is left out.
"""

import os
import shutil
import subprocess
import sys


def _pip_install(target, *arguments):
  """``pip install --quiet --target TARGET ARGUMENTS``; False when pip fails, times out or cannot start."""
  try:
    subprocess.run(
      [sys.executable, "-m", "pip", "install", "--quiet", "--target", target, *arguments],
      check=True,
      timeout=300,
      capture_output=True,
    )
  except (subprocess.SubprocessError, OSError):
    return False
  return True


def hub_path(workdir):
  """tensorflow_hub + tf_keras in a side folder (``pip --no-deps --target``), never in the venv.

  ``TFModelHandlerNumpy``'s module imports ``tensorflow_hub``, which imports
  ``tf_keras``; ``tf_keras`` requires the ``tensorflow`` distribution (not
  ``tensorflow-cpu``), so installing it normally would pull a second
  TensorFlow. With ``--no-deps`` both import against the installed
  ``tensorflow-cpu``. Returns the folder, or None when pip cannot get them.
  """
  target = os.path.join(workdir, "stock-deps")
  if os.path.isdir(os.path.join(target, "tensorflow_hub")) and os.path.isdir(os.path.join(target, "tf_keras")):
    return target
  return target if _pip_install(target, "--no-deps", "tensorflow_hub==0.16.1", "tf_keras==2.21.*") else None


def pyspy(workdir):
  """A py-spy executable: on PATH, or installed into the work folder with ``pip --target``."""
  found = shutil.which("py-spy")
  if found:
    return found
  target = os.path.join(workdir, "tools")
  executable = os.path.join(target, "bin", "py-spy")
  if not os.path.exists(executable):
    _pip_install(target, "py-spy")
  return executable if os.path.exists(executable) else None
