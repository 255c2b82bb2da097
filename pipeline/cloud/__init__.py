"""Launching on Google Cloud Dataflow.

- ``dataflow``: the Dataflow/GPU flags (``DataflowGpuOptions``) and their
  expansion into Beam's own worker, accelerator and experiment options;
- ``dataflow_checks``: the flag combinations refused, and why;
- ``gpu_machines``: the GPU machine catalogue (machine families, GPU counts, vCPUs);
- ``flex_metadata``: the Flex Template ``metadata.json``, generated from the
  pipeline's options classes (``python -m pipeline.cloud.flex_metadata``).
"""
