"""`slimtune serve`: any number of adapters behind an HTTP API, classify/ner ones sharing one base model."""

import argparse
import os
import sys

from slimtune.cli.run_config import add_config_flag

ADMIN_TOKEN_ENV = "SLIMTUNE_ADMIN_TOKEN"

HELP = f"""Serve saved adapters over HTTP (FastAPI + uvicorn). Adapters whose method has per-row
updates (LoRA and others) share one copy of their base: rows of different adapters run in one
pass, grouped by adapter; adapters of other methods run on their own copy. Classify/ner adapters
share an encoder base; causal-lm adapters share the causal LM they record, and their generation
requests are batched together step by step (continuous batching).

endpoints:
  POST /v1/predict          {{"adapter": NAME, "inputs": [TEXT, ...]}}  (classify, ner)
  POST /v1/generate         {{"adapter": NAME, "prompts": [TEXT, ...], "max_new_tokens": N}}  (causal-lm;
                            optional "sample": true with "temperature", "top_p", "top_k", "seed")
  OpenAI-compatible         GET /v1/models, POST /v1/chat/completions, /v1/completions ("model": an
                            adapter or base; "stream": true for Server-Sent Events), /v1/embeddings
  GET  /v1/adapters         the loaded adapters
  POST /v1/adapters         {{"name": NAME, "path": DIR}}  (admin token; DIR inside --allowed-dir)
  DELETE /v1/adapters/NAME  (admin token); also vLLM's POST /v1/load_lora_adapter, /v1/unload_lora_adapter
  GET  /health, GET /metrics (Prometheus text), GET /docs and /redoc (offline), GET / (playground)

A multi-task adapter given as NAME=DIR serves each of its tasks as the adapter NAME.TASK.
With --adapter-dir DIR, any adapter directory in DIR is served by its name, loaded on first use
(at most --max-loaded-adapters at once, least recently used evicted).

The admin token is --admin-token-file, --admin-token or the environment variable {ADMIN_TOKEN_ENV};
without one, adapters cannot be loaded or unloaded while the server runs.

examples:
  slimtune serve --adapter sst2=runs/sst2 --adapter conll=runs/conll --adapter chat=runs/smol
  curl -s localhost:8000/v1/predict -d '{{"adapter": "sst2", "inputs": ["a gripping film"]}}' \\
      -H 'content-type: application/json'
  curl -s localhost:8000/v1/chat/completions -H 'content-type: application/json' \\
      -d '{{"model": "chat", "messages": [{{"role": "user", "content": "Name a colour."}}]}}'
"""


def register(sub) -> None:
    from slimtune.cli.common import add_backend_flag, add_int8_flags, add_threads_flag

    p = sub.add_parser("serve", help="serve adapters over HTTP", description=HELP,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--adapter", action="append", default=[], metavar="NAME=DIR", help="an adapter to load, repeatable")
    p.add_argument("--model", metavar="ID|PATH", help="base model of classify/ner adapters (default: the one the "
                                                       "first of them records); causal-lm adapters use their own")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--admin-token", metavar="TOKEN", help=f"bearer token for loading and unloading adapters "
                                                          f"(default: ${ADMIN_TOKEN_ENV}; on a shared machine prefer "
                                                          "the file or the environment: argv is visible to all)")
    p.add_argument("--admin-token-file", metavar="PATH", help="read the admin token from this file (its first line)")
    p.add_argument("--allowed-dir", metavar="DIR", default=".",
                   help="POST /v1/adapters loads only from inside this directory (default: the current one)")
    p.add_argument("--max-batch-size", type=int, default=32, metavar="ROWS", help="rows per forward pass")
    p.add_argument("--max-wait-ms", type=float, default=5.0, metavar="MS",
                   help="how long the first request of a batch waits for others")
    p.add_argument("--max-inputs", type=int, default=64, help="texts (or prompts) per request")
    p.add_argument("--max-chars", type=int, default=2000, help="characters per text")
    p.add_argument("--max-new-tokens", type=int, default=256, help="most new tokens a generate request may ask for")
    p.add_argument("--batching", choices=("mixed", "per-adapter"), default="mixed",
                   help="mixed: rows of all LoRA adapters share each base pass; per-adapter: one pass per adapter")
    p.add_argument("--merge", action="store_true",
                   help="merge a single LoRA adapter into its own copy of the base (no per-row overhead)")
    add_int8_flags(p, quantize_dest="inference_int8", quantize_use="--inference-int8",
                   inference_help="CPU dynamic int8 linear layers: the shared base (LoRA deltas stay fp32, mixed "
                                  "batches still work) and every own copy (merged first where the method allows)")
    add_backend_flag(p, "run classify and ner adapters with PyTorch (shared base, mixed batches), or each merged, "
                        "exported to ONNX and run by ONNX Runtime in fp32 or dynamic int8 (extra `onnx`); "
                        "causal-lm adapters always run with PyTorch")
    p.add_argument("--adapter-dir", metavar="DIR", help="serve any adapter directory inside DIR by its name, "
                                                         "loaded on first use (the adapter store)")
    p.add_argument("--max-loaded-adapters", type=int, metavar="N",
                   help="with --adapter-dir: most store adapters kept loaded; the least recently used idle one "
                        "is evicted")
    p.add_argument("--causal-model", action="append", default=[], metavar="ID|PATH",
                   help="a causal LM to serve bare (OpenAI `model` = this spec), besides adapters' bases; repeatable")
    p.add_argument("--quiet", action="store_true", help="no access log line per request")
    p.add_argument("--header-timeout", type=float, default=10.0, metavar="S",
                   help="close a connection whose request line and headers take longer (default 10)")
    p.add_argument("--body-timeout", type=float, default=30.0, metavar="S",
                   help="answer 408 to a request whose body takes longer (default 30)")
    p.add_argument("--keep-alive-timeout", type=int, default=5, metavar="S",
                   help="close an idle keep-alive connection after this long (default 5)")
    add_threads_flag(p)
    add_config_flag(p)
    p.set_defaults(handler=run)


def run(args) -> int:
    server = build_server(args)
    config = server.config
    print(f"slimtune serve: {len(config.app.state.server.registry.adapters)} adapter(s) on "
          f"http://{config.host}:{config.port}", file=sys.stderr)
    server.run()
    return 0


def build_server(args):
    """The uvicorn server for parsed `serve` arguments, with the start-up adapters loaded."""
    from pathlib import Path

    import uvicorn

    from slimtune.errors import SlimtuneError
    from slimtune.serve.app import ServeSettings, build_app
    from slimtune.serve.guards import timed_h11
    from slimtune.serve.registry import AdapterRegistry
    from slimtune.serve.schemas import Limits

    adapters = [_name_and_dir(pair) for pair in args.adapter]
    names = [name for name, _ in adapters]
    if len(set(names)) != len(names):
        raise SlimtuneError(f"adapter names must differ: {names}")
    if args.merge and len(adapters) != 1:
        raise SlimtuneError("--merge serves exactly one adapter")
    for flag in ("max_batch_size", "max_inputs", "max_chars", "max_new_tokens"):
        if getattr(args, flag) < 1:
            raise SlimtuneError(f"--{flag.replace('_', '-')} must be at least 1")
    if args.max_wait_ms < 0:
        raise SlimtuneError("--max-wait-ms cannot be negative")
    for flag in ("header_timeout", "body_timeout", "keep_alive_timeout"):
        if not 0 < getattr(args, flag) < float("inf"):
            raise SlimtuneError(f"--{flag.replace('_', '-')} must be a positive number of seconds")
    admin_token = _admin_token(args)
    adapter_dir = Path(args.adapter_dir) if args.adapter_dir else None
    if adapter_dir is not None and not adapter_dir.is_dir():
        raise SlimtuneError(f"--adapter-dir {args.adapter_dir}: no such directory")
    if args.max_loaded_adapters is not None and (args.max_loaded_adapters < 1 or adapter_dir is None):
        raise SlimtuneError("--max-loaded-adapters must be at least 1, and needs --adapter-dir")
    allowed = Path(args.allowed_dir)
    if not allowed.is_dir():
        raise SlimtuneError(f"--allowed-dir {args.allowed_dir}: no such directory")
    registry = AdapterRegistry(args.model, args.inference_int8, args.backend)
    served = [(served_name, task_name, directory) for name, directory in adapters
              for served_name, task_name in registry.served_tasks(name, directory)]
    taken = [served_name for served_name, _, _ in served]
    if len(set(taken)) != len(taken):
        raise SlimtuneError(f"adapter names must differ (a multi-task adapter NAME serves NAME.TASK): {taken}")
    for spec in args.causal_model:
        registry.lm_bases.get(spec)
    for served_name, task_name, directory in served:
        adapter = registry.prepare(served_name, directory, merge=args.merge, task_name=task_name)
        registry.install(adapter)  # no batches run yet: installing outside the model thread is safe
        registry.register(adapter)
    settings = ServeSettings(
        limits=Limits(max_inputs=args.max_inputs, max_chars=args.max_chars, max_new_tokens=args.max_new_tokens),
        admin_token=admin_token, allowed_dir=allowed, max_batch_size=args.max_batch_size,
        max_wait_ms=args.max_wait_ms, mixed_batches=args.batching == "mixed", body_timeout=args.body_timeout,
        adapter_dir=adapter_dir, max_loaded_adapters=args.max_loaded_adapters, access_log=not args.quiet,
    )
    app = build_app(registry, settings)
    if not args.quiet:
        _log_access_to_stderr()
    return uvicorn.Server(uvicorn.Config(app, host=args.host, port=args.port, log_level="warning",
                                         access_log=False, lifespan="on", http=timed_h11(args.header_timeout),
                                         timeout_keep_alive=args.keep_alive_timeout,
                                         h11_max_incomplete_event_size=MAX_HEAD_BYTES))


def _log_access_to_stderr() -> None:
    import logging

    logger = logging.getLogger("slimtune.serve.access")
    logger.setLevel(logging.INFO)
    logger.propagate = False
    if not any(getattr(handler, "slimtune_access", False) for handler in logger.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
        handler.slimtune_access = True
        logger.addHandler(handler)


MAX_HEAD_BYTES = 64 * 1024  # a request line and headers longer than this are refused by h11


def _admin_token(args) -> str | None:
    """The admin token from --admin-token, --admin-token-file or the environment (at most one of the flags)."""
    from slimtune.errors import SlimtuneError

    if args.admin_token and args.admin_token_file:
        raise SlimtuneError("give --admin-token or --admin-token-file, not both")
    if args.admin_token_file:
        try:
            with open(args.admin_token_file, encoding="utf-8") as f:
                token = f.readline().strip()
        except (OSError, UnicodeDecodeError) as e:
            raise SlimtuneError(f"--admin-token-file {args.admin_token_file}: cannot read it "
                                f"({getattr(e, 'strerror', None) or e})") from None
        if not token:
            raise SlimtuneError(f"--admin-token-file {args.admin_token_file}: the file is empty")
        return token
    return args.admin_token or os.environ.get(ADMIN_TOKEN_ENV, "").strip() or None


def _name_and_dir(pair: str) -> tuple[str, str]:
    import re

    from slimtune.errors import SlimtuneError
    from slimtune.serve.schemas import NAME_PATTERN

    name, sep, directory = pair.partition("=")
    if not sep or not directory:
        raise SlimtuneError(f"--adapter expects NAME=DIR, got {pair!r}")
    if not re.fullmatch(NAME_PATTERN, name):
        raise SlimtuneError(f"adapter name {name!r} must be letters, digits, '.', '_' or '-' (at most 64)")
    return name, directory
