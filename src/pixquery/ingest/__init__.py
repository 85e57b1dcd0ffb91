"""The build stage: scan folders -> decode + preprocess -> encode -> store -> index."""
