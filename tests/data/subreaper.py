#!/usr/bin/env python3
"""subreaper.py RUN_HERD: `RUN_HERD start`, then `RUN_HERD stop`, as a parent
that does not reap the servers, so they stay zombies once they exit (as under
a PID 1 that reaps slowly). Prints stop's output, its status, then each
server's state in /proc as `STATE NAME PID S` (Z for a zombie), then reaps.

Used by tests/tooling.rs; needs Linux (prctl PR_SET_CHILD_SUBREAPER).
"""
import ctypes
import os
import subprocess
import sys

PR_SET_CHILD_SUBREAPER = 36


def state(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(") ", 1)[1].split()[0]
    except (OSError, IndexError):
        return "gone"


def main():
    run_herd = sys.argv[1]
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        print(f"SKIP prctl(PR_SET_CHILD_SUBREAPER): errno {ctypes.get_errno()}")
        return 0
    start = subprocess.run([run_herd, "start"], capture_output=True, text=True)
    print(start.stdout + start.stderr, end="")
    if start.returncode != 0:
        print(f"START FAILED {start.returncode}")
        return 1
    run_dir = os.path.join(os.environ["HERD_DIR"], "run")
    pids = {}
    for file in sorted(os.listdir(run_dir)):
        with open(os.path.join(run_dir, file)) as f:
            pids[file[: -len(".pid")]] = int(f.read().split()[0])
    # Only stop is waited for (subprocess reaps just its own child).
    stop = subprocess.run([run_herd, "stop"], capture_output=True, text=True)
    print(stop.stdout + stop.stderr, end="")
    print(f"STOP STATUS {stop.returncode}")
    for name, pid in pids.items():
        print(f"STATE {name} {pid} {state(pid)}")
    sys.stdout.flush()
    # Now reap every child (bounded: each wait ends one, or there are none).
    for _ in range(1000):
        try:
            os.waitpid(-1, 0)
        except ChildProcessError:
            break
    return 0


if __name__ == "__main__":
    sys.exit(main())
