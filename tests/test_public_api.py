"""lithovae uses only the public API of Lightning and MLflow: their private attributes and
modules change without notice on any upgrade."""

from __future__ import annotations

import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "lithovae"
# private attributes of Lightning's or MLflow's objects that lithovae once read
PRIVATE_ATTRIBUTES = re.compile(r"\._tracking_uri\b|\._on_before_step\b|\._on_after_step\b|\._initialized\b")
# a private module of theirs: mlflow.tracking._tracking_service, pytorch_lightning.trainer._x, ...
PRIVATE_MODULES = re.compile(r"^\s*(from|import)\s+(mlflow|pytorch_lightning|lightning)(\.\w+)*\._", re.M)


def test_no_private_attribute_or_module_of_lightning_or_mlflow_is_used():
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        text = path.read_text()
        for i, line in enumerate(text.splitlines(), 1):
            if PRIVATE_ATTRIBUTES.search(line) or PRIVATE_MODULES.match(line):
                found.append(f"{path.relative_to(PACKAGE.parent)}:{i}: {line.strip()}")
    assert not found, found
