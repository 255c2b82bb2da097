"""Post-training int8 quantisation of an exported model's OpenVINO IR, behind an accuracy gate.

    python -m model.quantize --model DIR --data DATA --split train --truth_data TEST --truth_split test
    python -m model.quantize --model DIR --calibration 'images/*.png' [--subset 300]
    python -m model.quantize --model DIR     # calibrates on the training data the card names, if it is here

NNCF calibrates the activation ranges of the fp32 IR on a few hundred
images (``--calibration GLOB`` of image files, or ``--data DATA --split S``
in ``model.make_dataset``'s layout; without either, the ``--data`` of the
card's training command when that directory exists). The IR keeps dynamic
height and width, so calibration images of any size are used as they are.

int8 is written only if it gives the same masks: before anything is
written, class ids of OpenVINO int8 are compared with TensorFlow fp32 on
held-out images (``--truth_data``; their masks also give the mean IoU of
both), or, without truth data, on the calibration images themselves, which
the output says. The gate is agreement >= ``--agreement_min`` (99.5 %) and a
mean IoU drop <= ``--miou_drop_max`` (0.005). A failed gate prints the
numbers and exits 1 with nothing written; ``--force`` writes anyway and
records the failure. A passing model goes to MODEL_DIR/openvino/model_int8.xml
(+ .bin), with the measurements, its speed against fp32 on this CPU and the
command in the card's ``openvino.int8`` block; ``--precision int8`` in the
pipeline then runs it.
"""

import sys

from model.artifact.quantize import main

if __name__ == "__main__":
  sys.exit(main())
