"""Tracking URIs as text: the environment variable that names one, and a URI with its password
hidden for messages. Light on purpose (no MLflow, no Lightning): the Hydra callbacks that refuse
a password before anything is written import it at start-up."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

ENV_URI = "MLFLOW_TRACKING_URI"


def redacted(uri: str) -> str:
    """``uri`` without a password (for messages)."""
    parts = urlsplit(uri)
    if parts.password is None:
        return uri
    netloc = f"{parts.username}:***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))
