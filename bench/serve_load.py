"""Load test of `slimtune serve` on loopback: throughput, latency percentiles and errors, in one run on the same
requests: mixed-adapter batching against one base pass per adapter and against a single merged adapter; and
(`--generate`) generation tokens/s of concurrent requests (continuous batching) against the same requests sent
one at a time.

Each mode starts its own server (a subprocess: `--batching mixed`, `--batching per-adapter`, then `--merge` with
the first adapter, which gets every request's texts), sends it the same seeded requests from `--concurrency`
clients (each request: one adapter, 1 to `--max-inputs` texts from SST-2 or CoNLL), and reads rows and adapters
per forward pass from its /metrics. Without `--adapter`, it first trains three LoRA adapters briefly on the
bundled MiniLM (two SST-2 with different ranks and targets, one CoNLL NER) into `--work-dir`, reused on later runs.

    python bench/serve_load.py --requests 2000 --concurrency 32
    python bench/serve_load.py --adapter sst2=runs/sst2 --adapter conll=runs/conll --requests 2000
    python bench/serve_load.py --generate --causal-model smollm2-135m --requests 32 --concurrency 8
"""

import argparse
import asyncio
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx

QUICK_ADAPTERS = {  # name → (task, train file, dev file, options)
    "sst2-qv": ("classify", "data/sst2/train_8k.tsv.gz", "data/sst2/dev_1k.tsv.gz", ["--set", "r=8"]),
    "sst2-qkv": ("classify", "data/sst2/train_8k.tsv.gz", "data/sst2/dev_1k.tsv.gz",
                 ["--set", "r=16", "--set", "targets=query,key,value"]),
    "conll": ("ner", "data/conll2003/train.txt.gz", "data/conll2003/valid.txt.gz", ["--set", "r=8"]),
}


def head(source: str, target: Path, records: int) -> str:
    """The first `records` records of a data file (table rows after the header, or blank-line separated
    CoNLL sentences): a small dev set, since these adapters are for load, not for accuracy."""
    import gzip

    text = gzip.open(source, "rt", encoding="utf-8").read()
    if source.endswith(".tsv.gz"):
        lines = text.splitlines()
        kept = "\n".join(lines[: records + 1]) + "\n"
    else:
        kept = "\n\n".join(text.split("\n\n")[:records]) + "\n"
    target.write_text(kept, encoding="utf-8")
    return str(target)


def train_quick_adapters(work_dir: Path, examples: int) -> dict[str, str]:
    from slimtune.cli import main as slimtune

    work_dir.mkdir(parents=True, exist_ok=True)
    dirs = {}
    for name, (task, train, dev, options) in QUICK_ADAPTERS.items():
        out = work_dir / name
        if not (out / "adapter.safetensors").exists():
            print(f"training {name} on {examples} examples ...", file=sys.stderr, flush=True)
            small_dev = head(dev, work_dir / f"{name}-dev{Path(dev).suffixes[0]}", 200)
            code = slimtune(["train", "--task", task, "--method", "lora", "--train", train, "--dev", small_dev,
                             "--out", str(out), "--max-train-examples", str(examples), "--epochs", "1",
                             "--overwrite", *options])
            if code:
                raise SystemExit(f"training {name} failed")
        dirs[name] = str(out)
    return dirs


def sample_texts(seed: int) -> dict[str, list[str]]:
    """Texts per task: SST-2 sentences for classifiers, CoNLL sentences (words joined) for NER."""
    from slimtune.data.conll import read_conll
    from slimtune.data.table import read_labelled_texts

    rng = random.Random(seed)
    sst = [row.text for row in read_labelled_texts("data/sst2/heldout_2k.tsv.gz", None, None)]
    conll = [" ".join(s.words) for s in read_conll("data/conll2003/valid.txt.gz") if len(s.words) > 2]
    return {"classify": rng.sample(sst, min(1000, len(sst))), "ner": rng.sample(conll, min(1000, len(conll)))}


def plan_requests(adapters: dict[str, str], count: int, max_inputs: int, seed: int) -> list[dict]:
    tasks = {name: json.loads((Path(d) / "adapter_config.json").read_text())["task"] for name, d in adapters.items()}
    texts = sample_texts(seed)
    rng = random.Random(seed)
    requests = []
    for _ in range(count):
        name = rng.choice(list(adapters))
        requests.append({"adapter": name, "inputs": rng.sample(texts[tasks[name]], rng.randint(1, max_inputs))})
    return requests


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(adapters: dict[str, str], batching: str, args, extra: tuple[str, ...] = ()
                 ) -> tuple[subprocess.Popen, str]:
    port = free_port()
    argv = [sys.executable, "-m", "slimtune", "serve", "--port", str(port), "--quiet",
            "--max-batch-size", str(args.max_batch_size), "--max-wait-ms", str(args.max_wait_ms), *extra]
    if batching == "merged":
        argv += ["--merge"]
    else:
        argv += ["--batching", batching]
    argv += [a for name, d in adapters.items() for a in ("--adapter", f"{name}={d}")]
    process = subprocess.Popen(argv, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"server exited with code {process.returncode}")
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return process, url
        except httpx.TransportError:
            time.sleep(0.2)
    process.terminate()
    raise SystemExit("server did not start within 300 s")


async def send_all(url: str, requests: list[dict], concurrency: int) -> tuple[list[float], int, float]:
    """(latencies in seconds of the answered requests, error count, wall seconds)."""
    queue = list(reversed(requests))
    latencies, errors = [], 0

    async def client_loop(client):
        nonlocal errors
        while queue:
            body = queue.pop()
            started = time.perf_counter()
            try:
                response = await client.post("/v1/predict", json=body)
                ok = response.status_code == 200
            except httpx.HTTPError:
                ok = False
            if ok:
                latencies.append(time.perf_counter() - started)
            else:
                errors += 1

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as client:
        started = time.perf_counter()
        await asyncio.gather(*(client_loop(client) for _ in range(concurrency)))
        return latencies, errors, time.perf_counter() - started


def pass_stats(url: str) -> dict[str, float]:
    """Forward passes, mean rows and mean adapters per pass, from the server's /metrics."""
    values = {}
    for line in httpx.get(f"{url}/metrics").text.splitlines():
        if line.startswith(("slimtune_batch_rows_", "slimtune_batch_adapters_")) and "_bucket" not in line:
            key, value = line.rsplit(" ", 1)
            values[key] = float(value)
    passes = values["slimtune_batch_rows_count"]
    return {"passes": passes, "rows_per_pass": values["slimtune_batch_rows_sum"] / max(passes, 1),
            "adapters_per_pass": values["slimtune_batch_adapters_sum"] / max(passes, 1)}


def server_cpu_seconds(process: subprocess.Popen) -> float:
    """CPU time the server process has used (user + system, all threads): on a shared machine, less disturbed by
    other processes than wall time."""
    import psutil

    times = psutil.Process(process.pid).cpu_times()
    return times.user + times.system


def run_mode(adapters, batching: str, requests: list[dict], args) -> dict:
    if batching == "merged":  # one adapter folded into its base, answering every request's texts
        first = next(iter(adapters))
        adapters = {first: adapters[first]}
        requests = [{**r, "adapter": first} for r in requests]
    process, url = start_server(adapters, batching, args)
    try:
        asyncio.run(send_all(url, requests[: args.concurrency * 2], args.concurrency))  # warm-up, not counted
        before, cpu = pass_stats(url), server_cpu_seconds(process)
        latencies, errors, seconds = asyncio.run(send_all(url, requests, args.concurrency))
        after, cpu = pass_stats(url), server_cpu_seconds(process) - cpu
    finally:
        process.terminate()
        process.wait(timeout=30)
    passes = after["passes"] - before["passes"]
    rows = after["rows_per_pass"] * after["passes"] - before["rows_per_pass"] * before["passes"]
    adapters_seen = after["adapters_per_pass"] * after["passes"] - before["adapters_per_pass"] * before["passes"]
    cuts = statistics.quantiles(latencies, n=100) if len(latencies) > 1 else [float("nan")] * 99
    texts = sum(len(r["inputs"]) for r in requests)
    return {"batching": batching, "requests": len(requests), "errors": errors, "seconds": seconds,
            "requests_per_s": len(latencies) / seconds, "texts_per_s": texts / seconds,
            "server_cpu_s": cpu, "texts_per_cpu_s": texts / cpu,
            "p50_ms": cuts[49] * 1000, "p95_ms": cuts[94] * 1000, "p99_ms": cuts[98] * 1000,
            "passes": passes, "rows_per_pass": rows / max(passes, 1),
            "adapters_per_pass": adapters_seen / max(passes, 1)}


async def generate_all(url: str, requests: list[dict], concurrency: int) -> tuple[int, int, float]:
    """(completion tokens, errors, wall seconds) of chat completions sent by `concurrency` clients."""
    queue = list(reversed(requests))
    tokens = errors = 0

    async def client_loop(client):
        nonlocal tokens, errors
        while queue:
            response = await client.post("/v1/chat/completions", json=queue.pop())
            if response.status_code == 200:
                tokens += response.json()["usage"]["completion_tokens"]
            else:
                errors += 1

    async with httpx.AsyncClient(base_url=url, timeout=600) as client:
        started = time.perf_counter()
        await asyncio.gather(*(client_loop(client) for _ in range(concurrency)))
        return tokens, errors, time.perf_counter() - started


def run_generation(args) -> list[dict]:
    """Tokens/s of the same greedy chat requests at --concurrency and one at a time, on one server."""
    from slimtune.data.table import read_labelled_texts

    rng = random.Random(args.seed)
    texts = rng.sample([row.text for row in read_labelled_texts("data/sst2/heldout_2k.tsv.gz", None, None)],
                       args.requests)
    models = [args.causal_model] + [name for name in (pair.split("=", 1)[0] for pair in args.adapter)]
    requests = [{"model": models[i % len(models)], "temperature": 0, "max_tokens": args.max_tokens,
                 "messages": [{"role": "user", "content": f"Summarise this review in a sentence: {text}"}]}
                for i, text in enumerate(texts)]
    adapters = dict(pair.split("=", 1) for pair in args.adapter)
    process, url = start_server(adapters, "mixed", args, ("--causal-model", args.causal_model,
                                                          "--max-new-tokens", str(args.max_tokens)))
    results = []
    try:
        asyncio.run(generate_all(url, requests[:2], 2))  # warm-up, not counted
        for concurrency in (1, args.concurrency):
            cpu = server_cpu_seconds(process)
            tokens, errors, seconds = asyncio.run(generate_all(url, requests, concurrency))
            cpu = server_cpu_seconds(process) - cpu
            results.append({"concurrency": concurrency, "requests": len(requests), "errors": errors,
                            "tokens": tokens, "seconds": seconds, "tokens_per_s": tokens / seconds,
                            "server_cpu_s": cpu, "tokens_per_cpu_s": tokens / cpu})
    finally:
        process.terminate()
        process.wait(timeout=30)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--adapter", action="append", default=[], metavar="NAME=DIR",
                        help="adapters to serve (default: three quickly trained LoRA adapters)")
    parser.add_argument("--work-dir", default="runs/serve-bench", help="where the quick adapters are trained")
    parser.add_argument("--train-examples", type=int, default=300, help="training examples per quick adapter")
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--max-inputs", type=int, default=4, help="texts per request: 1 to this many")
    parser.add_argument("--max-batch-size", type=int, default=64)
    parser.add_argument("--max-wait-ms", type=float, default=5.0)
    parser.add_argument("--modes", default="mixed,per-adapter,merged", help="predict modes to run, in order")
    parser.add_argument("--rounds", type=int, default=1,
                        help="run the modes this many times in turn; ratios use each mode's best round (a shared "
                             "machine's load drifts)")
    parser.add_argument("--generate", action="store_true",
                        help="measure generation instead: --concurrency clients against one at a time")
    parser.add_argument("--causal-model", default="smollm2-135m", help="with --generate: the base served bare")
    parser.add_argument("--max-tokens", type=int, default=32, help="with --generate: tokens per answer at most")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    args = parser.parse_args()

    if args.generate:
        results = run_generation(args)
        print(f"{args.requests} greedy chat requests of at most {args.max_tokens} tokens, model(s) "
              f"{args.causal_model} {' '.join(args.adapter)}")
        print("| concurrency | tokens | seconds | tokens/s | tokens/CPU-s | errors |\n|---|---|---|---|---|---|")
        for r in results:
            print(f"| {r['concurrency']} | {r['tokens']} | {r['seconds']:.1f} | {r['tokens_per_s']:.1f} | "
                  f"{r['tokens_per_cpu_s']:.1f} | {r['errors']} |")
        ratio = results[1]["tokens_per_s"] / results[0]["tokens_per_s"]
        print(f"tokens/s ratio concurrency {args.concurrency} / sequential: {ratio:.2f}x (per CPU second: "
              f"{results[1]['tokens_per_cpu_s'] / results[0]['tokens_per_cpu_s']:.2f}x)")
        if args.json:
            Path(args.json).write_text(json.dumps({"settings": vars(args), "results": results, "ratio": ratio},
                                                  indent=2))
        return

    if args.adapter:
        adapters = dict(pair.split("=", 1) for pair in args.adapter)
    else:
        adapters = train_quick_adapters(Path(args.work_dir), args.train_examples)
    requests = plan_requests(adapters, args.requests, args.max_inputs, args.seed)
    results = [run_mode(adapters, mode, requests, args) for _ in range(args.rounds) for mode in args.modes.split(",")]

    print(f"{args.requests} requests, concurrency {args.concurrency}, adapters {', '.join(adapters)}, "
          f"max batch {args.max_batch_size} rows, max wait {args.max_wait_ms:g} ms")
    print("| batching | req/s | texts/s | texts/CPU-s | p50 ms | p95 ms | p99 ms | errors | passes | rows/pass | "
          "adapters/pass |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['batching']} | {r['requests_per_s']:.1f} | {r['texts_per_s']:.1f} | {r['texts_per_cpu_s']:.1f} | "
              f"{r['p50_ms']:.0f} | {r['p95_ms']:.0f} | {r['p99_ms']:.0f} | {r['errors']} | {r['passes']:.0f} | "
              f"{r['rows_per_pass']:.1f} | {r['adapters_per_pass']:.2f} |")
    ratios = {}
    for measure in ("texts_per_s", "texts_per_cpu_s"):
        best = {}
        for r in results:
            best[r["batching"]] = max(best.get(r["batching"], 0.0), r[measure])
        for other in ("per-adapter", "merged"):
            if "mixed" in best and other in best:
                ratios[f"{measure} mixed/{other}"] = best["mixed"] / best[other]
    for name, ratio in ratios.items():
        print(f"ratio of {name} (best round of each): {ratio:.2f}x")
    if args.json:
        Path(args.json).write_text(json.dumps({"settings": vars(args), "results": results, "ratios": ratios},
                                              indent=2))


if __name__ == "__main__":
    main()
