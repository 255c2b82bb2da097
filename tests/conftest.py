"""Shared pytest set-up: quiet TensorFlow, no Google credential probing."""
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("NO_GCE_CHECK", "true")
