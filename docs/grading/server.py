#!/usr/bin/env python3
"""server.py: the course's command line, `python3 server.py NAME`, for proxy-herd.

The course's grading scripts start each server as `python3.X server.py NAME`
(nothing else: no options, no environment of their own) and talk to it on
the port their own table gives NAME. This shim execs the Rust binary in its
place, so the pid the grader started, and later kills by port, is the server.

Install a copy that knows where the repository is (the recipe is in
docs/grading.md):

    python3 docs/grading/server.py --install GRADER/sample_submission \\
        --herd docs/herds/graders/cs131-ta.herd

Settings, first found wins (every path is made absolute):

    the repository   $PROXY_HERD_ROOT; the one written by --install; the one
                     this file lies in (run in place or through a symlink)
    the binary       $PROXY_HERD_BIN; REPOSITORY/target/release/proxy-herd
                     (places-offline is the one beside it)
    the herd file    $PROXY_HERD_CONFIG; the one written by --install;
                     REPOSITORY/docs/herds/default.herd
    extra options    $PROXY_HERD_ARGS (split as a shell would), then any
                     arguments after NAME
    Places           $PLACES_API_KEY; when unset or empty, the offline service
                     (places-offline) on 127.0.0.1:$PLACES_OFFLINE_PORT
                     (default 18443) is reused, or started in the background,
                     and the server is pointed at it with the repository's CA

The server's log is logs/NAME.log beside this file; the offline service's
output is logs/places-offline.stderr and its pid run/places-offline.pid.
`server.py --stop-offline` stops an offline service this shim started.

Python 3.8 or later, standard library only.
"""
import os
import shlex
import signal
import socket
import subprocess
import sys
import time

# Filled in by --install, so that a copy finds the repository it came from.
REPOSITORY = None
HERD = None

HERE = os.path.dirname(os.path.abspath(__file__))
OFFLINE_KEY = "offline-dev-key"
OFFLINE_LEGACY_PATH = "/maps/api/place/nearbysearch/json"
OFFLINE_NEW_PATH = "/v1/places:searchNearby"
# The offline service is listening well within this on an idle machine.
OFFLINE_START_SECONDS = 10.0


def fail(message, status=2):
    print("server.py: " + message, file=sys.stderr)
    sys.exit(status)


def is_repository(path):
    return os.path.isfile(os.path.join(path, "Cargo.toml")) and os.path.isfile(
        os.path.join(path, "run_herd.sh")
    )


def repository():
    """The proxy-herd checkout, as an absolute path."""
    root = os.environ.get("PROXY_HERD_ROOT") or REPOSITORY
    if root:
        root = os.path.abspath(root)
        if not is_repository(root):
            fail(root + " is not a proxy-herd repository (no Cargo.toml and run_herd.sh)")
        return root
    # In place (docs/grading/server.py) or through a symlink to it.
    real = os.path.dirname(os.path.realpath(__file__))
    root = os.path.dirname(os.path.dirname(real))
    if is_repository(root):
        return root
    fail(
        "cannot tell where the proxy-herd repository is: this copy of server.py "
        "was not made by `python3 REPOSITORY/docs/grading/server.py --install "
        + HERE
        + "`; do that, or set PROXY_HERD_ROOT=REPOSITORY"
    )


def port_open(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def offline_port():
    text = os.environ.get("PLACES_OFFLINE_PORT", "18443")
    if not text.isdigit() or not 0 < int(text) < 65536:
        fail("PLACES_OFFLINE_PORT: expected a port number, got %r" % text)
    return int(text)


def ensure_offline(root, bin_dir, port):
    """Reuses the offline Places service on `port`, or starts it detached."""
    if port_open(port):
        return
    binary = os.path.join(bin_dir, "places-offline")
    if not os.access(binary, os.X_OK):
        fail(binary + " is missing: run `cargo build --release` in " + root)
    os.makedirs(os.path.join(HERE, "logs"), exist_ok=True)
    os.makedirs(os.path.join(HERE, "run"), exist_ok=True)
    errpath = os.path.join(HERE, "logs", "places-offline.stderr")
    with open(errpath, "ab") as err, open(os.devnull, "rb") as null:
        # A session of its own: it outlives this shim (which becomes the
        # server) and is not in the process group a terminal or nohup signals.
        child = subprocess.Popen(
            [binary, "--listen", "127.0.0.1:%d" % port],
            stdin=null,
            stdout=err,
            stderr=err,
            cwd=HERE,
            start_new_session=True,
        )
    deadline = time.monotonic() + OFFLINE_START_SECONDS
    while not port_open(port):
        if child.poll() is not None:
            # Another shim may have started one on the port meanwhile.
            if port_open(port):
                return
            fail("places-offline exited at once (status %s); see %s" % (child.returncode, errpath), 1)
        if time.monotonic() > deadline:
            fail("places-offline is not listening on 127.0.0.1:%d; see %s" % (port, errpath), 1)
        time.sleep(0.05)
    with open(os.path.join(HERE, "run", "places-offline.pid"), "w") as f:
        f.write("%d\n" % child.pid)


def has_option(args, name):
    return any(a == name or a.startswith(name + "=") for a in args)


def places_api_new(args):
    for i, a in enumerate(args):
        if a == "--places-api" and i + 1 < len(args):
            return args[i + 1] == "new"
        if a.startswith("--places-api="):
            return a.split("=", 1)[1] == "new"
    return False


def run(name, after):
    root = repository()
    binary = os.path.abspath(
        os.environ.get("PROXY_HERD_BIN") or os.path.join(root, "target", "release", "proxy-herd")
    )
    if not os.access(binary, os.X_OK):
        hint = "" if os.environ.get("PROXY_HERD_BIN") else ": run `cargo build --release` in " + root
        fail(binary + " is missing" + hint)
    config = os.path.abspath(
        os.environ.get("PROXY_HERD_CONFIG") or HERD or os.path.join(root, "docs", "herds", "default.herd")
    )
    try:
        extra = shlex.split(os.environ.get("PROXY_HERD_ARGS", "")) + after
    except ValueError as e:
        fail("PROXY_HERD_ARGS: %s" % e)
    args = ["-c", config, "-l", os.path.join(HERE, "logs", name + ".log")]
    if not os.environ.get("PLACES_API_KEY"):
        port = offline_port()
        ensure_offline(root, os.path.dirname(binary), port)
        os.environ["PLACES_API_KEY"] = OFFLINE_KEY
        if not has_option(extra, "--places-url"):
            path = OFFLINE_NEW_PATH if places_api_new(extra) else OFFLINE_LEGACY_PATH
            args += ["--places-url", "https://127.0.0.1:%d%s" % (port, path)]
        if not has_option(extra, "--places-ca"):
            args += ["--places-ca", os.path.join(root, "data", "tls", "ca.pem")]
    sys.stdout.flush()
    os.execv(binary, [binary] + args + extra + [name])


def install(argv):
    """--install DIR [--herd FILE]: a copy of this file that knows the repository."""
    if not argv or argv[0].startswith("-"):
        fail("usage: server.py --install DIR [--herd FILE]")
    target, herd = argv[0], None
    rest = argv[1:]
    if rest[:1] == ["--herd"] and len(rest) == 2:
        herd = os.path.abspath(rest[1])
        if not os.path.isfile(herd):
            fail("--herd: no such file " + herd)
    elif rest:
        fail("usage: server.py --install DIR [--herd FILE]")
    root = repository()
    with open(os.path.abspath(__file__)) as f:
        text = f.read()
    text = text.replace("\nREPOSITORY = None\n", "\nREPOSITORY = %r\n" % root, 1)
    text = text.replace("\nHERD = None\n", "\nHERD = %r\n" % herd, 1)
    os.makedirs(target, exist_ok=True)
    dest = os.path.join(os.path.abspath(target), "server.py")
    with open(dest, "w") as f:
        f.write(text)
    os.chmod(dest, 0o755)
    print("installed %s (repository %s, herd %s)" % (dest, root, herd or "default"))


def stop_offline():
    path = os.path.join(HERE, "run", "places-offline.pid")
    try:
        with open(path) as f:
            pid = int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        print("server.py: no offline service started from here (%s)" % path)
        return
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            ours = b"places-offline" in f.read()
    except OSError:
        ours = True  # no /proc (macOS): trust the pid file
    if ours:
        try:
            os.kill(pid, signal.SIGTERM)
            print("server.py: stopped places-offline (pid %d)" % pid)
        except ProcessLookupError:
            pass
    os.remove(path)


def main():
    argv = sys.argv[1:]
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__.strip())
        print("\nusage: server.py NAME [OPTIONS...] | --install DIR [--herd FILE] | --stop-offline")
        sys.exit(0 if argv else 2)
    if argv[0] == "--install":
        install(argv[1:])
    elif argv[0] == "--stop-offline":
        stop_offline()
    elif argv[0].startswith("-"):
        fail("usage: server.py NAME [OPTIONS...] (options go after NAME)")
    else:
        run(argv[0], argv[1:])


if __name__ == "__main__":
    main()
