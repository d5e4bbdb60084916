"""Credentials never leave the process: URIs lose their password wherever recfound prints, logs or saves them.

A URI's password (`postgresql://alice:PW@db/mlflow`, `https://bob:PW@mlflow.example.com`) comes out as
`postgresql://alice@db/mlflow`: the user stays (it says whose store it is), the password is read from
the environment as the ecosystem does (`PGPASSWORD` for PostgreSQL, `MLFLOW_TRACKING_PASSWORD` for an
MLflow server, the cloud SDKs' own variables for buckets). A saved config with the password removed
still works where that environment is set.
"""

from __future__ import annotations

import re

from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit


SECRET_QUERY_KEYS = ("password", "pwd", "token", "secret", "access_token")  # e.g. libpq's ?password=


def without_password(text: str) -> str:
    """`text` with the password of its URI removed (from the user info and from query keys such as
    `password`); any other text unchanged."""
    if "://" not in text:
        return text
    try:
        parts = urlsplit(text)
    except ValueError:
        return text
    userinfo, at, host = parts.netloc.rpartition("@")
    if at and ":" in userinfo:
        user = userinfo.split(":", 1)[0]
        parts = parts._replace(netloc=f"{user}@{host}" if user else host)
    if parts.query:
        kept = [(key, value) for key, value in parse_qsl(parts.query, keep_blank_values=True)
                if key.lower() not in SECRET_QUERY_KEYS]
        parts = parts._replace(query=urlencode(kept))
    cleaned = urlunsplit(parts)
    return text if cleaned == urlunsplit(urlsplit(text)) else cleaned


URI_IN_TEXT = re.compile(r"[A-Za-z][\w+.-]*://[^\s'\"]+")


def without_passwords_in_text(text: str) -> str:
    """`text` (an error message, a log line) with the password of every URI in it removed."""
    return URI_IN_TEXT.sub(lambda found: without_password(found.group(0)), text)


def without_passwords(value: Any) -> Any:
    """A copy of a nested dict/list/str value with every URI's password removed."""
    if isinstance(value, str):
        return without_password(value)
    if isinstance(value, dict):
        return {key: without_passwords(item) for key, item in value.items()}
    if isinstance(value, list):
        return [without_passwords(item) for item in value]
    return value
