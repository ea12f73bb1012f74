"""HTTP load for the REST benchmarks: `wrk` when installed, else a Python asyncio load generator in its own
process (so it does not share the server's CPU time); both at `CONNECTIONS` concurrent connections, accepting
gzip as HTTP clients do. Each returns requests/s, p50/p99 latency in ms and the failed requests.

`python -m benchmarks.http_load BASE PATHS_FILE SECONDS` is the Python generator's child process."""

from __future__ import annotations

import asyncio
import json
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

CONNECTIONS = 64

WRK_SCRIPT = """
local ids = {}
for line in io.lines("%s") do ids[#ids + 1] = line end
local threads = 0
function setup(thread) threads = threads + 1; thread:set("id", threads) end
function init(args) math.randomseed(os.time() * 100 + id) end
function request()
  return wrk.format("GET", string.format("%s", ids[math.random(#ids)]), {["Accept-Encoding"] = "gzip"})
end
"""


def _ms(text_value: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", text_value.strip()).groups()  # type: ignore[union-attr]
    return float(number) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def run_wrk(base: str, path_template: str, ids: list[str], seconds: int) -> dict[str, Any]:
    """Load with wrk (2 threads, 64 connections); returns requests/s, p50/p99 ms and errors."""
    with tempfile.TemporaryDirectory() as tmp:
        ids_file = Path(tmp) / "ids.txt"
        ids_file.write_text("\n".join(ids) + "\n")
        script = Path(tmp) / "paths.lua"
        script.write_text(WRK_SCRIPT % (ids_file, path_template.replace("{id}", "%s")))
        command = [
            "wrk",
            "-t2",
            f"-c{CONNECTIONS}",
            f"-d{seconds}s",
            "--timeout",
            "10s",
            "--latency",
            "-s",
            str(script),
            base,
        ]
        out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    latency = dict(re.findall(r"^\s+(50|99)(?:\.0+)?%\s+(\S+)\s*$", out, re.MULTILINE))
    if set(latency) != {"50", "99"}:
        raise RuntimeError(f"unexpected wrk output:\n{out}")
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    return {
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),  # type: ignore[union-attr]
        "p50_ms": _ms(latency["50"]),
        "p99_ms": _ms(latency["99"]),
        "non_2xx": int(bad.group(1)) if bad else 0,
        "socket_errors": sum(map(int, errors.groups())) if errors else 0,
        "tool": "wrk",
    }


async def _python_load(base: str, paths: list[str], seconds: float) -> dict[str, Any]:
    latencies: list[float] = []
    non_2xx = 0
    deadline = time.perf_counter() + seconds
    limits = httpx.Limits(max_connections=CONNECTIONS, max_keepalive_connections=CONNECTIONS)
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=30) as client:

        async def worker(n: int) -> None:
            nonlocal non_2xx
            rng = random.Random(n)
            while time.perf_counter() < deadline:
                start = time.perf_counter()
                response = await client.get(rng.choice(paths))
                latencies.append(time.perf_counter() - start)
                non_2xx += response.status_code >= 300

        start = time.perf_counter()
        await asyncio.gather(*(worker(n) for n in range(CONNECTIONS)))
        elapsed = time.perf_counter() - start
    cuts = statistics.quantiles(latencies, n=100)
    return {"rps": len(latencies) / elapsed, "p50_ms": cuts[49] * 1000, "p99_ms": cuts[98] * 1000,
            "non_2xx": non_2xx, "socket_errors": 0, "tool": "python-httpx"}  # fmt: skip


def python_load_child(base: str, paths_file: str, seconds: float) -> None:
    paths = Path(paths_file).read_text().split()
    sys.stdout.write(json.dumps(asyncio.run(_python_load(base, paths, seconds))))


def run_python_load(base: str, path_template: str, ids: list[str], seconds: int) -> dict[str, Any]:
    """The fallback load generator, in its own process so it does not share the server's CPU time."""
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as handle:
        handle.write("\n".join(path_template.replace("{id}", i) for i in ids))
    try:
        out = subprocess.run(
            [sys.executable, "-m", "benchmarks.http_load", base, handle.name, str(seconds)],
            capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
    finally:
        os.unlink(handle.name)
    return json.loads(out)  # type: ignore[no-any-return]


def load(base: str, path_template: str, ids: list[str], seconds: int) -> dict[str, Any]:
    if shutil.which("wrk"):
        return run_wrk(base, path_template, ids, seconds)
    return run_python_load(base, path_template, ids, seconds)


def zipf_draws(ids: list[str], n: int, exponent: float, seed: int = 5) -> list[str]:
    """`n` ids drawn with Zipf weights (the song at rank r weighs 1/r^exponent, the trending songs
    first): a few songs get most requests, as trending songs do."""
    weights = [1 / (rank**exponent) for rank in range(1, len(ids) + 1)]
    return random.Random(seed).choices(ids, weights=weights, k=n)


if __name__ == "__main__":
    python_load_child(sys.argv[1], sys.argv[2], float(sys.argv[3]))
