"""Files shipped with the package: the recipes and the DeepSpeed / Accelerate configs.

In a checkout they are ``recipes/`` and ``ds_configs/`` at the top of the repository (``trainer/recipes`` and
``trainer/ds_configs`` link to them); an installed package holds copies of them as package data. A path a
user gives (``--config recipes/multitask.yaml``, ``distributed.deepspeed_config=ds_configs/zero3.json``) is
read from the working directory when it exists there, else from the shipped files, so the same names work in
a checkout, an editable install and a plain ``pip install .``.
"""

from __future__ import annotations

from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
"""Where the shipped ``recipes/`` and ``ds_configs/`` are found."""
DEFAULT_RECIPE = PACKAGE_DIR / "recipes" / "turbotrain.yaml"
"""The recipe ``launch/train.py`` runs without ``--config``."""


def resolve_shipped(path: str | Path) -> Path:
    """``path`` itself if it exists (relative to the working directory), else the shipped file of that relative
    name (``recipes/x.yaml``, ``ds_configs/zero2.json``) if there is one, else ``path`` unchanged (the caller
    reports it missing)."""
    path = Path(path)
    if path.exists() or path.is_absolute():
        return path
    shipped = PACKAGE_DIR / path
    return shipped if shipped.exists() else path
