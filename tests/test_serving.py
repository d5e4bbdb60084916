"""The registered model served by the real `mlflow models serve`, started with exactly the command the
product prints, from a shell whose PATH does not hold this environment's scripts: strict JSON out
(no NaN), answers equal to the adapter's own, and HTTP 400 with a one-line reason for a bad request.
The printed `mlflow ui` command works from such a shell too."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch

from recfound.tasks import task_names
from recfound.tracking import log_and_register_adapter, serve_command, ui_command
from recfound.tracking.registry import download_registered_adapter
from test_tracking import (EMBEDDING_RECORDS, GENERATIVE_RECORDS, SEED, direct_embeddings,  # noqa: F401
                           direct_generation, run_in, served, store)

START_TIMEOUT_S = 120
NEW_TOKENS = 4


def strict_json(text: str):
    """json.loads that refuses NaN and Infinity, as strict parsers (browsers, Go, Java) do."""
    def refuse(constant: str):
        raise ValueError(f"not JSON: {constant}")
    return json.loads(text, parse_constant=refuse)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def plain_shell_path() -> str:
    """This process's PATH without any folder that has `mlflow` or `uvicorn` (this environment's scripts)."""
    folders = [p for p in os.environ.get("PATH", os.defpath).split(os.pathsep) if p]
    kept = [p for p in folders if not any((Path(p) / name).exists() for name in ("mlflow", "uvicorn"))]
    assert str(Path(sys.executable).absolute().parent) not in kept
    return os.pathsep.join(kept) or os.defpath


def request(port: int, path: str, body: dict | None = None) -> tuple[int, str]:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data,
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=60) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


@contextmanager
def running(command: str, port: int, health: str, log: Path) -> Iterator[None]:
    """`command` run by bash from a plain shell's PATH until `health` answers 200 (bounded); its whole
    process group is killed on the way out."""
    env = {key: value for key, value in os.environ.items() if key != "VIRTUAL_ENV"} | {"PATH": plain_shell_path()}
    with open(log, "wb") as out:
        process = subprocess.Popen(["bash", "-c", command], env=env, stdout=out, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    try:
        _wait_until_up(process, port, health, log)
        yield
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def _wait_until_up(process: subprocess.Popen, port: int, health: str, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"the server exited ({process.returncode}):\n{log.read_text()[-3000:]}")
        try:
            if request(port, health)[0] == 200:
                return
        except OSError:
            pass
        time.sleep(1)
    pytest.fail(f"no answer on {health} after {START_TIMEOUT_S}s:\n{log.read_text()[-3000:]}")


@pytest.fixture(scope="module")
def server(store, served, tmp_path_factory):
    """(port, registered name): version 1 of a registered model, served by the printed command."""
    uri, _ = store
    tokenizer_dir, adapter_file, _ = served
    registered = log_and_register_adapter(uri, run_in(store, "serving"), adapter_file, tokenizer_dir, "tiny", SEED,
                                          "rf-served", {"data_hash": "d41d8c"})
    port = free_port()
    log = tmp_path_factory.mktemp("server") / "server.log"
    with running(serve_command(uri, registered.registered_uri, port=port), port, "/ping", log):
        yield port, registered.name


def test_mixed_batch_is_strict_json_and_equals_the_adapter(server, served):
    port, _ = server
    tokenizer_dir, _, adapter = served
    records = EMBEDDING_RECORDS + GENERATIVE_RECORDS
    status, text = request(port, "/invocations", {"dataframe_records": records,
                                                  "params": {"max_new_tokens": NEW_TOKENS}})
    assert status == 200, text
    rows = strict_json(text)["predictions"]
    assert [row["task"] for row in rows] == [r["task"] for r in records]
    assert all(row.get("text") is None for row in rows[:3]) and all(row.get("embedding") is None for row in rows[3:])
    vectors = torch.tensor([row["embedding"] for row in rows[:3]])
    expected = direct_embeddings(adapter.model, tokenizer_dir, adapter.set_tasks)
    assert torch.allclose(vectors, expected, rtol=1e-5, atol=1e-5), (vectors - expected).abs().max()
    assert [row["text"] for row in rows[3:]] == [direct_generation(adapter, tokenizer_dir, r, NEW_TOKENS)
                                                 for r in GENERATIVE_RECORDS]


def test_the_logged_input_example_is_strict_json_and_served(server, store, tmp_path):
    port, name = server
    model_dir = download_registered_adapter(store[0], name, "1", tmp_path)
    example = strict_json((model_dir / "serving_input_example.json").read_text())
    split = example["dataframe_split"]
    assert [dict(zip(split["columns"], row))["task"] for row in split["data"]] == ["Q2I", "SA"]
    status, text = request(port, "/invocations", example)
    assert status == 200, text
    rows = strict_json(text)["predictions"]
    assert len(rows[0]["embedding"]) > 1 and rows[0]["text"] is None and rows[1]["embedding"] is None


def test_a_bad_request_is_a_400_that_says_what_is_wrong(server):
    unknown = {"task": "XYZ", "instruction": "Find it.", "query": "shoes"}
    missing = {"task": "Q2I", "instruction": "Find it."}
    for row, reason in ((unknown, f"input row 0: unknown task 'XYZ'; known tasks: {', '.join(task_names())}"),
                        (missing, "input row 0 (task Q2I): missing query")):
        status, text = request(server[0], "/invocations", {"dataframe_records": [row]})
        assert status == 400, text
        body = strict_json(text)
        assert body["error_code"] == "INVALID_PARAMETER_VALUE" and "stack_trace" not in body
        assert body["message"].splitlines()[-1].endswith(reason), body["message"]


def test_the_ui_command_works_from_a_plain_shell(server, store, tmp_path):
    port = free_port()
    with running(ui_command(store[0], port=port), port, "/health", tmp_path / "ui.log"):
        status, text = request(port, "/api/2.0/mlflow/registered-models/get?name=rf-served")
    assert status == 200 and strict_json(text)["registered_model"]["name"] == "rf-served"
