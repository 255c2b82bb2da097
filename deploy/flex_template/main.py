"""Flex Template entry point: the launcher runs ``python main.py --name=value ...``.

Two adjustments before the ordinary ``pipeline.run.main``: switches arrive as
``--flag=true`` (see ``pipeline.cloud.flex_metadata.flex_argv``), and without an
explicit ``--worker_image`` the workers use the image this launcher was built
for (``DECONVSEG_WORKER_IMAGE``, set by deploy/flex_template/Dockerfile), so a
template and its workers always run the same code.
"""

import os
import sys

from pipeline.cloud.flex_metadata import flex_argv
from pipeline.run import main


def template_argv(argv):
  argv = flex_argv(argv)
  image = os.environ.get("DECONVSEG_WORKER_IMAGE")
  if image and not any(arg.split("=", 1)[0] in ("--worker_image", "--sdk_container_image") for arg in argv):
    argv.append("--worker_image=" + image)
  return argv


if __name__ == "__main__":
  sys.exit(main(template_argv(sys.argv[1:])))
