#!/usr/bin/env python3
"""server.py: the course's command line, `python3 server.py NAME`, for proxy-herd.

The course's grading scripts start each server as `python3 server.py NAME`
and talk to it on the port their own table gives NAME. This shim execs the
Rust binary in its place (same pid, so the graders' kills reach it), with a
herd file whose client ports match the script's table.

    PROXY_HERD_CONFIG   herd file (default: docs/herds/default.herd)
    PROXY_HERD_BIN      the binary (default: target/release/proxy-herd)

Extra arguments after NAME are passed through.
"""
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main():
    if len(sys.argv) < 2:
        print("usage: server.py NAME [OPTIONS...]", file=sys.stderr)
        sys.exit(2)
    name, extra = sys.argv[1], sys.argv[2:]
    config = os.environ.get("PROXY_HERD_CONFIG", os.path.join(ROOT, "docs/herds/default.herd"))
    binary = os.environ.get("PROXY_HERD_BIN", os.path.join(ROOT, "target/release/proxy-herd"))
    if not os.access(binary, os.X_OK):
        print(f"server.py: {binary} is missing: run `cargo build --release` first", file=sys.stderr)
        sys.exit(2)
    log = os.path.join(ROOT, "logs", f"{name}.log")
    os.execv(binary, [binary, "-c", config, "-l", log, *extra, name])


if __name__ == "__main__":
    main()
