#!/usr/bin/env python3
"""proxy-herd with a thread per connection: the same application-server herd
as the Rust mio loop and the asyncio counterpart (docs/spec.md §3-6), written
with the standard library only, for Python 3.8 to 3.11.

    python3 docs/threads/herd.py [OPTIONS] NAME [PORT]

Where the Rust loop (and asyncio) multiplexes every socket on one thread, this
is the classic answer: every connection gets a thread that blocks in recv(),
and the threads share the store behind a lock.

    Rust (src/)                     asyncio (docs/asyncio)   here
    event_loop/mod.rs  run          asyncio.run(serve())     main(): listener threads, sigwait()
    event_loop/clients.rs           ClientProtocol           ClientConn (a thread each)
    event_loop/peers.rs dial/link   PeerOut, Server.dial     LinkThread (one per neighbour)
                                                             + PeerOut (its writer thread)
    event_loop/peers.rs peer_in_*   PeerIn                   PeerIn (a thread each)
    timers.rs  heartbeat, backoff   loop.call_later          Heartbeat thread; Condition.wait(timeout)
    herd/store.rs  Store            Store                    Store (with a Lock)
    protocol/, places/, log.rs      pure functions           pure functions, copied from asyncio

The pure parts (herd file, client and peer lines, Google's JSON style, the
reply pipeline) are copied from docs/asyncio/herd.py, made to run on 3.8 (no
removeprefix) and annotated for mypy: this file must stand alone, so it
imports nothing from there. What differs is everything with a socket in it.
"""

from __future__ import annotations

import errno
import fcntl
import functools
import gc
import getopt
import http.client
import ipaddress
import json
import os
import random
import re
import resource
import select
import signal
import socket
import socketserver
import ssl
import struct
import sys
import termios
import threading
import time
import traceback
from typing import Any, Callable, Dict, List, Optional, Tuple, Union

VERSION = "0.1.0"

# Limits and delays, as in src/protocol/client.rs and src/event_loop/.
MAX_LINE = 64 * 1024             # a longer line disconnects the client
MAX_BACKLOG = 1024 * 1024        # unread replies beyond this disconnect it
PEER_BACKLOG = 8 * 1024 * 1024   # a neighbour's unsent output bound (beyond its catch-up)
LINK_TIMEOUT = 2.0               # a dial, or a greeting, that takes longer failed
HEARTBEAT = 1.0                  # PING this often...
SILENCE = 5.0                    # ...and a link silent this long is dead
PEER_SYNC_WAIT = 1.0             # a WHATSAT waits at most this for peers' input
BACKOFF_MIN, BACKOFF_MAX = 0.1, 3.2
PLACES_TIMEOUT = 10.0            # per socket operation (http.client's timeout)
PLACES_POOL = 16                 # idle keep-alive connections kept to Places...
PLACES_IDLE_FOR = 20.0           # ...for at most this long
PLACES_MAX_BODY = 16 * 1024 * 1024
NS = 1_000_000_000

# What a thread per connection costs, kept small so that 10,000 idle
# connections fit: each blocked thread holds its stack (touched pages only)
# and the buffer its recv() allocates before it blocks.
THREAD_STACK = 512 * 1024        # the default is 8 MiB (or ulimit -s) of address space
RECV_SIZE = 16 * 1024
LISTEN_BACKLOG = 4096            # the kernel caps it at net.core.somaxconn
# A client socket's kernel send buffer, fixed rather than autotuned (Linux
# doubles it): it bounds the kernel's memory per connection as MAX_BACKLOG
# bounds ours, so "a megabyte of replies waiting" means about that. Autotuned,
# the kernel took ~5 MB of a never-reading client's replies before our
# buffer saw any, and Python had to produce all of them first.
CLIENT_SNDBUF = 128 * 1024
JSON_MAX_DEPTH = 64              # deeper Places JSON is refused: printing it needs a deep stack

LEGACY_URL = "https://maps.googleapis.com/maps/api/place/nearbysearch/json"
NEW_URL = "https://places.googleapis.com/v1/places:searchNearby"
FIELD_MASK = ("places.id,places.displayName,places.location,places.types,"
              "places.businessStatus,places.rating,places.userRatingCount,"
              "places.shortFormattedAddress,places.formattedAddress")

DEFAULT_HERD_TEXT = """\
# The default herd (docs/spec.md §2). Peer ports default to client port + 10000.
Riley       127.0.0.1:12000    Jaquez Juzang
Jaquez      127.0.0.1:12001    Riley Bernard
Juzang      127.0.0.1:12002    Riley Bernard Campbell
Campbell    127.0.0.1:12003    Juzang Bernard
Bernard     127.0.0.1:12004    Jaquez Juzang Campbell
"""

Addr = Tuple[str, int]


def q(text: str) -> str:
    """Quotes a value in an error message the way Rust's {:?} does."""
    return json.dumps(text, ensure_ascii=False)


def cut_suffix(data: bytes, suffix: bytes) -> bytes:
    """bytes.removesuffix, which Python 3.8 lacks."""
    return data[:-len(suffix)] if suffix and data.endswith(suffix) else data


class UsageError(Exception):
    """A bad command line or herd file: one line, exit status 2."""


# ----- the herd file (src/herd/config.rs; copied from docs/asyncio/herd.py) ----

NAME_RE = re.compile(r"[A-Za-z0-9_-]+")
LABEL_RE = re.compile(r"[A-Za-z0-9-]{1,63}")


def check_host(host: str) -> Optional[str]:
    """Checks a host name or IPv4 address; returns why not, or None."""
    if not host:
        return "empty host"
    # Digits and dots are meant as IPv4: 127.0.0.300 is an error, not a name.
    if all(c.isdigit() or c == "." for c in host):
        try:
            ipaddress.IPv4Address(host)
            return None
        except ValueError:
            return f"{q(host)} is not an IPv4 address"
    if len(host) > 253:
        return "host name longer than 253 characters"
    for label in host.split("."):
        if not LABEL_RE.fullmatch(label) or label.startswith("-") or label.endswith("-"):
            return f"{q(host)} is not a valid host name"
    return None


def parse_port_text(text: str) -> Tuple[Optional[int], Optional[str]]:
    """A port: decimal digits only, 1..65535; returns (port, None) or (None, why)."""
    if not text:
        return None, "missing port"
    if not all("0" <= c <= "9" for c in text):
        return None, f"port {q(text)} is not a number"
    port = int(text)
    if not 1 <= port <= 65535:
        return None, f"port {text} is out of range 1..65535"
    return port, None


def parse_addr(text: str) -> Addr:
    """Parses host:port (name, IPv4 or [IPv6]) into (host, port); ValueError says why."""
    if text.startswith("["):
        inside, sep, after = text[1:].partition("]")
        if not sep:
            raise ValueError(f"bad address {q(text)}: missing ']' after the IPv6 host")
        if not after.startswith(":"):
            raise ValueError(f"bad address {q(text)}: expected [IPv6]:PORT")
        try:
            if "%" in inside:  # zone ids are not accepted (as in Rust)
                raise ValueError
            host = ipaddress.IPv6Address(inside).compressed
        except ValueError:
            raise ValueError(f"bad address {q(text)}: {q(inside)} is not an IPv6 address") from None
        port_text = after[1:]
    else:
        host, sep, port_text = text.rpartition(":")
        if not sep:
            raise ValueError(f"bad address {q(text)}: expected HOST:PORT")
        if ":" in host:
            raise ValueError(f"bad address {q(text)}: write an IPv6 host in brackets, as [::1]:PORT")
        why = check_host(host)
        if why:
            raise ValueError(f"bad address {q(text)}: {why}")
    port, why = parse_port_text(port_text)
    if port is None:
        raise ValueError(f"bad address {q(text)}: {why}")
    return host, port


def show_addr(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class ServerSpec:
    """One line of the herd file."""

    def __init__(self, name: str, client: Addr, peer: Addr, neighbours: List[str],
                 line: int) -> None:
        self.name, self.client, self.peer = name, client, peer
        self.neighbours, self.line = neighbours, line


def parse_herd_line(fields: List[str], source: str, line: int) -> ServerSpec:
    def err(message: str) -> UsageError:
        return UsageError(f"{source}:{line}: {message}")

    name = fields[0]
    if not NAME_RE.fullmatch(name):
        raise err(f"bad server name {q(name)}: use letters, digits, '_' and '-'")
    if len(fields) < 2:
        raise err(f"server {name} has no client address")
    try:
        client = parse_addr(fields[1])
    except ValueError as e:
        raise err(f"{name}: {e}") from None
    peer: Optional[Addr] = None
    neighbours: List[str] = []
    for field in fields[2:]:
        if field.startswith("peer="):
            if peer is not None:
                raise err(f"{name}: peer= given twice")
            try:
                peer = parse_addr(field[5:])
            except ValueError as e:
                raise err(f"{name}: peer {e}") from None
        elif "=" in field:
            raise err(f"{name}: unknown setting {q(field)} (only peer=ADDR is known)")
        elif not NAME_RE.fullmatch(field):
            raise err(f"{name}: bad neighbour name {q(field)}: use letters, digits, '_' and '-'")
        elif field == name:
            raise err(f"{name} lists itself as a neighbour")
        elif field in neighbours:
            raise err(f"{name} lists neighbour {field} twice")
        else:
            neighbours.append(field)
    if peer is None:
        # The default peer port, as Redis Cluster does for its bus port.
        port = client[1] + 10000
        if port > 65535:
            raise err(f"{name}: the default peer port {port} (client port + 10000) "
                      f"is above 65535; give one with peer=HOST:PORT")
        peer = (client[0], port)
    return ServerSpec(name, client, peer, neighbours, line)


def parse_herd(text: str, source: str) -> List[ServerSpec]:
    """Parses and validates herd file text: HerdConfig::parse."""
    servers: List[ServerSpec] = []
    for index, raw in enumerate(text.split("\n")):
        raw = raw[:-1] if raw.endswith("\r") else raw
        fields = raw.split("#", 1)[0].split()
        if not fields:
            continue
        spec = parse_herd_line(fields, source, index + 1)
        first = next((s for s in servers if s.name == spec.name), None)
        if first:
            raise UsageError(f"{source}:{index + 1}: duplicate server name {spec.name} "
                             f"(first on line {first.line})")
        servers.append(spec)
    if not servers:
        raise UsageError(f"{source}: no servers in the herd file")
    by_name = {s.name: s for s in servers}
    for s in servers:  # check_links: every link known, and written on both sides
        for n in s.neighbours:
            other = by_name.get(n)
            if other is None:
                raise UsageError(f"{source}:{s.line}: {s.name} lists unknown neighbour {n} "
                                 f"(no server of that name in this file)")
            if s.name not in other.neighbours:
                raise UsageError(
                    f"{source}:{s.line}: {s.name} lists {n} as a neighbour but {n} "
                    f"(line {other.line}) does not list {s.name}: links are bidirectional, "
                    f"write them on both lines")
    seen: List[Tuple[ServerSpec, str, Addr]] = []  # hosts by text, names case-insensitively
    for s in servers:
        for kind, (host, port) in (("client", s.client), ("peer", s.peer)):
            key = (host.lower(), port)
            clash = next((x for x in seen if x[2] == key), None)
            if clash:
                other, other_kind, _ = clash
                whose = (f"its own {other_kind} address" if other is s else
                         f"the {other_kind} address of {other.name} (line {other.line})")
                raise UsageError(f"{source}:{s.line}: {s.name}: {kind} address "
                                 f"{show_addr(host, port)} collides with {whose}")
            seen.append((s, kind, key))
    return servers


def load_herd(path: str) -> List[ServerSpec]:
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise UsageError(f"{path}: cannot read the herd file: {e.strerror or e}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[:e.start].count(b"\n") + 1
        raise UsageError(f"{path}:{line}: the herd file is not valid UTF-8") from None
    return parse_herd(text, path)


# ----- the command line (src/cli.rs) ------------------------------------------

HELP = """\
Usage: herd.py [OPTIONS] NAME [PORT]

Run server NAME of an application-server herd (the Python-threads counterpart
of proxy-herd: a thread per connection). PORT, when given, overrides its
client port (its neighbours still dial the peer address in the herd file).

Options:
    -c, --config FILE   herd file (default: the built-in default herd)
    -l, --log FILE      log file (default: logs/NAME.log)
        --places-url URL
                        Places endpoint (default: Google's, for the chosen API)
        --places-api legacy|new
                        which Places API the endpoint speaks (default: legacy)
        --places-ca FILE
                        extra trusted CA certificates (PEM), added to the
                        default CA store
    -h, --help          print this help and exit
    -V, --version       print the version and exit

Not implemented here (options of the Rust server this counterpart lacks):
    --state, --herd-secret-file, --peer-cert, --peer-key, --peer-ca,
    --max-positions, --http, --max-clients, --idle-timeout

Environment:
    PLACES_API_KEY      the Google Places API key (never logged)
    HERD_GC_LOG=1       log every garbage collection and its pause"""

UNSUPPORTED = ["state", "herd-secret-file", "peer-cert", "peer-key", "peer-ca",
               "max-positions", "http", "max-clients", "idle-timeout"]


def parse_number(option: str, text: str, low: int, high: int) -> int:
    if not text or not all("0" <= c <= "9" for c in text) or not low <= int(text) <= high:
        raise UsageError(f"{option}: expected a whole number from {low} to {high}, got {q(text)}")
    return int(text)


class Options:
    """What the command line asks for."""

    def __init__(self, name: str, port: Optional[int], herd: List[ServerSpec], log: str,
                 places_url: str, places_api: str, places_ca: Optional[str]) -> None:
        self.name, self.port, self.herd, self.log = name, port, herd, log
        self.places_url, self.places_api, self.places_ca = places_url, places_api, places_ca


def parse_args(argv: List[str]) -> Union[Options, str]:
    """The command line (without argv[0]) to Options, "help" or "version"."""
    longs = ["config=", "log=", "places-url=", "places-api=", "places-ca=", "help", "version"]
    longs += [u + "=" for u in UNSUPPORTED]
    try:
        pairs, free = getopt.gnu_getopt(argv, "c:l:hV", longs)
    except getopt.GetoptError as e:
        raise UsageError(f"{e} (see --help)") from None
    opts: Dict[str, str] = {}
    for flag, value in pairs:
        key = {"-c": "config", "-l": "log", "-h": "help", "-V": "version"}.get(flag, flag[2:])
        if key in UNSUPPORTED:
            raise UsageError(f"option --{key} is not implemented by the Python-threads "
                             f"counterpart (see --help)")
        if key in opts:  # getopts' rule: an option given twice is an error
            raise UsageError(f"option {key} given more than once (see --help)")
        if value == "" and key in ("config", "log", "places-url", "places-ca"):
            raise UsageError(f"--{key}: empty value")
        opts[key] = value
    if "help" in opts:
        return "help"
    if "version" in opts:
        return "version"
    api = opts.get("places-api", "legacy")
    if api not in ("legacy", "new"):
        raise UsageError(f"--places-api: expected 'legacy' or 'new', got {q(api)}")
    url = opts.get("places-url", LEGACY_URL if api == "legacy" else NEW_URL)
    if not url.startswith(("https://", "http://")):
        raise UsageError(f"--places-url: expected an https:// or http:// URL, got {q(url)}")
    if not free:
        raise UsageError("missing server NAME (see --help)")
    if len(free) > 2:
        raise UsageError(f"too many arguments: unexpected {q(free[2])} after NAME and PORT")
    name, port = free[0], None
    if len(free) == 2:
        try:
            port = parse_number("PORT", free[1], 1, 65535)
        except UsageError:
            raise UsageError(f"bad PORT {q(free[1])}: expected a number from 1 to 65535") from None
    config = opts.get("config")
    herd = load_herd(config) if config else parse_herd(DEFAULT_HERD_TEXT, "<built-in>")
    if not any(s.name == name for s in herd):
        source = f"the herd file {config}" if config else "the default herd"
        raise UsageError(f"unknown server {q(name)}: {source} has "
                         + ", ".join(s.name for s in herd))
    return Options(name, port, herd, opts.get("log") or os.path.join("logs", f"{name}.log"),
                   url, api, opts.get("places-ca"))


# ----- the log (src/log.rs) ---------------------------------------------------

UNPRINTABLE = re.compile(rb"[^\x20-\x5b\x5d-\x7e]")  # all but printable ASCII, and \


def esc(data: bytes) -> str:
    """Bytes from the network on one log line: Escaped in log.rs."""
    if UNPRINTABLE.search(data) is None:  # the usual case, without a callback per byte
        return data.decode("ascii")
    return UNPRINTABLE.sub(lambda m: b"\\x%02x" % m.group()[0], data).decode("ascii")


class Log:
    """Any thread may add lines; they are buffered and written by whichever
    thread calls flush() at the end of its piece of work (a client's read, a
    link's transition, the heartbeat's tick), as log.rs flushes once per loop
    turn. A client's thread flushes before it writes its replies, so what a
    client saw is already in the log. write_lock keeps the batches in order."""

    def __init__(self, path: str) -> None:
        folder = os.path.dirname(path)
        if folder:
            os.makedirs(folder, exist_ok=True)
        self.path = path
        self.file = open(path, "ab")
        self.lock = threading.Lock()        # guards lines and closed
        self.write_lock = threading.Lock()  # one batch written at a time, in order
        self.lines: List[str] = []
        self.closed = False
        self.second: Tuple[int, str] = (-1, "")

    def stamped(self, text: str) -> str:
        """RFC 3339 UTC with microseconds. The part up to the seconds is made
        once a second: strftime was a fifth of a logged line's cost. The cache
        is one tuple, replaced whole, so threads racing on it stay right."""
        ns = time.time_ns()
        secs = ns // NS
        cached = self.second
        if cached[0] != secs:
            cached = (secs, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs)))
            self.second = cached
        return f"{cached[1]}.{ns % NS // 1000:06d}Z {text}\n"

    def event(self, text: str) -> None:
        line = self.stamped(text)
        with self.lock:
            if self.closed:
                return
            self.lines.append(line)
            full = len(self.lines) >= 4096
        if full:
            self.flush()

    def flush(self) -> None:
        with self.write_lock:
            with self.lock:
                lines, self.lines = self.lines, []
            if not lines or self.file.closed:
                return
            try:
                self.file.write("".join(lines).encode("utf-8", "backslashreplace"))
                self.file.flush()
            except OSError as e:  # a failing log disk must not stop the server
                print(f"herd.py: cannot write the log: {e}", file=sys.stderr)

    def reopen(self) -> None:
        """SIGHUP: logrotate has moved the file; write to a new one."""
        self.flush()
        with self.write_lock:
            try:
                new = open(self.path, "ab")
            except OSError as e:
                print(f"herd.py: cannot reopen the log: {e}", file=sys.stderr)
                return
            self.file.close()
            self.file = new

    def close(self, last: str) -> None:
        """The last line, flushed; later events (other threads run on) are dropped."""
        line = self.stamped(last)
        with self.lock:
            self.lines.append(line)
            self.closed = True
        self.flush()
        with self.write_lock:
            self.file.close()


# ----- the client protocol, pure (src/protocol/client.rs; copied from asyncio) --
# Lines are bytes. bytes.split() with no argument splits on exactly docs/spec.md's
# white space: space, \t, \n, \r, \v and \f.

DECIMAL = rb"(\d+)(?:\.(\d+))?"
LOCATION_RE = re.compile(rb"([+-])(\d+(?:\.\d+)?)([+-])(\d+(?:\.\d+)?)")
DECIMAL_RE = re.compile(DECIMAL)


def within(number: bytes, limit: int) -> bool:
    """|number| <= limit, compared exactly on the digits (no float)."""
    whole, _, frac = number.partition(b".")
    whole = whole.lstrip(b"0")
    if len(whole) > 3:
        return False
    value = int(whole or b"0")
    return value < limit or (value == limit and not frac.strip(b"0"))


def parse_location(text: bytes) -> Optional[Tuple[str, str]]:
    """ISO 6709 +LAT-LNG with range checks; (lat, lon) as text without '+', or None."""
    m = LOCATION_RE.fullmatch(text)
    if not m or not within(m[2], 90) or not within(m[4], 180):
        return None
    lat = ("-" if m[1] == b"-" else "") + m[2].decode()
    lon = ("-" if m[3] == b"-" else "") + m[4].decode()
    return lat, lon


def parse_time(text: bytes) -> Optional[int]:
    """POSIX seconds with up to 9 fraction digits, as exact integer nanoseconds."""
    m = DECIMAL_RE.fullmatch(text)
    if not m:
        return None
    whole, frac = m[1].lstrip(b"0"), m[2] or b""
    # The digit limit keeps int() away from huge inputs (and the year 33000).
    if len(frac) > 9 or len(whole) > 12:
        return None
    return int(whole or b"0") * NS + int(frac.ljust(9, b"0"))


def radius_metres(text: bytes) -> Optional[str]:
    """A radius in km, in (0, 50], as exact metres text: 10 -> 10000, 1.2345 -> 1234.5."""
    m = DECIMAL_RE.fullmatch(text)
    if not m or not within(text, 50):
        return None
    frac = (m[2] or b"").rstrip(b"0")
    # Shift the point three places, as text, so nothing is rounded.
    out = (m[1] + frac[:3].ljust(3, b"0")).lstrip(b"0") or b"0"
    if len(frac) > 3:
        out += b"." + frac[3:]
    return out.decode() if out.strip(b"0.") else None  # zero is no radius


def parse_bound(text: bytes) -> Optional[int]:
    if not text.isdigit():  # bytes.isdigit: ASCII digits only
        return None
    text = text.lstrip(b"0")
    return int(text) if len(text) <= 2 and 1 <= int(text or b"0") <= 20 else None


def format_diff(diff_ns: int) -> bytes:
    """+0.263873386: always a sign, exactly nine digits."""
    sign = "-" if diff_ns < 0 else "+"
    secs, frac = divmod(abs(diff_ns), NS)
    return f"{sign}{secs}.{frac:09d}".encode()


def invalid(line: bytes) -> bytes:
    """'? ' + the line as received, without its terminator."""
    return b"? " + cut_suffix(line, b"\r") + b"\n"


class Store:
    """Client ID -> (client time in ns, AT line): src/herd/store.rs. Newest time
    wins; equal times: the greater AT line (bytes) wins; an equal line is not
    new. Every server applies this rule, so all agree, and floods end.

    The one structure every thread shares, so every access holds the lock.
    The links take it too when they come up (LinkThread.up), so that a catch-up
    and the floods that follow it see one order."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.positions: Dict[bytes, Tuple[int, bytes]] = {}

    def update(self, client: bytes, time_ns: int, at_line: bytes) -> bool:
        with self.lock:
            known = self.positions.get(client)
            if known is not None and (time_ns, at_line) <= known:
                return False
            self.positions[client] = (time_ns, at_line)
            return True

    def get(self, client: bytes) -> Optional[bytes]:
        with self.lock:
            known = self.positions.get(client)
        return known[1] if known else None


# ----- the peer protocol, pure (src/protocol/peer.rs; copied from asyncio) ----

DIFF_RE = re.compile(rb"[+-]\d{1,20}\.\d{9}")
NAME_BYTES_RE = re.compile(rb"[A-Za-z0-9_-]+")

Update = Tuple[bytes, int, bytes]   # client ID, client time in ns, AT line


def parse_update(fields: List[bytes]) -> Optional[Update]:
    """An AT line from a peer, validated like a client's IAMAT: (client, ns, line)."""
    if len(fields) != 6 or not NAME_BYTES_RE.fullmatch(fields[1]) \
            or not DIFF_RE.fullmatch(fields[2]) or parse_location(fields[4]) is None:
        return None
    time_ns = parse_time(fields[5])
    if time_ns is None:
        return None
    return fields[3], time_ns, b" ".join(fields)


def parse_peer_line(line: bytes) -> Tuple[str, Any]:
    """One peer line to (kind, value): HELLO, WELCOME, REFUSED, AT, PING, PONG,
    BLANK or INVALID."""
    fields = line.split()
    if not fields:
        return "BLANK", None
    cmd = fields[0]
    if cmd in (b"HELLO", b"WELCOME") and len(fields) == 2 and NAME_BYTES_RE.fullmatch(fields[1]):
        return cmd.decode(), fields[1]
    if cmd == b"REFUSED":
        return "REFUSED", line.strip()[len(b"REFUSED"):].strip()
    if cmd == b"AT":
        update = parse_update(fields)
        return ("AT", update) if update else ("INVALID", None)
    if cmd in (b"PING", b"PONG") and len(fields) == 1:
        return cmd.decode(), None
    return "INVALID", None


class LineBuffer:
    """Splits a byte stream into lines: LineReader in transport.rs."""

    def __init__(self) -> None:
        self.partial = bytearray()

    def feed(self, data: bytes) -> Tuple[List[bytes], bool]:
        """Returns (complete lines, too_long); lines before a too-long one count."""
        buf = self.partial
        buf += data
        lines: List[bytes] = []
        start = 0
        while True:
            nl = buf.find(b"\n", start)
            if nl < 0:
                break
            if nl - start > MAX_LINE:
                return lines, True
            lines.append(bytes(buf[start:nl]))
            start = nl + 1
        del buf[:start]
        return lines, len(buf) > MAX_LINE

    def finish(self) -> List[bytes]:
        """At end of file the last line, without its \\n, is still a line."""
        rest, self.partial = bytes(self.partial), bytearray()
        return [rest] if rest else []


# ----- Places: Google's JSON style (places/google_json.rs; copied from asyncio) --

class Num(str):
    """A JSON number kept as the text Google wrote (no float round trip)."""


def keep_number(text: str) -> Num:
    # serde_json (arbitrary_precision) writes an exponent as e with a sign:
    # 1E5 -> 1e+5. Matched here so both servers print the same bytes.
    m = re.fullmatch(r"([^eE]*)[eE]([+-]?)(\d+)", text)
    if m:
        text = f"{m[1]}e{m[2] or '+'}{m[3]}"
    return Num(text)


def reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


class TooDeep(ValueError):
    """JSON nested deeper than JSON_MAX_DEPTH: google_style recurses once or
    twice a level, and on Python 3.8 each Python call also takes C stack. In a
    256 KiB thread stack a 450-deep body crashed the process (SIGSEGV); in 512
    KiB it raised RecursionError. Places never nests past 6."""


def parse_json(body: bytes) -> Any:
    """JSON with key order kept (dicts keep insertion order) and number text kept."""
    return json.loads(body.decode("utf-8"), parse_float=keep_number, parse_int=keep_number,
                      parse_constant=reject_constant, object_pairs_hook=dict)


def is_text(v: Any) -> bool:
    return isinstance(v, str) and not isinstance(v, Num)


ESCAPES = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t",
           "\b": "\\b", "\f": "\\f", "<": "\\u003c", ">": "\\u003e"}
NEEDS_ESCAPE = re.compile(r'["\\<>\x00-\x1f\x7f]')


def google_string(s: str) -> str:
    return '"' + NEEDS_ESCAPE.sub(
        lambda m: ESCAPES.get(m[0]) or f"\\u{ord(m[0]):04x}", s) + '"'


def google_style(v: Any, level: int = 0) -> str:
    """Prints v as Google does: 3-space indent, "key" : value, scalar arrays inline."""
    if v is None:
        return "null"
    if v is True:
        return "true"
    if v is False:
        return "false"
    if isinstance(v, Num):
        return str(v)
    if isinstance(v, str):
        return google_string(v)
    if level >= JSON_MAX_DEPTH:
        raise TooDeep(f"JSON nested deeper than {JSON_MAX_DEPTH} levels")
    pad, inner = "   " * level, "   " * (level + 1)
    if isinstance(v, dict):
        if not v:
            return "{}"
        items = (f"{inner}{google_string(k)} : {google_style(x, level + 1)}" for k, x in v.items())
        return "{\n" + ",\n".join(items) + "\n" + pad + "}"
    if not v:
        return "[]"
    if not any(isinstance(x, (dict, list)) for x in v):
        return "[ " + ", ".join(google_style(x, level) for x in v) + " ]"
    return "[\n" + ",\n".join(inner + google_style(x, level + 1) for x in v) + "\n" + pad + "]"


def squeeze(text: str) -> str:
    """Runs of newlines to one, trailing ones dropped, then the reply's "\\n\\n"."""
    return re.sub(r"\n{2,}", "\n", text).rstrip("\n") + "\n\n"


def error_json(message: str, status: str = "UNKNOWN_ERROR") -> str:
    return squeeze(google_style({"error_message": message, "html_attributions": [],
                                 "results": [], "status": status}))


# ----- Places: the reply pipeline (places/new_api.rs: render_reply; copied) ---

Outcome = Union[int, str]   # the number of results, or why there are none


def render_reply(api: str, status: int, body: bytes, bound: int) -> Tuple[str, Outcome]:
    """A Places answer to (reply JSON text, number of results or why none)."""
    try:
        return render(api, status, body, bound)
    except TooDeep as e:
        return failure(f"Places answered HTTP {status} with JSON that is too deep", str(e))


def render(api: str, status: int, body: bytes, bound: int) -> Tuple[str, Outcome]:
    http_ok = 200 <= status < 300
    detail: Optional[str] = None
    try:
        parsed, ok = parse_json(body), True
    except (ValueError, RecursionError) as e:  # JSONDecodeError and bad UTF-8 are ValueErrors
        parsed, detail, ok = None, str(e), False
    if ok and isinstance(parsed, dict) and isinstance(parsed.get("error"), dict):
        return google_error(parsed["error"], status)
    if ok and isinstance(parsed, dict):
        if api == "legacy" and (http_ok or (is_text(parsed.get("status"))
                                            and is_text(parsed.get("error_message")))):
            return legacy_reply(parsed, bound, status)
        if api == "new" and http_ok:
            if "places" not in parsed or isinstance(parsed["places"], list):
                return legacy_reply(new_to_legacy(parsed), bound, status)
            return failure(f"Places answered HTTP {status} with places that are not a list")
    if ok and http_ok:
        return failure(f"Places answered HTTP {status} with JSON that is not an object")
    if http_ok:
        return failure(f"Places answered HTTP {status} with a body that is not JSON", detail)
    return failure(f"Places answered HTTP {status}")


def new_to_legacy(answer: Dict[str, Any]) -> Dict[str, Any]:
    places = answer.get("places")
    results = [place_to_result(p) for p in places] if isinstance(places, list) else []
    return {"html_attributions": [], "results": results,
            "status": "OK" if results else "ZERO_RESULTS"}


def place_to_result(place: Any) -> Dict[str, Any]:
    """One Places API (New) place as a legacy result, keys in the legacy order."""
    if not isinstance(place, dict):
        return {}
    result: Dict[str, Any] = {}
    if "businessStatus" in place:
        result["business_status"] = place["businessStatus"]
    loc = place.get("location")
    location: Dict[str, Any] = {}
    if isinstance(loc, dict):
        for to, frm in (("lat", "latitude"), ("lng", "longitude")):
            if frm in loc:
                location[to] = loc[frm]
    if location:
        result["geometry"] = {"location": location}
    display = place.get("displayName")
    if isinstance(display, dict):
        if "text" in display:
            result["name"] = display["text"]
    elif is_text(display):
        result["name"] = display
    for to, frm in (("place_id", "id"), ("rating", "rating"), ("types", "types"),
                    ("user_ratings_total", "userRatingCount")):
        if frm in place:
            result[to] = place[frm]
    for frm in ("shortFormattedAddress", "formattedAddress"):
        if frm in place:
            result["vicinity"] = place[frm]
            break
    return result


def legacy_reply(answer: Dict[str, Any], bound: int, http: int) -> Tuple[str, Outcome]:
    results = answer.get("results")
    sent = 0
    if isinstance(results, list):
        del results[bound:]
        sent = len(results)
    status = answer.get("status")
    status = status if is_text(status) else None
    outcome: Outcome
    if status in ("OK", "ZERO_RESULTS"):
        outcome = sent
    elif status is not None:
        message = answer.get("error_message")
        outcome = (f"{status}: {message} (HTTP {http})" if is_text(message)
                   else f"{status} (HTTP {http})")
    else:
        outcome = f"Places answered HTTP {http} without a status"
    return squeeze(google_style(answer)), outcome


def google_error(error: Dict[str, Any], http: int) -> Tuple[str, Outcome]:
    """{"error": {"code", "message", "status"}} as a legacy error reply."""
    google_status = str(error["status"]) if is_text(error.get("status")) else ""
    legacy_status = {"PERMISSION_DENIED": "REQUEST_DENIED", "UNAUTHENTICATED": "REQUEST_DENIED",
                     "INVALID_ARGUMENT": "INVALID_REQUEST",
                     "RESOURCE_EXHAUSTED": "OVER_QUERY_LIMIT"}.get(google_status, "UNKNOWN_ERROR")
    message = str(error["message"]) if is_text(error.get("message")) \
        else f"Places answered HTTP {http}"
    return error_json(message, legacy_status), \
        f"{legacy_status}: {message} (HTTP {http}, {google_status or 'no status'})"


def failure(message: str, detail: Optional[str] = None) -> Tuple[str, Outcome]:
    """Our own error reply: message to the client, detail only to the log."""
    return error_json(message), (f"UNKNOWN_ERROR: {message} ({detail})" if detail
                                 else f"UNKNOWN_ERROR: {message}")


# ----- Places: requests (places/http.rs; the pure parts copied from asyncio) ---

def percent_encode(text: str) -> str:
    """Everything but RFC 3986 unreserved characters as %XX."""
    return "".join(chr(b) if chr(b).isalnum() and b < 128 or b in b"-._~" else f"%{b:02X}"
                   for b in text.encode())


def json_number(text: str) -> str:
    """A number's text as JSON accepts it: no '+', no leading zeros."""
    t = text[1:] if text.startswith("+") else text
    sign, digits = ("-", t[1:]) if t.startswith("-") else ("", t)
    whole = len(digits) - len(digits.lstrip("0123456789"))
    zeros = min(len(digits[:whole]) - len(digits[:whole].lstrip("0")), max(whole - 1, 0))
    candidate = sign + digits[zeros:]
    if re.fullmatch(r"-?(0|[1-9]\d*)(\.\d+)?([eE][+-]?\d+)?", candidate, re.ASCII):
        return candidate
    return json.dumps(text)


class Endpoint:
    """An https:// URL taken apart (http.rs: Endpoint::parse)."""

    def __init__(self, url: str) -> None:
        scheme, sep, rest = url.partition("://")
        if not sep or scheme.lower() != "https":
            raise ValueError(f"bad Places URL {q(url)}: only https:// is supported")
        rest = rest.split("#", 1)[0]
        split = min([i for i in (rest.find("/"), rest.find("?")) if i >= 0] or [len(rest)])
        authority, path_query = rest[:split], rest[split:]
        if "@" in authority:
            raise ValueError(f"bad Places URL {q(url)}: user information is not supported")
        m = re.fullmatch(r"\[([0-9A-Fa-f:.]+)\](?::(\d+))?|([A-Za-z0-9._-]+)(?::(\d+))?", authority)
        if not m:
            raise ValueError(f"bad Places URL {q(url)}: bad host or port")
        self.host: str = m[1] or m[3]
        self.port = int(m[2] or m[4] or 443)
        if not 1 <= self.port <= 65535:
            raise ValueError(f"bad Places URL {q(url)}: port out of range")
        path, _, query = path_query.partition("?")
        if not all(0x21 <= ord(c) <= 0x7e for c in path + query):
            raise ValueError(f"bad Places URL {q(url)}: the path and query must be "
                             f"printable ASCII without spaces")
        self.path, self.query = path or "/", query
        host = f"[{self.host}]" if ":" in self.host else self.host
        self.authority = host if self.port == 443 else f"{host}:{self.port}"

    def legacy_target(self, lat: str, lon: str, radius: str, key_text: str) -> str:
        target = self.path + "?"
        if self.query:
            target += self.query if self.query.endswith("&") else self.query + "&"
        return (target + f"location={percent_encode(lat)},{percent_encode(lon)}"
                f"&radius={percent_encode(radius)}&key={key_text}")

    def new_target(self) -> str:
        return f"{self.path}?{self.query}" if self.query else self.path


def redact_keys(target: str) -> str:
    """Any key= parameter's value shown as ***, even one written into the URL."""
    path, sep, query = target.partition("?")
    if not sep:
        return target
    params = [p.split("=", 1)[0] + "=***" if "=" in p and p.split("=", 1)[0].lower() == "key"
              else p for p in query.split("&")]
    return path + "?" + "&".join(params)


class PlacesFailure(Exception):
    """Why a Places request failed, in the Rust client's words."""


class PlacesTimeout(PlacesFailure):
    """No answer in time: not worth a retry on a fresh connection."""


class Request:
    """One Places request, built: what goes on the wire and what the log shows."""

    def __init__(self, method: str, target: str, body: Optional[bytes],
                 headers: Dict[str, str], shown: str) -> None:
        self.method, self.target, self.body = method, target, body
        self.headers, self.shown = headers, shown


class PlacesClient:
    """HTTPS to Places with http.client, and a keep-alive pool shared by all
    threads (places/client.rs). The calling client's thread does the request
    and waits for it: only that client waits, since every client has a thread."""

    def __init__(self, opts: Options, key: Optional[str]) -> None:
        self.api = opts.places_api
        self.endpoint = Endpoint(opts.places_url)
        self.key = key or ""
        self.ca = opts.places_ca
        self.lock = threading.Lock()   # guards ssl, idle and requests
        self.ssl: Optional[ssl.SSLContext] = None  # built on first use: loading CAs takes a while
        self.idle: List[Tuple[http.client.HTTPSConnection, int, float]] = []
        self.requests = 0
        self.log: Optional[Log] = None
        self.next_conn_id: Callable[[], int] = lambda: 0

    def next_request(self) -> int:
        with self.lock:
            self.requests += 1
            return self.requests

    def context(self) -> ssl.SSLContext:
        with self.lock:
            if self.ssl is None:
                context = ssl.create_default_context()
                if self.ca:
                    context.load_verify_locations(cafile=self.ca)
                self.ssl = context
            return self.ssl

    def build(self, coords: Tuple[str, str], radius: str, bound: int) -> Request:
        """The request and how the log shows it (never the key): http.rs."""
        ep, (lat, lon) = self.endpoint, coords
        headers = {"User-Agent": f"proxy-herd/{VERSION}", "Accept": "application/json",
                   "Connection": "keep-alive"}
        if self.api == "legacy":
            target = ep.legacy_target(lat, lon, radius, percent_encode(self.key))
            shown = "GET https://" + ep.authority + redact_keys(
                ep.legacy_target(lat, lon, radius, "***"))
            return Request("GET", target, None, headers, shown)
        body = ('{"maxResultCount":%d,"locationRestriction":{"circle":{"center":'
                '{"latitude":%s,"longitude":%s},"radius":%s}}}'
                % (bound, json_number(lat), json_number(lon), json_number(radius)))
        headers["Content-Type"] = "application/json"
        headers["X-Goog-Api-Key"] = "".join(c for c in self.key if "!" <= c <= "~")
        headers["X-Goog-FieldMask"] = FIELD_MASK
        shown = f"POST https://{ep.authority}{redact_keys(ep.new_target())} {body}"
        return Request("POST", ep.new_target(), body.encode(), headers, shown)

    def fetch(self, log: Log, request_id: int, client_id: int, coords: Tuple[str, str],
              radius: str, bound: int) -> str:
        """Asks Places; returns the reply's JSON text, an error JSON on failure."""
        request = self.build(coords, radius, bound)
        log.event(f"places#{request_id} request {request.shown} for client#{client_id}")
        start = time.monotonic()
        status = 0
        try:
            status, body = self.exchange(log, request_id, request)
            json_text: Optional[str]
            json_text, outcome = render_reply(self.api, status, body, bound)
        except PlacesFailure as e:
            json_text, outcome = None, str(e)
        ms = (time.monotonic() - start) * 1000
        if isinstance(outcome, int):
            log.event(f"places#{request_id} answered: HTTP {status}, {outcome} results, "
                      f"in {ms:.3f} ms")
        else:
            log.event(f"places#{request_id} failed: {outcome} after {ms:.3f} ms")
        if json_text is None:
            json_text = error_json(f"Places request failed: {outcome}")
        return json_text

    def exchange(self, log: Log, request_id: int, request: Request) -> Tuple[int, bytes]:
        """One request on an idle pooled connection, or on a new one. A pooled
        connection that fails gets one retry on a fresh one (the asyncio rule)."""
        while True:
            pooled = self.checkout()
            if pooled is None:
                break
            conn, conn_id = pooled
            log.event(f"places conn#{conn_id} reused for places#{request_id}")
            try:
                return self.send(conn, conn_id, request)
            except PlacesTimeout:
                raise
            except PlacesFailure as e:
                log.event(f"places#{request_id} retried on a fresh connection: {e}")
                break
        conn, conn_id = self.open(log, request_id)
        return self.send(conn, conn_id, request)

    def checkout(self) -> Optional[Tuple[http.client.HTTPSConnection, int]]:
        """The most recently used idle connection that is still good."""
        while True:
            with self.lock:
                if not self.idle:
                    return None
                conn, conn_id, since = self.idle.pop()
            if time.monotonic() - since < PLACES_IDLE_FOR and not stale(conn):
                return conn, conn_id
            conn.close()

    def open(self, log: Log, request_id: int) -> Tuple[http.client.HTTPSConnection, int]:
        ep = self.endpoint
        conn_id = self.next_conn_id()
        log.event(f"places conn#{conn_id} connecting for places#{request_id}")
        try:
            context = self.context()
        except (OSError, ValueError) as e:  # a --places-ca that is not PEM
            raise PlacesFailure(f"TLS: cannot load the CA certificates: {e}") from None
        conn = http.client.HTTPSConnection(ep.host, ep.port, timeout=PLACES_TIMEOUT,
                                           context=context)
        try:
            conn.connect()  # TCP and the TLS handshake, so that both are logged
        except ssl.SSLError as e:  # before OSError: it is one
            conn.close()
            raise PlacesFailure(f"TLS: {e}") from None
        except OSError as e:
            conn.close()
            raise PlacesFailure(f"connect failed: {e}") from None
        tls = conn.sock
        version = tls.version() if isinstance(tls, ssl.SSLSocket) else None
        log.event(f"places conn#{conn_id} TLS handshake done ({version or '?'})")
        return conn, conn_id

    def send(self, conn: http.client.HTTPSConnection, conn_id: int,
             request: Request) -> Tuple[int, bytes]:
        keep = False
        try:
            conn.request(request.method, request.target, body=request.body,
                         headers=request.headers)
            response = conn.getresponse()
            body = read_body(response)
            # Pool only a connection whose response ended cleanly and that
            # http.client has not closed (Connection: close, read to close).
            keep = not response.will_close and response.isclosed() and conn.sock is not None
            return response.status, body
        except socket.timeout:
            raise PlacesTimeout(f"no answer in {PLACES_TIMEOUT:.0f} s") from None
        except (OSError, http.client.HTTPException, ValueError) as e:
            raise PlacesFailure(f"HTTP: {e or type(e).__name__}") from None
        finally:
            self.release(conn, conn_id, keep)

    def release(self, conn: http.client.HTTPSConnection, conn_id: int, keep: bool) -> None:
        with self.lock:
            if keep and len(self.idle) < PLACES_POOL:
                self.idle.append((conn, conn_id, time.monotonic()))
                return
        conn.close()

    def expire_idle(self) -> None:
        """Called every second by the heartbeat: idle connections unused for
        PLACES_IDLE_FOR are closed."""
        now = time.monotonic()
        with self.lock:
            old = [e for e in self.idle if now - e[2] >= PLACES_IDLE_FOR]
            self.idle = [e for e in self.idle if now - e[2] < PLACES_IDLE_FOR]
        for conn, _, _ in old:
            conn.close()


def read_body(response: http.client.HTTPResponse) -> bytes:
    """The whole body, at most PLACES_MAX_BODY. Not read(PLACES_MAX_BODY + 1):
    Python 3.8 allocates a buffer of that size for it, on every request."""
    if response.length is not None:  # Content-Length
        if response.length > PLACES_MAX_BODY:
            raise PlacesFailure("HTTP: body too large")
        return response.read()
    parts: List[bytes] = []  # chunked, or read to close
    size = 0
    while True:
        part = response.read(64 * 1024)
        if not part:
            return b"".join(parts)
        size += len(part)
        if size > PLACES_MAX_BODY:
            raise PlacesFailure("HTTP: body too large")
        parts.append(part)


def stale(conn: http.client.HTTPSConnection) -> bool:
    """An idle connection with something to read has been closed by the
    server (or sent what it should not): it cannot carry a request."""
    sock = conn.sock
    if sock is None:
        return True
    if isinstance(sock, ssl.SSLSocket) and sock.pending():
        return True
    poller = select.poll()
    poller.register(sock, select.POLLIN)
    return bool(poller.poll(0))


# ----- sockets: what every connection thread needs -----------------------------

def peer_addr(sock: socket.socket) -> str:
    try:
        host, port = sock.getpeername()[:2]
        return show_addr(host, port)
    except (OSError, TypeError, ValueError):
        return "?"


def wait_for_socket(sock: socket.socket, events: int) -> int:
    """Blocks until sock is ready for events (poll, not select: a thread may
    own a descriptor above select's 1024 limit)."""
    poller = select.poll()
    poller.register(sock, events)
    while True:
        try:
            ready = poller.poll()
        except InterruptedError:
            continue
        return ready[0][1] if ready else 0


def kernel_backlog(sock: socket.socket) -> int:
    """Bytes in the socket's kernel send queue that the client has not taken
    (SIOCOUTQ, which is TIOCOUTQ on Linux): replies waiting as much as ours."""
    try:
        raw = fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, b"\0\0\0\0")
    except OSError:
        return 0
    return int(struct.unpack("i", raw)[0])


def shut(sock: socket.socket) -> None:
    """Wakes the thread blocked on sock (its recv returns b"" or fails)."""
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


# ----- clients (event_loop/clients.rs) ---------------------------------------

class ClientConn:
    """One client connection, served by its own thread (run). Lines are
    handled in order, so replies are in request order without bookkeeping: a
    WHATSAT's thread waits for Places itself, and the lines behind it wait
    behind it, as HTTP/1.1 pipelining does. The replies to one read are
    written together, with floods to the neighbours sent first.

    Writes never block: what the client does not take stays in `unsent`, and
    the thread then polls for both directions, so a client that sends without
    reading is seen growing past MAX_BACKLOG and dropped (docs/spec.md §4)."""

    def __init__(self, server: Server, sock: socket.socket) -> None:
        self.server = server
        self.sock = sock
        self.id = server.next_conn_id()
        self.addr = peer_addr(sock)
        self.lines = LineBuffer()
        self.out = bytearray()       # replies of this read, not yet written
        self.unsent = bytearray()    # written, but not taken by the socket yet
        self.floods = Floods(server)
        self.eof = False
        self.closed = False

    def run(self) -> None:
        s = self.server
        s.log.event(f"client#{self.id} {self.addr} connected")
        while not self.closed:
            if self.unsent:
                # Wait for the client to take its replies, or to send more.
                ready = wait_for_socket(self.sock, select.POLLOUT
                                        | (0 if self.eof else select.POLLIN))
                if ready & (select.POLLOUT | select.POLLERR | select.POLLHUP):
                    self.push()
                if self.closed or not ready & select.POLLIN:
                    continue
            elif self.eof:
                self.close("done after EOF")
                break
            try:
                data = self.sock.recv(RECV_SIZE)
            except InterruptedError:
                continue
            except OSError as e:
                self.close(f"connection lost: {e}")
                break
            if data:
                self.received(data)
            else:
                self.end_of_file()
        s.log.flush()

    def received(self, data: bytes) -> None:
        lines, too_long = self.lines.feed(data)
        self.handle(lines)
        if too_long and not self.closed:
            self.close("line longer than 64 KiB")
        self.end_turn()

    def end_of_file(self) -> None:
        self.handle(self.lines.finish())
        if not self.closed:
            self.eof = True
            self.server.log.event(f"client#{self.id} sent EOF")
        self.end_turn()

    def handle(self, lines: List[bytes]) -> None:
        for line in lines:
            self.line_received(line)
            if self.closed:
                return

    def end_turn(self) -> None:
        """The replies go out; and the floods even if the client is gone (or
        broke the line limit): the positions its earlier lines stored are
        new, and the neighbours must have them now, not at the next catch-up."""
        if self.closed:
            self.floods.send()
            self.server.log.flush()
        else:
            self.reply()

    def line_received(self, line: bytes) -> None:
        """Herd::client_line plus client_line_received in event_loop/clients.rs."""
        s = self.server
        s.log.event(f"client#{self.id} < {esc(line)}")
        fields = line.split()
        if not fields:
            return  # blank lines are ignored
        if fields[0] == b"IAMAT" and len(fields) == 4 and parse_location(fields[2]):
            time_ns = parse_time(fields[3])
            if time_ns is not None:
                diff = format_diff(time.time_ns() - time_ns)
                at = b" ".join([b"AT", s.name_bytes, diff, fields[1], fields[2], fields[3]])
                s.log.event(f"client#{self.id} > {esc(at)}")
                if s.store.update(fields[1], time_ns, at):
                    self.floods.add(at, None)
                self.out += at + b"\n"
                return
        if fields[0] == b"WHATSAT" and len(fields) == 4:
            radius, bound = radius_metres(fields[2]), parse_bound(fields[3])
            s.apply_peer_input()
            at_line = s.store.get(fields[1])
            if radius and bound and at_line:
                coords = parse_location(at_line.split()[4])
                if coords:
                    self.whatsat(at_line, coords, radius, bound)
                    return
        reply = invalid(line)
        s.log.event(f"client#{self.id} > {esc(reply[:-1])}")
        self.out += reply

    def whatsat(self, at_line: bytes, coords: Tuple[str, str], radius: str, bound: int) -> None:
        """Sends what is owed before this line, then waits for Places in this
        thread: the lines behind it wait, so replies stay in order."""
        s = self.server
        self.reply()
        if self.closed:
            return
        request = s.places.next_request()
        json_text = s.places.fetch(s.log, request, self.id, coords, radius, bound)
        if self.gone():
            s.log.event(f"places#{request} answer dropped: its client has gone")
            self.close("connection lost while waiting for Places")
            return
        reply = at_line + b"\n" + json_text.encode("utf-8", "replace")
        s.log.event(f"client#{self.id} > {esc(at_line)} (+ Places JSON, {len(reply)} bytes)")
        self.out += reply

    def gone(self) -> bool:
        """True if the client reset the connection while we waited (a
        half-close still wants its answer: that is not gone)."""
        poller = select.poll()
        poller.register(self.sock, select.POLLERR | select.POLLHUP)
        return any(ev & (select.POLLERR | select.POLLHUP) for _, ev in poller.poll(0))

    def reply(self) -> None:
        """The end of a piece of work: floods out first (a client that has its
        AT line and asks a neighbour finds the update there), then the log,
        then the replies, in one write where the socket takes it."""
        self.floods.send()
        self.server.log.flush()
        self.push()

    def push(self) -> None:
        if self.closed:
            return
        if self.out:
            self.unsent += self.out
            self.out.clear()
        while self.unsent:
            try:
                sent = self.sock.send(self.unsent, socket.MSG_DONTWAIT)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as e:
                self.close(f"connection lost: {e}")
                return
            del self.unsent[:sent]
        # Only once the socket is full: then the kernel's queue counts too.
        if self.unsent and len(self.unsent) + kernel_backlog(self.sock) > MAX_BACKLOG:
            self.close("over 1 MiB of replies left unread")

    def close(self, why: str) -> None:
        if self.closed:
            return
        self.closed = True
        self.server.log.event(f"client#{self.id} {self.addr} closed: {why}")
        self.sock.close()


# ----- peer links (herd/link.rs and event_loop/peers.rs) ----------------------

class PeerOut:
    """Our dialed connection to a neighbour, once it is up: it carries our
    updates and PINGs. Many threads write to it (every client's and peer's
    thread floods), so every write holds `lock`; a write sends at once what the
    socket takes without waiting, and the rest waits in `pending` for this
    connection's writer thread, so a neighbour that does not read never holds
    up a client's thread. The link's own thread reads its PONGs."""

    def __init__(self, server: Server, link: Link, sock: socket.socket, conn_id: int) -> None:
        self.server, self.link, self.sock, self.id = server, link, sock, conn_id
        self.lock = threading.Condition()
        self.pending = bytearray()
        self.in_flight = 0            # bytes the writer thread is sending, out of pending
        self.allowance = PEER_BACKLOG
        self.closed = False
        self.why = ""
        self.last_heard = time.monotonic()
        self.pings = self.pongs = 0
        self.confirmed = False        # the PONG after the catch-up's PING came
        self.writer = threading.Thread(target=self.write_pending, daemon=True,
                                       name=f"peer-out {link.name}#{conn_id} writer")

    def send(self, data: bytes) -> None:
        """Queues data in order; closes the link if its backlog is over its bound."""
        with self.lock:
            if self.closed:
                return
            if not self.pending and not self.in_flight:
                try:
                    data = data[self.sock.send(data, socket.MSG_DONTWAIT):]
                except (BlockingIOError, InterruptedError):
                    pass
                except OSError:
                    return  # the link's thread sees the error and backs off
            if data:
                self.pending += data
                self.lock.notify()
            over = len(self.pending) + self.in_flight > self.allowance
        if over:
            self.close("peer output backlog over its bound")

    def write_pending(self) -> None:
        """The writer thread: blocks in sendall, so only this link waits."""
        while True:
            with self.lock:
                while not self.pending and not self.closed:
                    self.lock.wait()
                if self.closed:
                    return
                data, self.pending = bytes(self.pending), bytearray()
                self.in_flight = len(data)
            try:
                self.sock.sendall(data)
            except OSError as e:
                self.close(f"write error: {e}")
                return
            with self.lock:
                self.in_flight = 0
                if not self.pending:
                    self.allowance = PEER_BACKLOG  # the catch-up has drained

    def ping(self) -> None:
        with self.lock:
            self.pings += 1
        self.send(b"PING\n")

    def close(self, why: str) -> None:
        """From any thread: marks it closed and wakes the link's reader."""
        with self.lock:
            if self.closed:
                return
            self.closed = True
            self.why = why
            self.lock.notify()
            # Under the lock: the link's thread closes the socket only after
            # its own close() call, so the descriptor cannot be reused here.
            shut(self.sock)


class PeerIn:
    """A neighbour's connection to us, served by its own thread: HELLO first,
    then its updates and PINGs. The AT lines before its first PING are its
    catch-up (our dialers send a PING right after their catch-up), counted
    into one summary line instead of one line each (docs/spec.md §6).

    `applying` is true from the moment its input is ready until that input
    is in the store, so that a client's thread can wait for it (wait_applied):
    threads have no "turn of the loop" that would order the two for us."""

    def __init__(self, server: Server, sock: socket.socket) -> None:
        self.server, self.sock = server, sock
        self.id = server.next_conn_id()
        self.link: Optional[Link] = None
        self.lines = LineBuffer()
        self.closed = False
        self.why = ""
        self.last_heard = time.monotonic()
        self.pings = 0
        self.floods = Floods(server)
        self.catching_up = True
        self.caught: List[int] = [0, 0, 0]  # catch-up positions, new ones, bytes
        self.greeted_at = 0.0
        self.thread = threading.current_thread()  # made by the thread that serves it
        self.lock = threading.Condition()         # guards closing and applying
        self.applying = False

    def label(self) -> str:
        return self.link.name if self.link else "?"

    def run(self) -> None:
        """Waits for input with poll() (not in recv, so that it can say it is
        applying input before it takes it from the socket), then applies it."""
        s = self.server
        s.log.event(f"peer-in #{self.id} {peer_addr(self.sock)} connected")
        hello_by = time.monotonic() + LINK_TIMEOUT
        poller = select.poll()
        poller.register(self.sock, select.POLLIN)
        why: Optional[str] = None
        while not self.closed and why is None:
            wait = None if self.link else max(hello_by - time.monotonic(), 0) * 1000
            try:
                ready = poller.poll(wait)
            except InterruptedError:
                continue
            if not ready:
                why = "no HELLO in time"
                break
            with self.lock:
                self.applying = True
            try:
                why = self.apply_input()
            finally:
                with self.lock:
                    self.applying = False
                    self.lock.notify_all()
        self.close(self.why or why or "closed")
        s.log.flush()

    def apply_input(self) -> Optional[str]:
        """One read's lines into the store and out as floods; why it ended, if so."""
        try:
            data = self.sock.recv(RECV_SIZE, socket.MSG_DONTWAIT)
        except (BlockingIOError, InterruptedError):
            return None
        except OSError as e:
            return f"read error: {e}"
        if not data:
            for line in self.lines.finish():
                self.line_received(line)
            return "closed by the neighbour"
        self.last_heard = time.monotonic()
        lines, too_long = self.lines.feed(data)
        for line in lines:
            if not self.line_received(line):
                break
        self.floods.send()
        self.server.log.flush()
        return "line too long" if too_long else None

    def wait_applied(self, deadline: float) -> None:
        """Until what the neighbour has sent us is in the store (or deadline):
        a client's thread calls it before a WHATSAT reads the store."""
        poller = select.poll()
        with self.lock:
            if self.closed:
                return
            poller.register(self.sock, select.POLLIN)
            while not self.closed and (self.applying or poller.poll(0)):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return
                self.lock.wait(remaining)

    def write(self, data: bytes) -> None:
        """WELCOME, REFUSED and PONG: only this thread writes here, and never
        waits: a neighbour whose socket is too full for a PONG is not reading,
        and its own heartbeat will drop the link. This thread must not block
        but in poll(), or wait_applied would wait on it."""
        try:
            self.sock.send(data, socket.MSG_DONTWAIT)
        except OSError:
            pass  # the read side sees the failure

    def line_received(self, line: bytes) -> bool:
        """peer_line_received in event_loop/peers.rs; False once it is closed."""
        self.handle_line(line)
        return not self.closed

    def handle_line(self, line: bytes) -> None:
        s = self.server
        kind, value = parse_peer_line(line)
        link = self.link
        if kind == "AT" and link is not None and self.catching_up:
            self.caught[0] += 1
            self.caught[2] += len(line) + 1
        elif kind not in ("PING", "BLANK"):
            s.log.event(f"peer-in {self.label()}#{self.id} < {esc(line)}")
        if kind == "BLANK":
            return
        if link is None:
            if kind != "HELLO":
                self.write(b"REFUSED HELLO expected\n")
                self.close("no HELLO")
                return
            link = s.links_by_name.get(value)
            if link is None:
                self.write(b"REFUSED not a neighbour\n")
                self.close(f"refused HELLO from {esc(value)}: not a neighbour")
                return
            self.link = link   # from now on the heartbeat watches it
            self.write(b"WELCOME " + s.name_bytes + b"\n")
            self.greeted_at = time.monotonic()
            s.link_greeted(link, self)
        elif kind == "AT":
            client, time_ns, at = value
            new = s.store.update(client, time_ns, at)
            if self.catching_up:
                self.caught[1] += new
            else:
                s.log.event(f"update from {link.name} {'new' if new else 'known'}: {esc(client)}")
            if new:
                self.floods.add(at, link)
        elif kind == "PING":
            self.pings += 1
            self.write(b"PONG\n")
            if self.catching_up:
                self.end_catch_up("")
        else:
            s.log.event(f"peer-in {link.name}#{self.id}: invalid line ignored")

    def end_catch_up(self, note: str) -> None:
        self.catching_up = False
        if self.link is None:
            return
        count, new, size = self.caught
        ms = (time.monotonic() - self.greeted_at) * 1000
        self.server.log.event(f"link from {self.link.name}: catch-up of {count} positions "
                              f"received ({new} new, {size} bytes) in {ms:.3f} ms{note}")

    def close(self, why: str) -> None:
        """From any thread. Another thread (the heartbeat, a newer link from the
        same neighbour) only marks it and wakes this one's recv(); its own
        thread then logs and closes it. The lock keeps the socket from being
        closed (and its descriptor reused) under another thread's shutdown()."""
        with self.lock:
            if threading.current_thread() is not self.thread:
                if not self.closed:
                    self.closed, self.why = True, why
                    shut(self.sock)
                return
            if self.sock.fileno() < 0:
                return
            self.closed = True
            self.sock.close()
        s = self.server
        if self.catching_up:
            self.end_catch_up(" (cut short)")
        s.log.event(f"peer-in {self.label()}#{self.id} closed: {why} "
                    f"({self.pings} PINGs answered)")
        link = self.link
        if link is not None:
            with link.lock:
                mine = link.incoming is self
                if mine:
                    link.incoming = None
            if mine:
                s.log.event(f"link from {link.name}: down ({why})")


class Floods:
    """The updates one piece of work floods, sent together at its end (one
    write per neighbour, as the Rust loop's dirty_peers): a new position goes
    to every neighbour whose link is up, except the one it came from. A link
    that is not up gets it from its catch-up when it comes back."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.batches: Dict[PeerOut, bytearray] = {}

    def add(self, at: bytes, came_from: Optional[Link]) -> None:
        s = self.server
        for link in s.links:
            out = link.out
            if link is came_from or out is None:
                continue
            self.batches.setdefault(out, bytearray()).extend(at + b"\n")
            s.log.event(f"peer-out {link.name}#{out.id} > {esc(at)}")

    def send(self) -> None:
        if self.batches:
            batches, self.batches = self.batches, {}
            for out, data in batches.items():
                out.send(bytes(data))


class Link:
    """Our link to one neighbour: Backoff -> Dialing -> Greeting -> Up, and
    back to Backoff on any failure, driven by its own thread (LinkThread).
    `lock` guards the state, out and incoming: the client and peer threads
    read them to flood, and a neighbour's HELLO wakes a backing-off link."""

    def __init__(self, name: str, host: str, port: int) -> None:
        self.name, self.host, self.port = name, host, port
        self.state = "Backoff"
        self.lock = threading.Condition()
        self.failures = 0
        self.dial_now = False            # a HELLO from it cut the backoff short
        self.out: Optional[PeerOut] = None       # while Up
        self.incoming: Optional[PeerIn] = None   # the PeerIn the neighbour dialed to us

    def set_state(self, log: Log, state: str, why: str) -> None:
        """Called with lock held."""
        log.event(f"link {self.name}: {self.state} => {state} ({why})")
        self.state = state


class LinkThread:
    """The thread that drives one link: dial, greet, read PONGs while up, back
    off, again. Its timers are plain timeouts: the dial's and the greeting's
    on the socket, the backoff's on the link's Condition, which a HELLO from
    the neighbour notifies (the quick rejoin)."""

    def __init__(self, server: Server, link: Link) -> None:
        self.server, self.link = server, link

    def run(self) -> None:
        s, link = self.server, self.link
        why = None
        while not s.stopping:
            if why is not None:
                self.back_off(why)
            try:
                why = self.connect()
            except Exception:  # a bug here must not end the link for good
                why = "internal error"
                s.log.event(f"link {link.name}: internal error: "
                            + traceback.format_exc().replace("\n", " | "))
            s.log.flush()

    def back_off(self, why: str) -> None:
        """Waits 100 ms doubling to 3.2 s, with jitter, or until a HELLO."""
        s, link = self.server, self.link
        with link.lock:
            base = min(BACKOFF_MIN * 2 ** min(link.failures, 10), BACKOFF_MAX)
            delay = base * (0.75 + 0.5 * random.random())
            link.failures += 1
            link.set_state(s.log, "Backoff", f"{why}; retry in {int(delay * 1000)} ms")
            s.log.flush()
            deadline = time.monotonic() + delay
            while not link.dial_now and not s.stopping:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                link.lock.wait(remaining)

    def connect(self) -> str:
        """One life of the link; returns why it ended."""
        s, link = self.server, self.link
        conn_id = s.next_conn_id()
        with link.lock:
            link.dial_now = False
            link.set_state(s.log, "Dialing", f"dialing {show_addr(link.host, link.port)}")
        s.log.flush()
        try:
            sock = socket.create_connection((link.host, link.port), timeout=LINK_TIMEOUT)
        except socket.timeout:
            return "timed out"
        except OSError as e:
            return f"dial failed: {e}"
        try:
            return self.greet_and_serve(sock, conn_id)
        finally:
            sock.close()

    def greet_and_serve(self, sock: socket.socket, conn_id: int) -> str:
        s, link = self.server, self.link
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        deadline = time.monotonic() + LINK_TIMEOUT
        try:
            sock.sendall(b"HELLO " + s.name_bytes + b"\n")
        except OSError as e:
            return f"write error: {e}"
        s.log.event(f"peer-out {link.name}#{conn_id} > HELLO {s.name}")
        with link.lock:
            link.set_state(s.log, "Greeting", "connected, HELLO sent")
        s.log.flush()
        lines = LineBuffer()
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return self.closed(conn_id, "timed out")
            sock.settimeout(remaining)
            try:
                data = sock.recv(RECV_SIZE)
            except socket.timeout:
                return self.closed(conn_id, "timed out")
            except OSError as e:
                return self.closed(conn_id, f"read error: {e}")
            if not data:
                return self.closed(conn_id, "closed by the neighbour")
            got, too_long = lines.feed(data)
            for i, line in enumerate(got):
                s.log.event(f"peer-out {link.name}#{conn_id} < {esc(line)}")
                kind, value = parse_peer_line(line)
                if kind == "WELCOME" and value == link.name.encode():
                    sock.settimeout(None)  # from now on the heartbeat watches it
                    return self.up(PeerOut(s, link, sock, conn_id), lines, got[i + 1:])
                if kind == "REFUSED":
                    return self.closed(conn_id, f"refused: {esc(value)}")
                if kind not in ("PONG", "BLANK"):
                    s.log.event(f"peer-out {link.name}: unexpected line ignored")
            if too_long:
                return self.closed(conn_id, "line too long")

    def closed(self, conn_id: int, why: str) -> str:
        self.server.log.event(f"peer-out {self.link.name}#{conn_id} closed: {why}")
        return why

    def up(self, out: PeerOut, lines: LineBuffer, early: List[bytes]) -> str:
        """WELCOME: the link is up; the neighbour gets every position we know,
        then a PING that marks the catch-up's end, then our live floods. The
        store's lock is held while the link goes up, so every position is in
        the catch-up or flooded after it (or both: harmless, it is not new)."""
        s, link = self.server, self.link
        out.writer.start()
        started = time.monotonic()
        with s.store.lock:
            catch_up = b"".join(at + b"\n" for _, at in s.store.positions.values())
            count = len(s.store.positions)
            with out.lock:
                out.allowance = PEER_BACKLOG + len(catch_up)
                out.pings += 1
            out.send(catch_up + b"PING\n")
            # Only now can the heartbeat PING it, or a flood use it: both
            # come after the catch-up and its PING.
            with link.lock:
                link.failures = 0
                link.set_state(s.log, "Up", "WELCOME received")
                link.out = out
        s.log.flush()
        why = "internal error"  # if read_pongs raises: the link still goes down cleanly
        try:
            why = self.read_pongs(out, lines, early, count, len(catch_up), started)
        finally:
            with link.lock:
                link.out = None
            out.close(why)
            out.writer.join()
            if not out.confirmed:
                s.log.event(f"link {link.name}: catch-up of {count} positions "
                            f"({len(catch_up)} bytes) not confirmed before the link went down")
            s.log.event(f"peer-out {link.name}#{out.id} closed: {out.why} "
                        f"({out.pings} PINGs sent, {out.pongs} PONGs received)")
        return out.why

    def read_pongs(self, out: PeerOut, lines: LineBuffer, early: List[bytes],
                   count: int, size: int, started: float) -> str:
        """While the link is up: PONGs (the first confirms the catch-up), or a
        REFUSED; returns why the link ended."""
        s, link = self.server, self.link
        while True:
            for line in early:
                if line.split() == [b"PONG"]:
                    out.pongs += 1
                    if not out.confirmed:
                        out.confirmed = True
                        ms = (time.monotonic() - started) * 1000
                        s.log.event(f"link {link.name}: catch-up of {count} positions sent "
                                    f"({size} bytes) in {ms:.3f} ms")
                    continue
                s.log.event(f"peer-out {link.name}#{out.id} < {esc(line)}")
                kind, value = parse_peer_line(line)
                if kind == "REFUSED":
                    return f"refused: {esc(value)}"
                if kind != "BLANK":
                    s.log.event(f"peer-out {link.name}: unexpected line ignored")
            s.log.flush()
            try:
                data = out.sock.recv(RECV_SIZE)  # EINTR is retried by Python (PEP 475)
            except OSError as e:
                return out.why or f"read error: {e}"
            if not data:
                return out.why or "closed by the neighbour"
            out.last_heard = time.monotonic()
            early, too_long = lines.feed(data)
            if too_long:
                return "line too long"


# ----- the server: store, links, the heartbeat (Herd + EventLoop in Rust) ------

class Server:
    def __init__(self, opts: Options, log: Log, places: PlacesClient,
                 neighbours: List[Tuple[str, str, int]]) -> None:
        self.name = opts.name
        self.name_bytes = self.name.encode()
        self.log = log
        self.places = places
        self.store = Store()
        self.links = [Link(n, host, port) for n, host, port in neighbours]
        self.links_by_name = {link.name.encode(): link for link in self.links}
        self.conn_lock = threading.Lock()
        self.conn_count = 0
        self.stopping = False
        places.log = log
        places.next_conn_id = self.next_conn_id

    def next_conn_id(self) -> int:
        """Connection numbers count every connection opened or accepted."""
        with self.conn_lock:
            self.conn_count += 1
            return self.conn_count

    def apply_peer_input(self) -> None:
        """Before a WHATSAT reads the store: waits until every update that has
        reached us from a neighbour is applied. The neighbour wrote its flood
        before its client's reply, so the bytes are in our socket, but our
        PeerIn thread may not have run yet; a single-threaded loop would have
        read them in an earlier turn (docs/spec.md §5: a client that has its AT
        reply and asks a neighbour finds the update there). Bounded, so a
        stuck thread never holds a client for long."""
        deadline = time.monotonic() + PEER_SYNC_WAIT
        for link in self.links:
            conn = link.incoming
            if conn is not None:
                conn.wait_applied(deadline)

    def link_greeted(self, link: Link, conn: PeerIn) -> None:
        """A neighbour said HELLO. If our link to it is backing off, it is
        evidently back: cut the wait short and dial now."""
        with link.lock:
            old, link.incoming = link.incoming, conn
            backing_off = link.state == "Backoff"
            if backing_off:
                link.dial_now = True
                link.failures = 0
                link.lock.notify()
        if old is not None and old is not conn:
            old.close("replaced by a new link from the same neighbour")
        self.log.event(f"link from {link.name}: up")
        if backing_off:
            self.log.event(f"link {link.name}: HELLO from it, dialing back now")

    def heartbeat(self) -> None:
        """The heartbeat thread: PING every link that is up; close links,
        either way, silent too long; expire idle Places connections; flush
        what the other threads logged and did not flush."""
        while not self.stopping:
            time.sleep(HEARTBEAT)
            now = time.monotonic()
            for link in self.links:
                with link.lock:
                    out, incoming = link.out, link.incoming
                if out is not None:
                    if now - out.last_heard > SILENCE:
                        out.close("silent too long")
                    else:
                        out.ping()
                if incoming is not None and now - incoming.last_heard > SILENCE:
                    incoming.close("silent too long")
            self.places.expire_idle()
            self.log.flush()


class Listener(socketserver.ThreadingMixIn, socketserver.TCPServer):
    """A listening socket whose every connection gets a daemon thread
    (socketserver.ThreadingTCPServer, with the backlog and family we need)."""

    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = LISTEN_BACKLOG

    def __init__(self, addr: Addr, serve: Callable[[socket.socket], None], log: Log) -> None:
        self.address_family = socket.AF_INET6 if ":" in addr[0] else socket.AF_INET
        self.serve = serve
        self.log = log
        self.paused_at = -1e9
        super().__init__(addr, Handler)

    def shutdown_request(self, request: Any) -> None:
        """The connection's own code has closed it (or closes it now)."""
        self.close_request(request)

    def get_request(self) -> Tuple[socket.socket, Any]:
        """accept(), but out of descriptors it pauses: the listening socket
        stays readable, and serve_forever would spin on accept() failing
        (the Rust loop pauses accepting and retries from its timer queue)."""
        try:
            return super().get_request()
        except OSError as e:
            if e.errno in (errno.EMFILE, errno.ENFILE):
                now = time.monotonic()
                if now - self.paused_at > 1.0:
                    self.log.event(f"accept paused: {e.strerror}; retrying every 100 ms")
                    self.log.flush()
                self.paused_at = now
                time.sleep(0.1)  # only this accept thread waits
            raise  # socketserver drops this attempt and polls again

    def handle_error(self, request: Any, client_address: Any) -> None:
        self.log.event("internal error in a connection thread: "
                       + traceback.format_exc().replace("\n", " | "))
        self.log.flush()


class Handler(socketserver.BaseRequestHandler):
    server: Listener

    def handle(self) -> None:
        self.server.serve(self.request)


def serve_client(server: Server, sock: socket.socket) -> None:
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, CLIENT_SNDBUF)
    ClientConn(server, sock).run()


def serve_peer(server: Server, sock: socket.socket) -> None:
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    PeerIn(server, sock).run()


# ----- start and stop (src/bin/proxy-herd.rs) ---------------------------------

def resolve(host: str, port: int) -> str:
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return str(infos[0][4][0])


def raise_fd_limit() -> None:
    """A thread per connection needs a descriptor per connection too: lift the
    soft limit to the hard one, as a server expecting 10,000 clients must."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError):
            pass


def trace_gc(log: Log) -> None:
    """HERD_GC_LOG=1: one log line per collection, with its pause (Python's own
    account, through gc.callbacks; the callback runs in the collecting thread)."""
    started: Dict[int, int] = {}

    def callback(phase: str, info: Dict[str, int]) -> None:
        me = threading.get_ident()
        if phase == "start":
            started[me] = time.perf_counter_ns()
        elif me in started:
            pause = (time.perf_counter_ns() - started.pop(me)) / 1e6
            log.event(f"gc: generation {info['generation']} collected {info['collected']} "
                      f"objects in {pause:.3f} ms")

    gc.callbacks.append(callback)


def serve(opts: Options) -> int:
    herd = {s.name: s for s in opts.herd}
    me = herd[opts.name]
    try:
        client_host = resolve(*me.client)
        peer_host = resolve(*me.peer)
        neighbours = [(n, resolve(*herd[n].peer), herd[n].peer[1]) for n in me.neighbours]
    except OSError as e:
        print(f"herd.py: cannot resolve an address of the herd: {e}", file=sys.stderr)
        return 2
    try:
        places = PlacesClient(opts, os.environ.get("PLACES_API_KEY"))
    except ValueError as e:
        print(f"herd.py: --places-url: {e}", file=sys.stderr)
        return 2
    if opts.places_ca and not os.access(opts.places_ca, os.R_OK):
        print(f"herd.py: --places-ca: cannot read {opts.places_ca}", file=sys.stderr)
        return 2
    try:
        log = Log(opts.log)
    except OSError as e:
        print(f"herd.py: cannot open the log {opts.log}: {e}", file=sys.stderr)
        return 1
    raise_fd_limit()
    threading.stack_size(THREAD_STACK)
    # Signals go to the main thread's sigwait() only: every thread started
    # from here on inherits this mask.
    stop_signals = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP}
    signal.pthread_sigmask(signal.SIG_BLOCK, stop_signals)
    if os.environ.get("HERD_GC_LOG") == "1":
        trace_gc(log)

    server = Server(opts, log, places, neighbours)
    client_port = opts.port or me.client[1]
    listeners: List[Listener] = []
    for host, port, conn in ((client_host, client_port, serve_client),
                             (peer_host, me.peer[1], serve_peer)):
        try:
            listeners.append(Listener((host, port), functools.partial(conn, server), log))
        except OSError as e:
            for listener in listeners:
                listener.server_close()
            if e.errno == errno.EADDRINUSE:
                print(f"herd.py: address {show_addr(host, port)} is already in use",
                      file=sys.stderr)
            else:
                print(f"herd.py: cannot listen on {show_addr(host, port)}: {e}", file=sys.stderr)
            return 1
    addrs = [show_addr(*listener.socket.getsockname()[:2]) for listener in listeners]
    log.event(f"{server.name} listening for clients on {addrs[0]} and for peers on {addrs[1]}")
    log.flush()

    def start(target: Callable[[], None], name: str) -> None:
        threading.Thread(target=target, name=name, daemon=True).start()

    for listener, name in zip(listeners, ("clients", "peers")):
        start(listener.serve_forever, f"accept {name}")
    for link in server.links:
        start(LinkThread(server, link).run, f"link {link.name}")
    start(server.heartbeat, "heartbeat")

    while True:
        signum = signal.sigwait(stop_signals)
        if signum == signal.SIGHUP:
            log.reopen()
            log.event(f"{server.name} reopened its log on SIGHUP")
            log.flush()
            continue
        break
    server.stopping = True
    for listener in listeners:
        listener.socket.close()  # no new connections; serve_forever's thread dies with us
    log.close(f"{server.name} stopping on {signal.Signals(signum).name}")
    return 0


def main(argv: List[str]) -> int:
    try:
        opts = parse_args(argv)
    except UsageError as e:
        print(f"herd.py: {e}", file=sys.stderr)
        return 2
    if opts == "help":
        print(HELP)
        return 0
    if opts == "version":
        print(f"proxy-herd {VERSION} (Python threads)")
        return 0
    assert isinstance(opts, Options)
    return serve(opts)


if __name__ == "__main__":
    code = main(sys.argv[1:])
    sys.stdout.flush()
    sys.stderr.flush()
    # The connection threads are daemons blocked in recv(); os._exit ends them
    # without running interpreter shutdown under them (the log is closed).
    os._exit(code)
