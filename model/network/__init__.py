"""The network: custom Keras layers, encoders, the FCN builder, its variants and the training cost."""
