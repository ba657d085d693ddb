"""Counters and histograms in the Prometheus text exposition format (version 0.0.4), written by hand:
a few series do not need a client library."""

import threading
from bisect import bisect_left
from collections import defaultdict

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
ROW_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class Histogram:
    def __init__(self, buckets: tuple[float, ...]):
        self.buckets = buckets
        self.counts = [0] * (len(buckets) + 1)  # the last one is +Inf
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.buckets, value)] += 1
        self.sum += value

    def lines(self, name: str, labels: str) -> list[str]:
        out, cumulative = [], 0
        for bound, count in zip([*map(_number, self.buckets), "+Inf"], self.counts):
            cumulative += count
            out.append(f'{name}_bucket{{{labels}{"," if labels else ""}le="{bound}"}} {cumulative}')
        braces = f"{{{labels}}}" if labels else ""
        return out + [f"{name}_sum{braces} {self.sum!r}", f"{name}_count{braces} {cumulative}"]


class ServerMetrics:
    """What `GET /metrics` reports; updated from the event loop and the model thread, hence the lock."""

    def __init__(self):
        self._lock = threading.Lock()
        self.requests = defaultdict(int)  # (route, method, status) → count
        self.latency = defaultdict(lambda: Histogram(LATENCY_BUCKETS))  # route → seconds
        self.batch_rows = Histogram(ROW_BUCKETS)
        self.batch_adapters = Histogram(ROW_BUCKETS)
        self.decode_rows = Histogram(ROW_BUCKETS)
        self.decode_adapters = Histogram(ROW_BUCKETS)
        self.generated_prompts = 0
        self.generated_tokens = 0
        self.store_stats = None  # called for the adapter store's counts (AdapterStore.stats), if set

    def observe_request(self, route: str, method: str, status: int, seconds: float) -> None:
        with self._lock:
            self.requests[route, method, status] += 1
            self.latency[route].observe(seconds)

    def observe_pass(self, rows: int, adapters: int) -> None:
        with self._lock:
            self.batch_rows.observe(rows)
            self.batch_adapters.observe(adapters)

    def observe_decode_step(self, rows: int, adapters: int) -> None:
        with self._lock:
            self.decode_rows.observe(rows)
            self.decode_adapters.observe(adapters)

    def observe_generation(self, prompts: int, tokens: int) -> None:
        with self._lock:
            self.generated_prompts += prompts
            self.generated_tokens += tokens

    def render(self) -> str:
        with self._lock:
            lines = ["# HELP slimtune_requests_total HTTP requests answered, by route, method and status.",
                     "# TYPE slimtune_requests_total counter"]
            errors = defaultdict(int)
            for (route, method, status), count in sorted(self.requests.items()):
                lines.append(f'slimtune_requests_total{{route="{route}",method="{method}",status="{status}"}} {count}')
                if status >= 400:
                    errors[route, method, "client" if status < 500 else "server"] += count
            lines += ["# HELP slimtune_request_errors_total Requests answered with a 4xx (client) or 5xx (server).",
                      "# TYPE slimtune_request_errors_total counter"]
            for (route, method, kind), count in sorted(errors.items()):
                labels = f'route="{route}",method="{method}",kind="{kind}"'
                lines.append(f"slimtune_request_errors_total{{{labels}}} {count}")
            lines += ["# HELP slimtune_request_duration_seconds Time from request to response.",
                      "# TYPE slimtune_request_duration_seconds histogram"]
            for route, histogram in sorted(self.latency.items()):
                lines += histogram.lines("slimtune_request_duration_seconds", f'route="{route}"')
            lines += ["# HELP slimtune_batch_rows Rows (texts or text windows) per forward pass.",
                      "# TYPE slimtune_batch_rows histogram", *self.batch_rows.lines("slimtune_batch_rows", ""),
                      "# HELP slimtune_batch_adapters Distinct adapters per forward pass.",
                      "# TYPE slimtune_batch_adapters histogram",
                      *self.batch_adapters.lines("slimtune_batch_adapters", ""),
                      "# HELP slimtune_decode_rows Rows (answers being generated) per decoding step.",
                      "# TYPE slimtune_decode_rows histogram", *self.decode_rows.lines("slimtune_decode_rows", ""),
                      "# HELP slimtune_decode_adapters Distinct adapters (or the bare base) per decoding step.",
                      "# TYPE slimtune_decode_adapters histogram",
                      *self.decode_adapters.lines("slimtune_decode_adapters", ""),
                      "# HELP slimtune_generated_prompts_total Prompts answered by the generation endpoints.",
                      "# TYPE slimtune_generated_prompts_total counter",
                      f"slimtune_generated_prompts_total {self.generated_prompts}",
                      "# HELP slimtune_generated_tokens_total New tokens generated (end-of-turn tokens not counted).",
                      "# TYPE slimtune_generated_tokens_total counter",
                      f"slimtune_generated_tokens_total {self.generated_tokens}"]
        if self.store_stats is not None:
            stats = self.store_stats()
            for name, kind, key, text in (
                    ("slimtune_store_adapters_loaded", "gauge", "loaded", "Adapters from --adapter-dir in memory."),
                    ("slimtune_store_hits_total", "counter", "hits", "Requests for a store adapter already loaded."),
                    ("slimtune_store_misses_total", "counter", "misses", "Store adapters loaded on first use."),
                    ("slimtune_store_evictions_total", "counter", "evictions",
                     "Store adapters unloaded, least recently used first, to stay within --max-loaded-adapters.")):
                lines += [f"# HELP {name} {text}", f"# TYPE {name} {kind}", f"{name} {stats[key]}"]
        return "\n".join(lines) + "\n"


def _number(bound: float) -> str:
    return str(int(bound)) if float(bound).is_integer() else repr(bound)
