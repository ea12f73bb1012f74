"""`python -m services.emulator`: run the emulator (the same as `songpop emulator`)."""

from __future__ import annotations

import argparse
import datetime as dt
import logging

from services.emulator import run


def main() -> None:
    """Parse the command line and serve."""
    parser = argparse.ArgumentParser(description="Spotify Web API emulator")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8002)
    parser.add_argument("--mode", choices=["development", "extended"], default="development")
    parser.add_argument("--latency-ms", type=float, default=0.0)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--n-tracks", type=int, default=20_000)
    parser.add_argument("--start-week", type=dt.date.fromisoformat, default=None, help="YYYY-MM-DD")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    run(
        args.host, args.port, args.mode, args.latency_ms, args.seed, args.n_tracks, start_week=args.start_week
    )


if __name__ == "__main__":
    main()
