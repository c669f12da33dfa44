"""The manifest's schema: one row per image with these columns, and the split names it knows.

Every source (folders, CSV, Hugging Face, Kaggle) produces this shape.
"""

SPLIT_NAMES = ("train", "val", "test")
SPLIT_ALIASES = {"train": "train", "training": "train", "val": "val", "valid": "val",
                 "validation": "val", "dev": "val", "test": "test", "testing": "test"}
MANIFEST_COLUMNS = ["path", "label", "group", "split"]
