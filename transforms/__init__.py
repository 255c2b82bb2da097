"""Beam PTransforms and DoFns: read, decode, tile, infer, stitch, statistics, sinks, failures."""
