"""Memory probes, each run in a child process so it starts from a fresh interpreter.

``python -m bench.memprobe rss STORE KEYS REQUESTS``
    Open a gate over the SQLite store with ``KEYS`` keys, serve ``REQUESTS``
    requests on distinct keys spread over the whole store (cache on, default
    size) and print the peak resident set size.
``python -m bench.memprobe cache STORE KEYS``
    Serve one request on every key of the store (cache on, sized to hold them
    all) and print how much memory the filled cache holds, by
    :mod:`tracemalloc` difference.

Both print one JSON object on stdout.
"""

from __future__ import annotations

import argparse
import gc
import json
import random
import resource
import sys
import tracemalloc
from pathlib import Path
from typing import Optional

from bench import keydb
from bench.gateapps import gate_app
from bench.timing import check, make_environ, serve
from flask_basic_gate.testing import basic_auth_header


def peak_rss(store: Path, keys: int, requests: int) -> dict[str, int]:
    """Serve ``requests`` requests over the store and return the peak RSS in KiB."""
    app, _ = gate_app(store, "bench_memprobe_rss")
    for index in random.Random(7).sample(range(keys), min(requests, keys)):
        environ = make_environ(basic_auth_header(keydb.key_name(index), keydb.secret_for(index)))
        check(app, environ, "memory probe")
    return {"peak_rss_kib": peak_rss_kib()}


def peak_rss_kib() -> int:
    """This process's peak resident set size in KiB.

    On Linux ``ru_maxrss`` is carried over an ``exec`` from the process that
    spawned this one (the benchmark, already large), so the high-water mark
    of this process's own memory, ``VmHWM``, is read instead where it exists.
    """
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text(encoding="ascii").splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # ru_maxrss is in KiB on Linux and in bytes on macOS.
    return peak // 1024 if sys.platform == "darwin" else peak


def cache_bytes(store: Path, keys: int) -> dict[str, int]:
    """Fill the cache with one entry per key and return the bytes it added."""
    app, gate = gate_app(
        store, "bench_memprobe_cache", BASIC_GATE_CACHE_SIZE=keys, BASIC_GATE_CACHE_TTL=30
    )
    # A failed request first, so connections, compiled statements and the
    # dummy hash exist before the baseline; failures are never cached.
    serve(app, make_environ(basic_auth_header(keydb.key_name(0), "wrong secret")))
    environs = [
        make_environ(basic_auth_header(keydb.key_name(index), keydb.secret_for(index)))
        for index in range(keys)
    ]
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for environ in environs:
        check(app, environ, "cache probe")
    gc.collect()
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    return {"cache_bytes": after - before, "entries": len(gate.state(app).cache)}


def main(argv: Optional[list[str]] = None) -> int:
    """Run one probe and print its result as JSON."""
    parser = argparse.ArgumentParser(prog="python -m bench.memprobe")
    sub = parser.add_subparsers(dest="probe", required=True)
    rss = sub.add_parser("rss")
    rss.add_argument("store", type=Path)
    rss.add_argument("keys", type=int)
    rss.add_argument("requests", type=int)
    cache = sub.add_parser("cache")
    cache.add_argument("store", type=Path)
    cache.add_argument("keys", type=int)
    args = parser.parse_args(argv)
    if args.probe == "rss":
        result = peak_rss(args.store, args.keys, args.requests)
    else:
        result = cache_bytes(args.store, args.keys)
    json.dump(result, sys.stdout)
    print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
