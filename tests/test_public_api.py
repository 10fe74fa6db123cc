"""lithovae uses only the public API of Lightning and MLflow: their private attributes and
modules change without notice on any upgrade."""

from __future__ import annotations

import ast
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


# -- the same rule, read from the syntax tree -----------------------------------------------------
THEIRS = ("mlflow", "pytorch_lightning", "lightning", "lightning_fabric")
# names that hold their objects wherever they appear: Lightning's Trainer and logger, MLflow's
# client (logger.experiment) and the active run
THEIR_OBJECTS = {"trainer", "logger", "loggers", "experiment", "client", "mlflow_client", "active_run"}


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def _root_and_names(node: ast.expr) -> tuple[str | None, list[str]]:
    """``a.b._c`` -> ("a", ["b", "_c"]); a chain not rooted at a name gives None."""
    names = []
    while isinstance(node, ast.Attribute):
        names.append(node.attr)
        node = node.value
    return (node.id if isinstance(node, ast.Name) else None), names[::-1]


def private_uses(source: str) -> list[tuple[int, str]]:
    """(line, what) for each read of a private attribute or module of Lightning or MLflow: an
    import of ``mlflow.x._y`` or of ``_y`` from theirs; ``X._y`` (at any depth) where X is a name
    imported from theirs (``mlflow``, ``pl``, ``MLFlowLogger``) or one of THEIR_OBJECTS
    (``trainer._y``, ``self.trainer._y``, ``self.logger.experiment._y``); ``getattr(X, "_y")``."""
    tree = ast.parse(source)
    imported, found = set(), []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] in THEIRS:
                    imported.add((alias.asname or alias.name).split(".")[0])
                    if any(_private(part) for part in alias.name.split(".")):
                        found.append((node.lineno, f"import {alias.name}"))
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in THEIRS:
            for alias in node.names:
                imported.add(alias.asname or alias.name)
                if any(_private(part) for part in [*node.module.split("."), alias.name]):
                    found.append((node.lineno, f"from {node.module} import {alias.name}"))

    def theirs(names_before: list[str], root: str | None) -> bool:
        return root in imported or root in THEIR_OBJECTS or any(n in THEIR_OBJECTS for n in names_before)

    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and _private(node.attr):
            root, names = _root_and_names(node)
            if theirs(names[:-1], root):
                found.append((node.lineno, ".".join([root or "…", *names])))
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
              and node.func.id in ("getattr", "setattr", "hasattr") and len(node.args) >= 2
              and isinstance(node.args[1], ast.Constant) and isinstance(node.args[1].value, str)
              and _private(node.args[1].value)):
            root, names = _root_and_names(node.args[0])
            if theirs(names, root):
                found.append((node.lineno, f"{node.func.id}({'.'.join([root or '…', *names])}, {node.args[1].value!r})"))
    return found


def test_no_code_of_lithovae_reads_a_private_attribute_of_theirs():
    found = [f"{path.relative_to(PACKAGE.parent)}:{line}: {what}"
             for path in sorted(PACKAGE.rglob("*.py")) for line, what in private_uses(path.read_text())]
    assert not found, found


def test_the_scan_finds_what_it_guards_against():
    """Each way of reaching into their internals is found; lithovae's own privates are not."""
    bad = {
        "import mlflow\nuri = mlflow.utils._tracking_uri": "mlflow.utils._tracking_uri",
        "import pytorch_lightning as pl\nx = pl.trainer._connector": "pl.trainer._connector",
        "from mlflow.tracking._tracking_service import utils": "from mlflow.tracking._tracking_service import utils",
        "from mlflow.tracking import _get_store": "from mlflow.tracking import _get_store",
        "def f(logger):\n    return logger._tracking_uri": "logger._tracking_uri",
        "def f(self):\n    return self.trainer.strategy._launcher": "self.trainer.strategy._launcher",
        "def f(self):\n    return self.logger.experiment._tracking_client": "self.logger.experiment._tracking_client",
        "def f(trainer):\n    return getattr(trainer, '_accelerator_connector')": "getattr(trainer, '_accelerator_connector')",
    }
    for source, what in bad.items():
        assert [w for _, w in private_uses(source)] == [what], source
    fine = ("class A:\n    def f(self):\n        return self._block, self.model._table\n"
            "import mlflow\nmlflow.set_tracking_uri('x')\nx = mlflow.get_tracking_uri()\n"
            "def g(trainer):\n    return trainer.logger.log_dir, trainer.__class__")
    assert private_uses(fine) == []
