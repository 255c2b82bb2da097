"""The deconvolution segmentation model: layers, networks, data, training, evaluation, export."""
