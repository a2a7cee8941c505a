"""wrk as the load generator, when it is installed (``make bench-deps`` installs it).

wrk is C: on this 2-core machine it takes about a fifth of the CPU per request that the Python
generator (``bench/loadgen.py``) takes, so the server keeps more of the machine (the Python one
measured 26% less throughput on the same server). Each cell runs a short warm-up, then the
measured run, with wrk's own latency percentiles. Requests rotate over a list of pre-encoded
bodies through a Lua script. ``server_cpu`` adds up the CPU seconds of a server's processes:
CPU per request stays comparable when other jobs share the machine, throughput does not.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

WRK = "wrk"
_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 6e4}


def available() -> bool:
    return shutil.which(WRK) is not None


def generator_name() -> str:
    """Which load generator the benchmarks use here: wrk when installed, else Python's."""
    if not available():
        return "bench/loadgen.py (Python, asyncio; wrk not installed: make bench-deps)"
    version = subprocess.run([WRK, "--version"], capture_output=True, text=True)
    return (version.stdout or version.stderr).split(" Copyright")[0].strip()


def _lua(bodies: list[bytes], path: str, scratch: Path) -> Path:
    """A wrk script sending ``bodies`` in turn to ``path`` (POST), or GETs when there are none."""
    script = scratch / f"wrk-{abs(hash((path, len(bodies))))}.lua"
    if not bodies:
        script.write_text(f'wrk.method = "GET"\nwrk.path = "{path}"\n')
        return script
    files = []
    for i, body in enumerate(bodies):
        file = scratch / f"{script.stem}-{i}.json"
        file.write_bytes(body)
        files.append(str(file))
    script.write_text(
        "local bodies = {}\n"
        f"for _, name in ipairs({{{', '.join(repr(f) for f in files)}}}) do\n"
        '  local f = io.open(name, "rb"); table.insert(bodies, f:read("*all")); f:close()\n'
        "end\n"
        'local headers = {["Content-Type"] = "application/json"}\n'
        "local i = 0\n"
        "request = function()\n"
        "  i = i + 1\n"
        f'  return wrk.format("POST", "{path}", headers, bodies[(i % #bodies) + 1])\n'
        "end\n")
    return script


def _ms(text: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text).groups()
    return round(float(number) * _UNITS[unit], 2)


def parse(output: str, clients: int, rows_per_request: int = 1) -> dict:
    """wrk's report as the summary ``bench/loadgen.py`` gives (errors: non-2xx answers and
    socket errors)."""
    requests = int(re.search(r"(\d+) requests in", output).group(1))
    seconds_text = re.search(r"requests in ([\d.]+)(\w+),", output).groups()
    seconds = _ms("".join(seconds_text)) / 1000
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    sockets = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)",
                        output)
    errors = (int(non_2xx.group(1)) if non_2xx else 0) + (
        sum(int(n) for n in sockets.groups()) if sockets else 0)
    ok = requests - (int(non_2xx.group(1)) if non_2xx else 0)
    percentiles = dict(re.findall(r"^\s+(50|99)%\s+([\d.]+\w+)", output, re.MULTILINE))
    return {"clients": clients, "req_s": round(ok / seconds, 1),
            "rows_s": round(ok * rows_per_request / seconds),
            "p50_ms": _ms(percentiles["50"]), "p99_ms": _ms(percentiles["99"]),
            "errors": errors, "requests": requests}


def command(port: int, path: str, bodies: list[bytes], clients: int, seconds: float,
            scratch: Path, timeout_s: int = 30) -> list[str]:
    """wrk with ``clients`` keep-alive connections over 2 threads (1 with one client), closed
    loop, reporting latency percentiles."""
    script = _lua(bodies, path, scratch)
    return [WRK, "-t", str(min(2, clients)), "-c", str(clients), "--timeout", f"{timeout_s}s",
            "-s", str(script), "-d", f"{max(1, round(seconds))}s", "--latency",
            f"http://127.0.0.1:{port}{path}"]


def run_wrk(port: int, path: str, bodies: list[bytes], clients: int, seconds: float,
            scratch: Path, warmup: float = 2.0, rows_per_request: int = 1) -> dict:
    """A warm-up run (unless ``warmup`` is 0), then the measured one: its summary."""
    if warmup > 0:
        subprocess.run(command(port, path, bodies, clients, warmup, scratch),
                       capture_output=True, check=True)
    done = subprocess.run(command(port, path, bodies, clients, seconds, scratch),
                          capture_output=True, text=True, check=True)
    return parse(done.stdout, clients, rows_per_request)


def server_cpu(pid: int) -> float:
    """CPU seconds (user + system) used so far by process ``pid`` and its descendants."""
    tick = os.sysconf("SC_CLK_TCK")
    parent: dict[int, int] = {}
    used: dict[int, float] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        process = int(stat.parent.name)
        parent[process] = int(fields[1])
        used[process] = (int(fields[11]) + int(fields[12])) / tick
    tree = {pid}
    grown = True
    while grown:
        children = {p for p, pp in parent.items() if pp in tree} - tree
        grown = bool(children)
        tree |= children
    return sum(used.get(p, 0.0) for p in tree)
