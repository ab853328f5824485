"""Video input pipeline: sources, PyAV decoding, PySlowFast-style sampling, augmentation, grain loaders."""
