"""What the server does with hostile or broken input beyond bad JSON: an adapter that fails its checks leaves
nothing behind, no answer holds a bare NaN, slow and vanishing clients are cut off without counting as server
errors, a runtime-loaded adapter cannot point the server at a base outside the allowed directory, and the admin
token need not be on the command line."""

import json
import shutil
import socket
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from slimtune.cli import main
from slimtune.serve.app import SafeJSONResponse
from tests.serve.conftest import running_server

TOKEN = "hard-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def root(adapter_dirs, chat_dir) -> Path:
    """The allowed directory: the served adapters and some broken copies of them."""
    root = Path(chat_dir).parent
    nan = root / "nan-weights"
    if not nan.exists():
        shutil.copytree(adapter_dirs["sst-qv"], nan)
        state = load_file(nan / "adapter.safetensors")
        first = sorted(state)[0]
        state[first] = torch.full_like(state[first], float("nan"))
        save_file(state, nan / "adapter.safetensors")
        for name, edit in (("int-labels", lambda c: c.update(labels=[1, 2])),
                           ("nan-option", lambda c: c["options"].update(alpha=float("nan"))),
                           ("base-etc", lambda c: c.update(base_model="/etc")),
                           ("base-nowhere", lambda c: c.update(base_model="/no/such/base/dir"))):
            source = chat_dir if name.startswith("base-") else adapter_dirs["sst-qv"]
            shutil.copytree(source, root / name)
            config = json.loads((root / name / "adapter_config.json").read_text())
            edit(config)
            (root / name / "adapter_config.json").write_text(json.dumps(config))
    return root


@pytest.fixture(scope="module")
def client(adapter_dirs, chat_dir, root):
    argv = ["--adapter", f"sst-qv={adapter_dirs['sst-qv']}", "--adapter", f"chat={chat_dir}",
            "--admin-token", TOKEN, "--allowed-dir", str(root), "--header-timeout", "0.5", "--body-timeout", "0.5",
            "--keep-alive-timeout", "1"]
    with running_server(argv) as client:
        yield client


@pytest.mark.parametrize("path,message", [
    ("nan-weights", "NaN or infinite values"),
    ("int-labels", "labels.0: Input should be a valid string"),
    ("nan-option", "options.alpha"),
])
def test_an_adapter_that_fails_its_checks_is_a_4xx_and_leaves_nothing(client, path, message):
    before = client.get("/v1/adapters").json()
    response = client.post("/v1/adapters", json={"name": "broken", "path": path}, headers=AUTH)
    assert response.status_code == 422 and message in response.json()["detail"], response.text
    after = client.get("/v1/adapters")
    assert after.status_code == 200 and after.json() == before
    assert client.get("/health").json()["adapters"] == 2
    fine = client.post("/v1/adapters", json={"name": "broken", "path": "sst-qv"}, headers=AUTH)
    assert fine.status_code == 201  # the name was not left reserved
    assert client.delete("/v1/adapters/broken", headers=AUTH).status_code == 200


def test_a_base_outside_the_allowed_directory_is_refused_alike_whether_it_exists_or_not(client):
    answers = [client.post("/v1/adapters", json={"name": "b", "path": path}, headers=AUTH)
               for path in ("base-etc", "base-nowhere")]
    assert [a.status_code for a in answers] == [403, 403]
    details = [a.json()["detail"] for a in answers]
    assert details[0].replace("/etc", "X") == details[1].replace("/no/such/base/dir", "X")
    assert "outside the allowed directory" in details[0]


def test_no_answer_holds_a_bare_nan():
    body = SafeJSONResponse({"scores": {"a": float("nan"), "b": [float("inf"), 0.5]}}).body
    assert json.loads(body, parse_constant=lambda c: pytest.fail(f"bare {c}")) == {"scores": {"a": None,
                                                                                              "b": [None, 0.5]}}


def _address(client) -> tuple[str, int]:
    return client.base_url.host, client.base_url.port


def _closed_within(sock: socket.socket, seconds: float) -> bytes:
    """What the server sends before closing the connection, failing if it is still open after `seconds`."""
    sock.settimeout(seconds)
    received = b""
    try:
        while chunk := sock.recv(4096):
            received += chunk
    except TimeoutError:
        pytest.fail(f"the server kept the connection open for {seconds} s (got {received!r})")
    return received


def test_a_slow_request_head_is_cut_off(client):
    with socket.create_connection(_address(client)) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")  # never finishes its headers
        assert _closed_within(sock, 3) == b""


def test_a_silent_connection_is_cut_off(client):
    with socket.create_connection(_address(client)) as sock:
        assert _closed_within(sock, 3) == b""


def test_a_slow_body_is_answered_408_and_not_counted_as_a_server_error(client):
    with socket.create_connection(_address(client)) as sock:
        sock.sendall(b"POST /v1/predict HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\n"
                     b"content-length: 100\r\n\r\n{\"adapter\"")
        answer = _closed_within(sock, 3)
    assert answer.startswith(b"HTTP/1.1 408") and b"not received within" in answer


def test_an_idle_keep_alive_connection_is_closed(client):
    with socket.create_connection(_address(client)) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        started = time.monotonic()
        assert b"200 OK" in _closed_within(sock, 4)
        assert time.monotonic() - started > 0.8  # kept alive for --keep-alive-timeout, then closed


def test_a_client_that_aborts_mid_body_is_not_a_server_error(client):
    with socket.create_connection(_address(client)) as sock:
        sock.sendall(b"POST /v1/predict HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\n"
                     b"content-length: 1000\r\n\r\n{\"adapter\": \"sst-qv\"")
    time.sleep(0.3)
    metrics = client.get("/metrics").text
    assert 'status="499"' in metrics and 'status="5' not in metrics


def test_the_admin_token_comes_from_a_file_or_the_environment(tiny_model, tmp_path, monkeypatch):
    monkeypatch.delenv("SLIMTUNE_ADMIN_TOKEN", raising=False)
    (tmp_path / "token").write_text("from-a-file\n")
    refused = {"name": "x", "path": "nowhere"}
    with running_server(["--model", tiny_model, "--admin-token-file", str(tmp_path / "token"),
                         "--allowed-dir", str(tmp_path)]) as client:
        assert client.post("/v1/adapters", json=refused, headers={"Authorization": "Bearer nope"}).status_code == 403
        assert client.post("/v1/adapters", json=refused,
                           headers={"Authorization": "Bearer from-a-file"}).status_code == 422  # past the token
    monkeypatch.setenv("SLIMTUNE_ADMIN_TOKEN", "from-env")
    with running_server(["--model", tiny_model, "--allowed-dir", str(tmp_path)]) as client:
        assert client.post("/v1/adapters", json=refused,
                           headers={"Authorization": "Bearer from-env"}).status_code == 422


@pytest.mark.parametrize("argv,message", [
    (["--admin-token-file", "/no/such/token"], "cannot read it"),
    (["--admin-token", "a", "--admin-token-file", "/etc/hostname"], "not both"),
    (["--header-timeout", "0"], "--header-timeout must be a positive number"),
    (["--body-timeout", "nan"], "--body-timeout must be a finite number"),
])
def test_bad_token_and_timeout_arguments(capsys, argv, message):
    assert main(["serve", *argv]) == 2
    assert message in capsys.readouterr().err
