"""`songpop up` on an empty database, as `make run` starts it: seconds from the command's start to the
first answer of the dashboard page, of `GET /v1/trending` (a 503 saying what it waits for, then 200), of
`/readyz` turning ready, and to the first real forecasts, next to the CPU seconds the process had used by
its first answer (what a quiet machine would take). Each address is asked every `--interval` seconds, as
a page left open and a client retrying would. Run: `make bench-up`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import tempfile
import time
from pathlib import Path

import httpx

from tests.cli_support import up_env

TARGET_SECONDS = 5.0


def cpu_seconds(pid: int) -> float:
    """User and system CPU seconds process `pid` has used so far (Linux: /proc/PID/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Timeline:
    """When each thing was first seen, in seconds since the start."""

    def __init__(self) -> None:
        self.started = time.monotonic()
        self.seen: dict[str, float] = {}
        self.cpu_at_first_answer: float | None = None

    def note(self, what: str) -> None:
        self.seen.setdefault(what, time.monotonic() - self.started)


async def watch(env: dict[str, str], timeline: Timeline, pid: int, *, interval: float) -> None:
    """Ask the dashboard page, /v1/trending and /readyz until real forecasts are served."""
    dashboard = f"http://127.0.0.1:{env['SONGPOP_DASHBOARD_PORT']}/"
    predictor = f"http://127.0.0.1:{env['SONGPOP_PREDICTOR_PORT']}"
    async with httpx.AsyncClient(timeout=30) as http:
        while "forecasts served" not in timeline.seen:
            for name, url in (("dashboard page", dashboard), ("/v1/trending", f"{predictor}/v1/trending"),
                              ("/readyz", f"{predictor}/readyz")):  # fmt: skip
                try:
                    answer = await http.get(url)
                except httpx.TransportError:
                    continue
                if name == "dashboard page" and timeline.cpu_at_first_answer is None:
                    timeline.cpu_at_first_answer = cpu_seconds(pid)
                timeline.note(f"{name}: first answer ({answer.status_code})")
                if answer.status_code == 200:
                    timeline.note(f"{name}: first 200")
                if name == "/v1/trending" and answer.status_code == 200 and answer.json()["count"]:
                    timeline.note("forecasts served")
            await asyncio.sleep(interval)


async def run(weeks: int, interval: float, within: float, log: Path | None) -> Timeline:
    with tempfile.TemporaryDirectory(prefix="bench-up-") as folder:
        env = up_env(Path(folder))  # embedded defaults in a fresh folder, on free ports
        timeline = Timeline()
        output = log.open("w") if log else asyncio.subprocess.DEVNULL
        stack = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "services.cli", "up", "--weeks", str(weeks),
            env=env, stdout=output, stderr=output,
        )  # fmt: skip
        try:
            await asyncio.wait_for(watch(env, timeline, stack.pid, interval=interval), within)
        finally:
            stack.send_signal(signal.SIGINT)
            await stack.wait()
    return timeline


def report(timeline: Timeline, weeks: int) -> None:
    print(f"songpop up --weeks {weeks} on an empty database (seconds from the command's start):")
    for what, at in sorted(timeline.seen.items(), key=lambda item: item[1]):
        print(f"  {at:7.2f}  {what}")
    first_page = timeline.seen.get("dashboard page: first 200", float("inf"))
    print(f"first dashboard page {first_page:.2f} s (target < {TARGET_SECONDS:.0f} s); CPU used by then: "
          f"{timeline.cpu_at_first_answer or 0:.2f} s; load average {os.getloadavg()[0]:.1f}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--weeks", type=int, default=120, help="weeks of demo history (as `make run`)")
    parser.add_argument("--interval", type=float, default=0.5, help="seconds between the rounds of requests")
    parser.add_argument("--within", type=float, default=900, help="give up after this many seconds")
    parser.add_argument("--log", type=Path, help="keep the stack's output in this file")
    args = parser.parse_args()
    report(asyncio.run(run(args.weeks, args.interval, args.within, args.log)), args.weeks)


if __name__ == "__main__":
    main()
