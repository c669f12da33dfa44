"""Which optional extra provides a missing module, so a command can say what to install."""

from __future__ import annotations

# top-level module -> extras that provide it (the first is named unless the command prefers another)
PROVIDERS = {
    "captum": ("explain",), "skimage": ("explain",), "pytorch_grad_cam": ("explain",),
    "onnx": ("export",), "onnxscript": ("export",), "onnxruntime": ("api", "export"),
    "fastapi": ("api",), "uvicorn": ("api",), "multipart": ("api",), "python_multipart": ("api",),
    "starlette": ("api",), "gradio": ("ui",),
    "optuna": ("tune",), "psycopg2": ("postgres",), "sqlalchemy": ("monitor", "postgres"),
    "fhir": ("fhir",), "highdicom": ("dicom",), "pydicom": ("dicom",), "datasets": ("hf",), "kagglehub": ("kaggle",),
    "tensorboard": ("tensorboard",),
}
PREFERRED = {"export": "export", "serve": "api", "predict": "api", "evaluate": "api"}


def missing_extra(error: ModuleNotFoundError, command: str | None = None) -> str | None:
    """The extra to install for `error`'s module (None when no extra provides it)."""
    module = (error.name or "").split(".")[0]
    extras = PROVIDERS.get(module)
    if not extras:
        return None
    preferred = PREFERRED.get(command or "")
    return preferred if preferred in extras else extras[0]


def install_hint(error: ModuleNotFoundError, command: str | None = None) -> str | None:
    """One line naming the missing package and the pip command, or None if no extra has it."""
    extra = missing_extra(error, command)
    if extra is None:
        return None
    module = (error.name or "").split(".")[0]
    needs = f"`cxrkit {command}`" if command else "this"
    return f"{needs} needs the optional package '{module}': pip install 'cxrkit[{extra}]'"


def require(*modules: str) -> None:
    """Import `modules` now, so a command missing an extra stops before doing any work."""
    import importlib

    for module in modules:
        importlib.import_module(module)
