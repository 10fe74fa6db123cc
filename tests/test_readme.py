"""The README cannot drift from the code: every command in its shell blocks is checked.

``python -m lithovae.<app>`` commands are composed by Hydra exactly as written (a sweep takes its
first value), which catches a wrong option, key or group; other modules must exist and have a
``main``; ``make`` targets must be in the Makefile; scripts must exist. Running the main path as
written is the slow ``test_first_hour.py``. The config-group table and the layout are checked
against ``lithovae/conf`` and the package."""

from __future__ import annotations

import importlib
import re
import shlex
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser

from tests.conftest import CONF_DIR

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
HYDRA_APPS = {"lithovae.train": "train", "lithovae.predict": "predict", "lithovae.evaluate": "evaluate",
              "lithovae.data": "build", "lithovae.cv": "train", "lithovae.study": "train"}
SHELL_PREFIXES = ("python", "make", ".venv/", "MLFLOW_", "PATH=", "curl", "source", "mlflow", "cd ", "export ",
                  "scripts/", "bash ", "pip", "serve-env/", "git ", "sbatch", "srun", "squeue", "scontrol", "sinfo")


def readme_commands(text: str = README) -> list[str]:
    """The commands of the README's shell blocks, continuation lines joined, comments dropped."""
    commands = []
    for block in re.findall(r"```(?:bash|sh)\n(.*?)```", text, re.S):
        joined = re.sub(r"\\\n\s*", " ", block)
        for line in joined.splitlines():
            line = line.strip()
            if line.startswith(SHELL_PREFIXES):
                commands.append(line)
    return commands


def _words(command: str) -> list[str]:
    # placeholders (<run>, <MLflow run id>) stand for a value: one word for the shell
    return shlex.split(re.sub(r"<[^>]+>", "PLACEHOLDER", command), comments=True)


def _first_values(overrides: list[str]) -> list[str]:
    """A sweep's first job: ``mask.prob=0.0,0.1`` -> ``mask.prob=0.0``."""
    parsed = OverridesParser.create().parse_overrides(overrides)
    out = []
    for text, override in zip(overrides, parsed):
        if override.is_sweep_override():
            first = next(iter(override.sweep_string_iterator()))
            out.append(f"{override.get_key_element()}={first}")
        else:
            out.append(text)
    return out


def _python_commands() -> list[list[str]]:
    found = []
    for command in readme_commands():
        if "python" not in command.split("#")[0]:
            continue
        words = _words(command)
        while words and "=" in words[0] and not words[0].startswith("python"):
            words = words[1:]  # VARIABLE=value before the command
        if words[:2] == ["python", "-m"] or (words and words[0] == "python"):
            found.append(words)
    return found


def test_the_readme_has_commands_to_check():
    assert len(_python_commands()) >= 40
    assert any(c[:3] == ["python", "-m", "lithovae.cv"] for c in _python_commands())


@pytest.mark.parametrize("words", _python_commands(), ids=lambda w: " ".join(w[:6])[:80])
def test_every_python_command_of_the_readme_is_valid(words):
    if words[1] == "-c":  # a snippet: it compiles
        compile(words[2], "README", "exec")
        return
    if words[1] != "-m":  # a script: it exists
        assert (ROOT / words[1]).is_file(), words[1]
        return
    module, args = words[2], words[3:]
    if module not in HYDRA_APPS:
        assert callable(getattr(importlib.import_module(module), "main", None)), module
        return
    overrides = [a for a in args if a not in ("-m", "--multirun")]
    if module == "lithovae.cv":
        overrides = ["study=cv", *overrides]
    elif module == "lithovae.study":
        overrides = [f"study={overrides[0]}", *overrides[1:]]
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose(config_name=HYDRA_APPS[module], overrides=_first_values(overrides), return_hydra_config=True) \
            if not any(o.startswith("study=") for o in overrides) else None
        if cfg is None:  # a study's sweep parameters come first, as the sweeper merges them
            study = [o for o in overrides if o.startswith("study=")]
            params = compose(config_name="train", overrides=study, return_hydra_config=True).hydra.sweeper.params
            given = {o.split("=", 1)[0] for o in overrides}
            first = [f"{k}={v}" for k, v in (params or {}).items() if k not in given]
            compose(config_name="train", overrides=_first_values([*first, *overrides]), return_hydra_config=True)


def test_every_make_target_of_the_readme_exists():
    targets = set(re.findall(r"^([a-z][\w-]*):", (ROOT / "Makefile").read_text(), re.M))
    used = {_words(c)[1] for c in readme_commands() if c.startswith("make ")}
    assert used and used <= targets, used - targets


def test_a_broken_command_is_caught(tmp_path):
    """The check above fails on a README line with a wrong key or option."""
    with pytest.raises(Exception):
        test_every_python_command_of_the_readme_is_valid(["python", "-m", "lithovae.train", "model=nope"])
    with pytest.raises(Exception):
        test_every_python_command_of_the_readme_is_valid(["python", "-m", "lithovae.train", "trainer.max_epoch=1"])


def _table_rows(heading: str) -> str:
    start = README.index(heading)
    end = README.find("\n#", start + len(heading))
    return README[start:end if end > 0 else None]


def test_the_config_group_table_lists_every_option():
    """Each option file of each group the README's table shows is named in that table."""
    section = _table_rows("| group |")
    rows = dict(re.findall(r"^\| `([a-z_/]+)` \|(.*)$", section, re.M))
    conf = Path(CONF_DIR)
    groups = {str(d.relative_to(conf)) for d in conf.rglob("*") if d.is_dir() and any(d.glob("*.yaml"))}
    assert groups - {"hydra"} <= set(rows), f"README config-group table: no row for {groups - {'hydra'} - set(rows)}"
    for group, row in rows.items():
        missing = [p.stem for p in (conf / group).glob("*.yaml") if f"`{p.stem}`" not in row]
        assert not missing, f"README config-group table, row '{group}': missing {missing}"


def test_the_layout_names_every_module():
    """The README's layout section names every module and package of lithovae."""
    section = _table_rows("## Layout")
    package = ROOT / "lithovae"
    names = [p.name for p in package.iterdir() if (p.suffix == ".py" and p.stem != "__init__")
             or (p.is_dir() and (p / "__init__.py").exists())]
    missing = [n for n in names if n.removesuffix(".py") not in section]
    assert not missing, f"README Layout: missing {sorted(missing)}"
