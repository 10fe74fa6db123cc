"""docs/bad_input.md names a test for every case: each one named must exist."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# "tests/test_x.py::test_name" or the shorthand "…::test_name" (the file named before it)
NODE = re.compile(r"(tests/test_\w+\.py)?(?:::|…::)(test_\w+)")


def named_tests(text: str) -> list[tuple[str, str]]:
    found, current = [], None
    for line in text.splitlines():
        for path, name in NODE.findall(line):
            current = path or current
            found.append((current, name))
    return found


def test_every_test_named_in_the_bad_input_catalogue_exists():
    named = named_tests((ROOT / "docs" / "bad_input.md").read_text())
    assert len(named) > 80
    missing = [f"{path}::{name}" for path, name in named
               if path is None or not (ROOT / path).is_file()
               or not re.search(rf"^def {name}\b", (ROOT / path).read_text(), re.M)]
    assert not missing, missing
