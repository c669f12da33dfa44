"""Data: sources to manifest, splits, decoding, preprocessing, cache and loaders."""
