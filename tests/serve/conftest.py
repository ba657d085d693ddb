"""Adapters for serving, made without training (random non-zero updates, so every delta shows): classify and
ner ones on the tiny BERT, a causal-lm one on the tiny Llama; and the real uvicorn server on a free loopback port
in a background thread."""

import socket
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
import torch

from tests.conftest import TASK_LABELS

# name → (task, method, options): LoRA adapters with different tasks, ranks and targets, and one that cannot
# share the base pass (prefix tuning changes every attention layer).
ADAPTERS = {
    "sst-qv": ("classify", "lora", {"r": "4", "targets": "query,value"}),
    "sst-dense": ("classify", "lora", {"r": "2", "alpha": "8", "targets": "key,dense"}),
    "ner-qv": ("ner", "lora", {"r": "3"}),
    "sst-prefix": ("classify", "prefix", {}),
}


def make_adapter(run_dir, model_dir: str, task_name: str, method_name: str, options: dict, seed: int,
                 pooling: str | None = None) -> str:
    """Save an adapter whose trained parameters are random, laid out as `slimtune train` writes it."""
    from slimtune.runs.adapter_files import run_config, save_adapter
    from slimtune.methods.adaptation import attach
    from slimtune.methods.registry import create_method
    from slimtune.models.loading import fingerprint
    from slimtune.tasks import get_task

    task, method = get_task(task_name), create_method(method_name, options)
    backbone = task.load_backbone(model_dir, pooling=pooling)
    base_fingerprint = fingerprint(backbone.model)
    labels = TASK_LABELS[task_name]
    torch.manual_seed(seed)
    model = task.build_model(backbone, labels)
    with torch.no_grad():
        for p in attach(model, method):
            p.add_(torch.randn_like(p) * 0.3)
    settings = {"scheme": "iob2"} if task_name == "ner" else {}
    config = run_config(task, method, model_dir, base_fingerprint, backbone, labels, settings)
    save_adapter(run_dir, model, method, config)
    return str(run_dir)


@pytest.fixture(scope="session")
def adapter_dirs(tiny_model, tmp_path_factory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("served")
    return {name: make_adapter(root / name, tiny_model, task, method, options, seed)
            for seed, (name, (task, method, options)) in enumerate(ADAPTERS.items())}


@pytest.fixture(scope="session")
def chat_dir(tiny_lm, adapter_dirs) -> str:
    """A causal-lm LoRA adapter on the tiny Llama, next to the others (so --allowed-dir covers it)."""
    root = Path(next(iter(adapter_dirs.values()))).parent
    return make_adapter(root / "chat", tiny_lm, "causal-lm", "lora", {"r": "4"}, seed=11)


@pytest.fixture(scope="session")
def chat_b_dir(tiny_lm, chat_dir) -> str:
    """A second causal-lm LoRA adapter on the tiny Llama (another rank and seed), beside the first."""
    return make_adapter(Path(chat_dir).parent / "chat-b", tiny_lm, "causal-lm", "lora", {"r": "2"}, seed=12)


@contextmanager
def running_server(argv: list[str]):
    """Start `slimtune serve ARGV` (parsed by the real CLI) on a free loopback port; yields an httpx client."""
    from slimtune.cli import build_parser
    from slimtune.cli.serve import build_server

    server = build_server(build_parser().parse_args(["serve", *argv]))
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "server did not start"
        time.sleep(0.01)
    host, port = sock.getsockname()
    try:
        with httpx.Client(base_url=f"http://{host}:{port}", timeout=30) as client:
            yield client
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
