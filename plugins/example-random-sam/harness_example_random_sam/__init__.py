"""An example third-party sam-harness plugin: noisy SAM (``example-random-sam``), registered in ``plugin``."""
