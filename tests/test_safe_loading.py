"""Checkpoints and pretrained encoders are read with ``weights_only=True``: a file carrying a
pickle payload is refused with one line naming it, and the payload never runs."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lithovae.errors import CheckpointError
from lithovae.files import load_checkpoint
from lithovae.models.base import DataSpec
from lithovae.models.embedding_classifier import EmbeddingClassifier
from lithovae.train import run, train
from tests.conftest import compose_train, config_defaults

FEATURES = ("GRA", "MS", "NGR", "R", "G", "B")
SPEC = DataSpec(6, FEATURES, 4, 2, (5, 3, 2, 1), (8, 3))


def embedding_classifier(**overrides) -> EmbeddingClassifier:
    """An EmbeddingClassifier with the defaults of conf/model/embedding_classifier.yaml."""
    kwargs = {k: v for k, v in config_defaults("model=embedding_classifier")["model"].items()
              if k != "_target_"}
    return EmbeddingClassifier(SPEC, **{**kwargs, **overrides})


class Payload:
    """Unpickling this runs a shell command that creates ``marker``."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {shlex.quote(str(self.marker))}",)


def plant(path: Path, marker: Path, base: dict | None = None) -> Path:
    """``torch.save`` a checkpoint (``base``, or a bare one) with the payload hidden inside."""
    checkpoint = dict(base) if base is not None else {"state_dict": {}}
    checkpoint["hyper_parameters"] = {"lr": 1e-3, "note": Payload(marker)}
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(checkpoint, path)
    return path


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, shared_data_dir) -> Path:
    """The run dir of a 1-epoch training (config, scaler, label encoding, checkpoints)."""
    tmp = tmp_path_factory.mktemp("trained")
    train(compose_train(["trainer.max_epochs=1", "logger=none"], tmp, shared_data_dir))
    return tmp / "run"


def test_the_payload_is_live_when_loaded_unsafely(tmp_path):
    """Control: the planted file really runs code under weights_only=False."""
    marker = tmp_path / "pwned"
    path = plant(tmp_path / "evil.ckpt", marker)
    torch.load(path, map_location="cpu", weights_only=False)
    assert marker.exists()


def test_a_real_training_checkpoint_loads_safely(trained_run):
    checkpoints = sorted((trained_run / "checkpoints").glob("*.ckpt"))
    assert checkpoints
    for path in checkpoints:
        state = load_checkpoint(path)
        assert {"state_dict", "optimizer_states", "loops", "callbacks", "epoch"} <= set(state), path
        assert all(isinstance(v, torch.Tensor) for v in state["state_dict"].values())


def test_load_checkpoint_refuses_a_pickle_payload_in_one_line(tmp_path, trained_run):
    marker = tmp_path / "pwned"
    genuine = load_checkpoint(trained_run / "checkpoints" / "last.ckpt")
    path = plant(tmp_path / "evil.ckpt", marker, base=genuine)  # a real checkpoint plus the payload
    with pytest.raises(CheckpointError) as error:
        load_checkpoint(path)
    message = str(error.value)
    assert len(message.splitlines()) == 1
    assert message.startswith(f"{path}: not a safe checkpoint")
    assert "posix.system" in message
    assert not marker.exists()


@pytest.mark.parametrize("content, expected", [
    (None, "checkpoint not found"),
    (b"not a checkpoint", "not a loadable"),
    (b"PK\x03\x04 truncated zip", "not a loadable checkpoint"),
])
def test_load_checkpoint_names_a_missing_or_corrupt_file(tmp_path, content, expected):
    path = tmp_path / "x.ckpt"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(CheckpointError, match=expected) as error:
        load_checkpoint(path)
    assert str(error.value).startswith(str(path)) and len(str(error.value).splitlines()) == 1


def _evaluate(run_dir: Path, tmp: Path, data_dir: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lithovae.evaluate", f"run_dir={run_dir}",
                           f"paths.root_dir={tmp}", f"paths.data_dir={data_dir}", "log_mlflow=false"],
                          capture_output=True, text=True, cwd=tmp, timeout=300)


@pytest.mark.slow  # over 20 s: `make test-slow`, which CI runs too
def test_evaluate_refuses_a_planted_run_checkpoint(tmp_path, trained_run, shared_data_dir):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    for name in ("config.yaml", "scaler.json", "label_encoding.json"):
        shutil.copy(trained_run / name, run_dir / name)
    marker = tmp_path / "pwned"
    genuine = load_checkpoint(trained_run / "checkpoints" / "last.ckpt")
    # whichever checkpoint evaluate picks by default (best, last or the scored one), it is the payload
    planted = [plant(run_dir / "checkpoints" / name, marker, base=genuine) for name in ("best.ckpt", "last.ckpt")]

    proc = _evaluate(run_dir, tmp_path, shared_data_dir)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert any(lines[0].startswith(f"error: {path}: not a safe checkpoint") for path in planted), lines[0]
    assert not marker.exists()
    assert not (run_dir / "evaluations").exists()

    # control: the same run dir with the genuine checkpoint back in place evaluates
    for path in planted:
        shutil.copy(trained_run / "checkpoints" / "last.ckpt", path)
    proc = _evaluate(run_dir, tmp_path, shared_data_dir)
    assert proc.returncode == 0, proc.stderr
    assert (run_dir / "evaluations").exists()


def test_the_embedding_classifier_refuses_a_planted_pretrained_encoder(tmp_path):
    marker = tmp_path / "pwned"
    evil = plant(tmp_path / "vae.ckpt", marker)
    with pytest.raises(CheckpointError) as error:
        embedding_classifier(pretrained=str(evil))
    assert str(error.value).startswith(f"{evil}: not a safe checkpoint")
    assert not marker.exists()


def test_the_embedding_classifier_loads_a_real_vae_checkpoint(trained_run):
    path = trained_run / "checkpoints" / "last.ckpt"
    model = embedding_classifier(pretrained=str(path), latent_dim=10, hidden=[32, 16])
    state = load_checkpoint(path)["state_dict"]
    assert torch.equal(model.state_dict()["encoder.fc_mu.weight"], state["model.encoder.fc_mu.weight"])
    assert model.in_classifier_stage(0)


def test_training_with_a_planted_pretrained_encoder_exits_2_in_one_line(tmp_path, shared_data_dir, capsys):
    marker = tmp_path / "pwned"
    evil = plant(tmp_path / "vae.ckpt", marker)
    cfg = compose_train(["model=embedding_classifier", f"model.pretrained={evil}", "trainer.max_epochs=1",
                         "logger=none"], tmp_path, shared_data_dir)
    with pytest.raises(SystemExit) as exit_info:
        run(cfg)
    assert exit_info.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {evil}: not a safe checkpoint"), lines
    assert not marker.exists()
    assert not (tmp_path / "run" / "checkpoints").exists()
