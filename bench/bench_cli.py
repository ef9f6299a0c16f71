"""CLI start-up: wall time of `keyshift --help` and `keyshift data get` against `python -c pass`.

Like hyperfine: each command runs as a fresh process, the three commands interleaved round by
round (so load changes hit them alike), 10 rounds after 2 warm-up rounds; the median is reported
with its spread (min-max). Targets on an idle machine: --help <= 0.3 s, data get <= 0.6 s. The
floor (`python -c pass`) is the interpreter's own start; the ratio column is command / floor.

The note also gives the median CPU time (user + sys) of each process: on a busy machine wall time
mostly measures the wait for a core, CPU time what the command itself costs.

`python -m bench cli` (alone: KS_BENCH_CLI_ROUNDS=N sets the rounds).
"""

from __future__ import annotations

import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import Report

ROUNDS = int(os.environ.get("KS_BENCH_CLI_ROUNDS", "10"))
WARMUP = 2
TARGETS = {"keyshift --help": 0.3, "keyshift data get": 0.6}


def _run(cmd: list[str], env: dict[str, str]) -> tuple[float, float]:
    """(wall seconds, CPU seconds user+sys) of one fresh process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, check=False)
    elapsed = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise RuntimeError(f"{cmd[1:]} exited {proc.returncode}: {proc.stderr.decode()[-300:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return elapsed, cpu


def run(report: Report) -> None:
    python = sys.executable
    keyshift = str(Path(python).parent / "keyshift")
    with tempfile.TemporaryDirectory(prefix="ks-bench-cli-") as tmp:
        env = {k: v for k, v in os.environ.items() if not k.startswith("KEYSHIFT_")}
        env["KEYSHIFT_HOME"] = str(Path(tmp) / "home")
        # As installed for a user: bytecode cached (an environment that forbids writing it makes
        # every run compile Keyshift's modules from source, which is not what start-up costs).
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        for args in (
            ["init"],
            ["tenant", "create", "bench"],
            ["env", "create", "bench", "bench-env"],
            ["data", "put", "bench-env", "t", "r1", '{"name": "Fabrikam"}'],
        ):
            subprocess.run([keyshift, *args], env=env, check=True, stdout=subprocess.DEVNULL)
        commands = {
            "python -c pass": [python, "-c", "pass"],
            "keyshift --help": [keyshift, "--help"],
            "keyshift data get": [keyshift, "data", "get", "bench-env", "t", "r1"],
        }
        times: dict[str, list[float]] = {name: [] for name in commands}
        cpus: dict[str, list[float]] = {name: [] for name in commands}
        for i in range(WARMUP + ROUNDS):
            for name, cmd in commands.items():
                t, c = _run(cmd, env)
                if i >= WARMUP:
                    times[name].append(t)
                    cpus[name].append(c)
    section = report.section(
        f"CLI start-up (wall seconds, median of {ROUNDS} fresh processes, interleaved)",
        "ratio = command / python -c pass; targets on an idle machine: --help <= 0.3 s, data get <= 0.6 s",
    )
    section.higher_is_better = False
    for name, samples in times.items():
        median = statistics.median(samples)
        note = f"spread {min(samples):.3f}-{max(samples):.3f} s; CPU {statistics.median(cpus[name]):.3f} s"
        if name in TARGETS:
            note += f"; target {TARGETS[name]} s: {'met' if median <= TARGETS[name] else 'NOT met'}"
        section.add("start-up", name, median, "s", baseline=name == "python -c pass", note=note)
