"""python -m lithovae.ui [--store URI] [--port N]: the MLflow UI over lithovae's runs, one worker,
no background job runner, and the address of each experiment's runs table printed first (MLflow's
own home page is its GenAI overview, not the runs)."""

from __future__ import annotations

import argparse
import os
import sys

from lithovae.tracking import DEFAULT_UI_STORE, sqlite_path

# not at the top: mlflow is imported inside the function that starts the UI: --help and a bad option
# need none

# MLflow's server otherwise starts a pool of job-runner processes (GenAI evaluation jobs) that
# lithovae never uses: 17 processes and 3.2 GB, against 2 processes and about 0.4 GB
SERVER_ENVIRONMENT = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
WORKERS = "1"


def experiment_pages(uri: str, base_url: str) -> list[str]:
    """One line per experiment with runs, newest first: its name, run count and runs page."""
    import mlflow

    client = mlflow.MlflowClient(uri)
    lines = []
    for experiment in client.search_experiments(order_by=["last_update_time DESC"]):
        runs = client.search_runs([experiment.experiment_id], max_results=1000)
        if runs:
            lines.append(f"  {base_url}/#/experiments/{experiment.experiment_id}/runs   "
                         f"{experiment.name} ({len(runs)}{'+' if len(runs) == 1000 else ''} runs)")
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m lithovae.ui", description=__doc__.splitlines()[0])
    parser.add_argument("--store", default=f"sqlite:///{DEFAULT_UI_STORE}", help="the tracking database URI")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=5000)
    args = parser.parse_args(argv)
    database = sqlite_path(args.store)
    if database is not None and not database.exists():
        print(f"error: {database}: no MLflow runs yet (run `make train` first)", file=sys.stderr)
        sys.exit(2)
    base_url = f"http://{args.host}:{args.port}"
    pages = experiment_pages(args.store, base_url)
    print(f"MLflow UI at {base_url} (Ctrl-C stops it); the runs of each experiment, newest first:")
    print("\n".join(pages) if pages else "  (no runs yet)", flush=True)
    mlflow = os.path.join(os.path.dirname(sys.executable), "mlflow")
    os.execve(mlflow, [mlflow, "server", "--backend-store-uri", args.store, "--host", args.host,
                       "--port", str(args.port), "--workers", WORKERS],
              {**os.environ, **SERVER_ENVIRONMENT,
               # mlflow execs uvicorn by name: this venv's, whatever the shell's PATH
               "PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")})


if __name__ == "__main__":
    main()
