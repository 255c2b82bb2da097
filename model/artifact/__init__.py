"""Model artifacts: SavedModel and OpenVINO export, quantisation and its gate, model cards, reproduction."""
