#!/usr/bin/env python3
"""Start one hotplug call per vif, N at a time, as a toolstack does, and time the whole run.

    drive.py SCRIPT COMMAND COUNT PARALLEL   -> prints "MILLISECONDS FAILURES"

Vif i is backend/vif/i/0 (vif<i>.0); the rest of the environment is passed on. Each call is
started with posix_spawn (vfork + exec), so the driver's own cost per call is small and
measurable: run it with a program that does nothing to see it (benches/bench.sh does).
"""
import os
import sys
import time

script, command, count, parallel = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
base = dict(os.environ)
devnull = os.open("/dev/null", os.O_WRONLY)
quiet = [(os.POSIX_SPAWN_DUP2, devnull, 1), (os.POSIX_SPAWN_DUP2, devnull, 2)]
running = {}
failures = 0


def reap():
    global failures
    pid, status = os.wait()
    vif = running.pop(pid)
    if status != 0:
        failures += 1
        print(f"{vif} {command} failed", file=sys.stderr)


start = time.perf_counter()
for i in range(1, count + 1):
    if len(running) >= parallel:
        reap()
    env = dict(base, XENBUS_PATH=f"backend/vif/{i}/0", vif=f"vif{i}.0")
    pid = os.posix_spawn(script, [script, command, "type_if=vif"], env, file_actions=quiet)
    running[pid] = f"vif{i}.0"
while running:
    reap()
print(f"{(time.perf_counter() - start) * 1000:.0f} {failures}")
