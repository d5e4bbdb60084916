"""Credentials never leave the process: URIs lose their password wherever recfound prints, logs or saves them.

A URI's password (`postgresql://alice:PW@db/mlflow`, `https://bob:PW@mlflow.example.com`) comes out as
`postgresql://alice@db/mlflow`: the user stays (it says whose store it is), the password is read from
the environment as the ecosystem does (`PGPASSWORD` for PostgreSQL, `MLFLOW_TRACKING_PASSWORD` for an
MLflow server, the cloud SDKs' own variables for buckets). A saved config with the password removed
still works where that environment is set.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit, urlunsplit


def without_password(text: str) -> str:
    """`text` with the password of its URI removed; any other text unchanged."""
    if "://" not in text or "@" not in text:
        return text
    try:
        parts = urlsplit(text)
    except ValueError:
        return text
    userinfo, at, host = parts.netloc.rpartition("@")
    if not at or ":" not in userinfo:
        return text
    user = userinfo.split(":", 1)[0]
    return urlunsplit(parts._replace(netloc=f"{user}@{host}" if user else host))


def has_password(text: str) -> bool:
    return isinstance(text, str) and without_password(text) != text


def without_passwords(value: Any) -> Any:
    """A copy of a nested dict/list/str value with every URI's password removed."""
    if isinstance(value, str):
        return without_password(value)
    if isinstance(value, dict):
        return {key: without_passwords(item) for key, item in value.items()}
    if isinstance(value, list):
        return [without_passwords(item) for item in value]
    return value
