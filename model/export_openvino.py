"""Write an exported model's OpenVINO IR beside its SavedModel, and record it in the card.

    python -m model.export_openvino --model model/default --data /tmp/mosaic_test --split test

``model.export`` and ``model.wrap`` call this for every new export; run it by
hand for a directory exported before the OpenVINO engine existed (without it
the pipeline converts such a model once per machine into its cache). With
``--data``, the class-id agreement of OpenVINO fp32 (and bf16 where this CPU
has bf16 instructions) with TensorFlow fp32 is measured on that split's images
and recorded in the card's ``openvino`` block.
"""

import sys

from model.artifact.export_openvino import main

if __name__ == "__main__":
  sys.exit(main())
