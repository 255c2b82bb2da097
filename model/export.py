"""Export a trained checkpoint as the self-contained model directory of docs/CONTRACTS.md.

    python -m model.export --checkpoint runs/default/best.keras --out model/default \
        --evaluate_data data/mosaic_test --evaluate_split test

Writes OUT/saved_model/ (signatures `serving_default` and
`serving_mixed_float16`, plus the `segment` tf.function), OUT/openvino/ (the
same graph as an OpenVINO IR, for the CPU engine) and OUT/card.json.
Normalisation, padding to the stride, cropping, softmax and argmax all happen
inside the graph, so the pipeline needs only TensorFlow to load and run it.
"""

from model.artifact.export import main

if __name__ == "__main__":
  main()
