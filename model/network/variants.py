"""The decoder variants by name: which strides each fuses, without importing Keras.

``model.network.fcn`` builds them; the ablation's planning and reporting
(``model.ablation.grid``) read the same table without loading TensorFlow.
"""

# The strides each FCN variant fuses scores at, coarsest first; the last is its final upsampling factor.
FCN_STRIDES = {
  "fcn32s": (32,),
  "fcn16s": (32, 16),
  "fcn8s": (32, 16, 8),
  "fcn4s": (32, 16, 8, 4),
  "fcn2s": (32, 16, 8, 4, 2),
}
VARIANTS = (*FCN_STRIDES, "deconvnet")
# Output stride of each variant's last upsampling (its period, if it leaves a checkerboard).
LAST_STRIDE = {**{name: strides[-1] for name, strides in FCN_STRIDES.items()}, "deconvnet": 2}
# The full decoder's feature width at each stride, for encoder width 32 (scaled with --width): chosen so the
# decoder adds about a quarter to FCN-8s's multiply-accumulates (model.network.cost), half of them at strides 2 and 1.
DECODER_WIDTHS = {16: 32, 8: 24, 4: 16, 2: 8, 1: 4}
