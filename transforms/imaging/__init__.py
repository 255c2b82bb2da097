"""The image code of the pipeline that never imports Beam: decoding, band rules, GeoTIFFs, element records, files.

Decoding bytes into the model's array (``image_decoder``, ``tiff``, ``bands``, ``input_spec``), what overlays show
(``display``), georeferences and areas (``geo``), the out-of-distribution features (``ood``), the element types that
travel between the Beam steps (``records``), the mask and polygon files (``mask_files``, ``polygons``), TFRecord
framing (``tfrecord``), output keys (``input_keys``) and progress lines (``progress``). None of them imports
``apache_beam`` (an import-linter contract in ``.importlinter`` checks it), so the launcher, the workers, tests and
tools can use them in any process without Beam; the Beam steps that use them are the modules of ``transforms/``.
"""
