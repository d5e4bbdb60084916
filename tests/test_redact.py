"""Passwords in URIs never reach the console, MLflow params or saved files."""

from __future__ import annotations

import yaml

from recfound.config import load_config, save_config
from recfound.redact import without_password, without_passwords
from recfound.tracking.store import serve_command, ui_command


def test_the_password_goes_and_everything_else_stays():
    assert without_password("postgresql://alice:s3cr%40t@db.internal:5432/mlflow") == \
        "postgresql://alice@db.internal:5432/mlflow"
    assert without_password("https://bob:pw@mlflow.example.com/path?x=1") == "https://bob@mlflow.example.com/path?x=1"
    assert without_password("https://:token@host") == "https://host"
    assert without_password("postgresql://alice@db/mlflow?sslmode=require&password=pw") == \
        "postgresql://alice@db/mlflow?sslmode=require"
    for unchanged in ("postgresql://alice@db/mlflow", "sqlite:////tmp/a@b/mlflow.db", "s3://bucket/a:b@c",
                      "plain text with a:b@c", "file:///x"):
        assert without_password(unchanged) == unchanged
    assert without_passwords({"a": ["mysql://u:p@h/db", 3], "b": None}) == {"a": ["mysql://u@h/db", 3], "b": None}


def test_a_store_password_is_never_printed_logged_or_saved(tmp_path):
    uri = "postgresql://alice:hunter2@db.internal:5432/mlflow"
    config = load_config(None, [f"mlflow.tracking_uri={uri}", "mlflow.artifact_root=s3://bucket/artifacts"],
                         check_paths=False)
    assert config.tracking_uri() == uri  # the run itself connects with it
    save_config(config, tmp_path / "config.yaml")
    shown = [config.to_yaml(), (tmp_path / "config.yaml").read_text(), repr(config.flat()),
             serve_command(uri, "models:/m/1"), ui_command(uri), ui_command("https://bob:pw@mlflow.example.com")]
    assert not [text for text in shown if "hunter2" in text or ":pw@" in text]
    saved = yaml.safe_load((tmp_path / "config.yaml").read_text())
    assert saved["mlflow"]["tracking_uri"] == "postgresql://alice@db.internal:5432/mlflow"
    assert config.flat()["mlflow.tracking_uri"] == "postgresql://alice@db.internal:5432/mlflow"


def test_a_sweeps_store_password_stays_out_of_its_definition_and_params(tmp_path):
    from recfound.tune import load_sweep

    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump({
        "name": "secret", "overrides": {"mlflow.tracking_uri": "postgresql://alice:hunter2@db/mlflow"},
        "variants": {"other": {"mlflow.tracking_uri": "postgresql://bob:hunter2@db/mlflow"}},
        "space": {"sched.window": {"type": "choice", "values": [4, 8]}}, "trials": 2}))
    spec = load_sweep(str(path))
    assert spec.overrides["mlflow.tracking_uri"] == "postgresql://alice:hunter2@db/mlflow"  # what trials use
    for shown in (yaml.safe_dump(spec.to_dict()), repr(spec.params())):
        assert "hunter2" not in shown and "postgresql://alice@db/mlflow" in shown


def test_every_uri_inside_a_message_loses_its_password():
    from recfound.redact import without_passwords_in_text

    message = ("(psycopg.OperationalError) connection to postgresql://alice:s3cret@db:5432/mlflow failed; "
               "fallback 'mysql://bob:pw@other/x' too")
    assert without_passwords_in_text(message) == ("(psycopg.OperationalError) connection to "
                                                  "postgresql://alice@db:5432/mlflow failed; fallback "
                                                  "'mysql://bob@other/x' too")
    assert without_passwords_in_text("no URI here") == "no URI here"
