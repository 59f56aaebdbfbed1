#!/usr/bin/env python3
"""proxy-herd in asyncio: the same application-server herd as the Rust mio
loop (docs/spec.md §3-6), written with the standard library only.

    python3 docs/asyncio/herd.py [OPTIONS] NAME [PORT]

Read it side by side with the Rust code. The Rust loop owns one poll, one slab
of connections and one timer queue; here asyncio owns all three, and we write
only the callbacks:

    Rust (src/)                                here
    event_loop/mod.rs      EventLoop::run      asyncio.run(serve(...))
    event_loop/clients.rs  client_* methods    ClientProtocol (an asyncio.Protocol)
    event_loop/peers.rs    peer_out_* / dial   PeerOut + Server.dial / back_off
    event_loop/peers.rs    peer_in_*           PeerIn
    timers.rs      call_later / cancel    loop.call_later / TimerHandle.cancel
    herd/store.rs  Store                  Store
    protocol/      parse_request ...      parse_* functions below (pure)
    places/        HTTP, JSON printer     PlacesClient, google_style, render_reply
    log.rs         Log, Escaped           Log, esc
    http/, event_loop/http.rs  HTTP endpoint   HttpProtocol, Server.status (GET /status and /)

Protocols rather than streams: a Protocol's data_received hands us every line
that arrived in one read, so the replies to a pipelined batch go out in one
write, and floods are written to the neighbours before the client's reply in
the same callback (docs/spec.md §5: "in the same turn of the loop").
"""

import asyncio
import getopt
import ipaddress
import json
import os
import random
import re
import signal
import socket
import ssl
import sys
import time
from collections import deque

VERSION = "0.1.0"

# Limits and delays, as in src/protocol/client.rs and src/event_loop/.
MAX_LINE = 64 * 1024             # a longer line disconnects the client
MAX_BACKLOG = 1024 * 1024        # unread replies beyond this disconnect it
PEER_BACKLOG = 8 * 1024 * 1024   # a neighbour's unsent output bound (beyond its catch-up)
LINK_TIMEOUT = 2.0               # a dial, or a greeting, that takes longer failed
HEARTBEAT = 1.0                  # PING this often...
SILENCE = 5.0                    # ...and a link silent this long is dead
BACKOFF_MIN, BACKOFF_MAX = 0.1, 3.2
PLACES_TIMEOUT = 10.0
PLACES_POOL = 16                 # idle keep-alive connections kept to Places...
PLACES_IDLE_FOR = 20.0           # ...for at most this long
PLACES_MAX_BODY = 16 * 1024 * 1024
NS = 1_000_000_000

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


def q(text):
    """Quotes a value in an error message the way Rust's {:?} does."""
    return json.dumps(text, ensure_ascii=False)


class UsageError(Exception):
    """A bad command line or herd file: one line, exit status 2."""


# ----- the herd file (src/herd/config.rs) -------------------------------------

NAME_RE = re.compile(r"[A-Za-z0-9_-]+")
LABEL_RE = re.compile(r"[A-Za-z0-9-]{1,63}")


def check_host(host):
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


def parse_port_text(text):
    """A port: decimal digits only, 1..65535; returns (port, None) or (None, why)."""
    if not text:
        return None, "missing port"
    if not all("0" <= c <= "9" for c in text):
        return None, f"port {q(text)} is not a number"
    port = int(text)
    if not 1 <= port <= 65535:
        return None, f"port {text} is out of range 1..65535"
    return port, None


def parse_addr(text):
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
    if why:
        raise ValueError(f"bad address {q(text)}: {why}")
    return host, port


def show_addr(host, port):
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class ServerSpec:
    """One line of the herd file."""

    def __init__(self, name, client, peer, neighbours, line, http=None):
        self.name, self.client, self.peer = name, client, peer
        self.neighbours, self.line = neighbours, line
        self.http = http  # (host, port) from http=ADDR, or None


def parse_herd_line(fields, source, line):
    def err(message):
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
    peer, http, neighbours = None, None, []
    for field in fields[2:]:
        if field.startswith("http="):
            if http is not None:
                raise err(f"{name}: http= given twice")
            try:
                http = parse_addr(field[5:])
            except ValueError as e:
                raise err(f"{name}: http {e}") from None
        elif field.startswith("peer="):
            if peer is not None:
                raise err(f"{name}: peer= given twice")
            try:
                peer = parse_addr(field[5:])
            except ValueError as e:
                raise err(f"{name}: peer {e}") from None
        elif "=" in field:
            raise err(f"{name}: unknown setting {q(field)} (only peer=ADDR and http=ADDR are known)")
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
    return ServerSpec(name, client, peer, neighbours, line, http)


def parse_herd(text, source):
    """Parses and validates herd file text: HerdConfig::parse."""
    servers = []
    for index, raw in enumerate(text.split("\n")):
        fields = raw.removesuffix("\r").split("#", 1)[0].split()
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
    seen = []  # check_ports: hosts compared by text, names case-insensitively
    for s in servers:
        addrs = [("client", s.client), ("peer", s.peer)] + ([("HTTP", s.http)] if s.http else [])
        for kind, (host, port) in addrs:
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


def load_herd(path):
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

Run server NAME of an application-server herd (the asyncio counterpart of
proxy-herd). PORT, when given, overrides its client port (its neighbours still
dial the peer address in the herd file).

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
        --max-clients N accept at most N client connections at once
        --idle-timeout SECS
                        close a client connection idle for SECS seconds
        --http ADDR     serve GET /status and the herd's live page at ADDR
                        (default: the herd file's http=, else off; no /metrics)
        --uvloop        run on uvloop (also: HERD_UVLOOP=1)
    -h, --help          print this help and exit
    -V, --version       print the version and exit

Not here (the Rust server's only): --state, --herd-secret-file.

Environment:
    PLACES_API_KEY      the Google Places API key (never logged)

Signals:
    SIGINT, SIGTERM     stop, with the log flushed (exit status 0)
    SIGHUP              reopen the log file (for logrotate: docs/logging.md)"""


def parse_number(option, text, low, high):
    if not text or not all("0" <= c <= "9" for c in text) or not low <= int(text) <= high:
        raise UsageError(f"{option}: expected a whole number from {low} to {high}, got {q(text)}")
    return int(text)


def parse_args(argv):
    """The command line (without argv[0]) to an options dict, "help" or "version"."""
    longs = ["config=", "log=", "places-url=", "places-api=", "places-ca=",
             "max-clients=", "idle-timeout=", "http=", "help", "version", "uvloop"]
    try:
        pairs, free = getopt.gnu_getopt(argv, "c:l:hV", longs)
    except getopt.GetoptError as e:
        raise UsageError(f"{e} (see --help)") from None
    opts = {}
    for flag, value in pairs:
        key = {"-c": "config", "-l": "log", "-h": "help", "-V": "version"}.get(flag, flag[2:])
        if key in opts:  # getopts' rule: an option given twice is an error
            raise UsageError(f"option {key} given more than once (see --help)")
        if value == "" and key in ("config", "log", "places-url", "places-ca", "http"):
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
    max_clients = opts.get("max-clients")
    if max_clients is not None:
        max_clients = parse_number("--max-clients", max_clients, 1, 1_000_000)
    idle = opts.get("idle-timeout")
    if idle is not None:
        idle = parse_number("--idle-timeout", idle, 1, 365 * 24 * 3600)
    http = opts.get("http")
    if http is not None:
        try:
            http = parse_addr(http)
        except ValueError as e:
            raise UsageError(f"--http: {e}") from None
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
    return {
        "name": name, "port": port, "herd": herd,
        "log": opts.get("log") or os.path.join("logs", f"{name}.log"),
        "places_url": url, "places_api": api, "places_ca": opts.get("places-ca"),
        "max_clients": max_clients, "idle_timeout": idle, "http": http,
        "uvloop": "uvloop" in opts or os.environ.get("HERD_UVLOOP") == "1",
    }


# ----- the log (src/log.rs) ---------------------------------------------------

UNPRINTABLE = re.compile(rb"[^\x20-\x5b\x5d-\x7e]")  # all but printable ASCII, and \


def esc(data):
    """Bytes from the network on one log line: Escaped in log.rs."""
    return UNPRINTABLE.sub(lambda m: b"\\x%02x" % m.group()[0], data).decode("ascii")


class Log:
    """Lines are buffered and written once per loop turn (call_soon), as log.rs
    flushes once per turn: a busy turn costs one write, and a clean stop loses
    nothing because stop() flushes last."""

    def __init__(self, path):
        folder = os.path.dirname(path)
        if folder:
            os.makedirs(folder, exist_ok=True)
        self.path = path
        self.file = open(path, "ab")
        self.lines = []
        self.loop = None
        self.scheduled = False

    def event(self, text):
        ns = time.time_ns()
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ns // NS))
        self.lines.append(f"{stamp}.{ns % NS // 1000:06d}Z {text}\n")
        if len(self.lines) >= 4096:
            self.flush()
        elif not self.scheduled and self.loop is not None:
            self.scheduled = True
            self.loop.call_soon(self.flush)

    def flush(self):
        self.scheduled = False
        if not self.lines:
            return
        data = "".join(self.lines).encode("utf-8", "backslashreplace")
        self.lines.clear()
        try:
            self.file.write(data)
            self.file.flush()
        except OSError as e:  # a failing log disk must not stop the server
            print(f"herd.py: cannot write the log: {e}", file=sys.stderr)

    def reopen(self):
        """SIGHUP (log rotation, Log::reopen in log.rs): what is buffered goes
        to the old file, then the path is opened again; on failure the old
        file is kept, so no line is lost."""
        self.flush()
        try:
            new = open(self.path, "ab")
        except OSError as e:
            print(f"herd.py: SIGHUP: cannot reopen the log: {e}", file=sys.stderr)
            self.event(f"SIGHUP: cannot reopen the log: {e}")
            return
        self.file.close()
        self.file = new
        self.event("log reopened on SIGHUP")


# ----- the client protocol, pure (src/protocol/client.rs) ---------------------
# Lines are bytes. bytes.split() with no argument splits on exactly docs/spec.md's
# white space: space, \t, \n, \r, \v and \f.

DECIMAL = rb"(\d+)(?:\.(\d+))?"
LOCATION_RE = re.compile(rb"([+-])(\d+(?:\.\d+)?)([+-])(\d+(?:\.\d+)?)")
DECIMAL_RE = re.compile(DECIMAL)


def within(number, limit):
    """|number| <= limit, compared exactly on the digits (no float)."""
    whole, _, frac = number.partition(b".")
    whole = whole.lstrip(b"0")
    if len(whole) > 3:
        return False
    value = int(whole or b"0")
    return value < limit or (value == limit and not frac.strip(b"0"))


def parse_location(text):
    """ISO 6709 +LAT-LNG with range checks; (lat, lon) as text without '+', or None."""
    m = LOCATION_RE.fullmatch(text)
    if not m or not within(m[2], 90) or not within(m[4], 180):
        return None
    lat = ("-" if m[1] == b"-" else "") + m[2].decode()
    lon = ("-" if m[3] == b"-" else "") + m[4].decode()
    return lat, lon


def parse_time(text):
    """POSIX seconds with up to 9 fraction digits, as exact integer nanoseconds."""
    m = DECIMAL_RE.fullmatch(text)
    if not m:
        return None
    whole, frac = m[1].lstrip(b"0"), m[2] or b""
    # The digit limit keeps int() away from huge inputs (and the year 33000).
    if len(frac) > 9 or len(whole) > 12:
        return None
    return int(whole or b"0") * NS + int(frac.ljust(9, b"0"))


def radius_metres(text):
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


def parse_bound(text):
    if not text.isdigit():  # bytes.isdigit: ASCII digits only
        return None
    text = text.lstrip(b"0")
    return int(text) if len(text) <= 2 and 1 <= int(text or b"0") <= 20 else None


def format_diff(diff_ns):
    """+0.263873386: always a sign, exactly nine digits."""
    sign = "-" if diff_ns < 0 else "+"
    secs, frac = divmod(abs(diff_ns), NS)
    return f"{sign}{secs}.{frac:09d}".encode()


def invalid(line):
    """'? ' + the line as received, without its terminator."""
    return b"? " + line.removesuffix(b"\r") + b"\n"


class Store:
    """Client ID -> (client time in ns, AT line): src/herd/store.rs. Newest time
    wins; equal times: the greater AT line (bytes) wins; an equal line is not
    new. Every server applies this rule, so all agree, and floods end."""

    def __init__(self):
        self.positions = {}

    def update(self, client, time_ns, at_line):
        known = self.positions.get(client)
        if known is not None and (time_ns, at_line) <= known:
            return False
        self.positions[client] = (time_ns, at_line)
        return True


# ----- the peer protocol, pure (src/protocol/peer.rs) -------------------------

DIFF_RE = re.compile(rb"[+-]\d{1,20}\.\d{9}")
NAME_BYTES_RE = re.compile(rb"[A-Za-z0-9_-]+")


def parse_update(fields):
    """An AT line from a peer, validated like a client's IAMAT: (client, ns, line)."""
    if len(fields) != 6 or not NAME_BYTES_RE.fullmatch(fields[1]) \
            or not DIFF_RE.fullmatch(fields[2]) or parse_location(fields[4]) is None:
        return None
    time_ns = parse_time(fields[5])
    if time_ns is None:
        return None
    return fields[3], time_ns, b" ".join(fields)


def parse_peer_line(line):
    """One peer line to (kind, value): HELLO, WELCOME, REFUSED, AT, PING, PONG,
    BLANK or INVALID."""
    fields = line.split()
    if not fields:
        return "BLANK", None
    cmd = fields[0]
    if cmd in (b"HELLO", b"WELCOME") and len(fields) == 2 and NAME_BYTES_RE.fullmatch(fields[1]):
        return cmd.decode(), fields[1]
    if cmd == b"REFUSED":
        return "REFUSED", line.strip().removeprefix(b"REFUSED").strip()
    if cmd == b"AT":
        update = parse_update(fields)
        return ("AT", update) if update else ("INVALID", None)
    if cmd in (b"PING", b"PONG") and len(fields) == 1:
        return cmd.decode(), None
    return "INVALID", None


class LineBuffer:
    """Splits a byte stream into lines: LineReader in transport.rs."""

    def __init__(self):
        self.partial = bytearray()

    def feed(self, data):
        """Returns (complete lines, too_long); lines before a too-long one count."""
        buf = self.partial
        buf += data
        lines, start = [], 0
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

    def finish(self):
        """At end of file the last line, without its \\n, is still a line."""
        rest, self.partial = bytes(self.partial), bytearray()
        return [rest] if rest else []


def peer_addr(transport):
    try:
        host, port = transport.get_extra_info("peername")[:2]
        return show_addr(host, port)
    except (TypeError, ValueError):
        return "?"


# ----- clients (event_loop/clients.rs: client_made, client_data_received, ...) --------

class ClientProtocol(asyncio.Protocol):
    """One client connection. Replies stay in request order: a WHATSAT waiting
    for Places holds the replies behind it (Replies/Held in event_loop/clients.rs)."""

    def __init__(self, server):
        self.server = server
        self.transport = None
        self.id = 0
        self.lines = LineBuffer()
        self.out = bytearray()    # replies of this read, written at once
        self.held = deque()       # [request id, reply or None] behind a WHATSAT
        self.eof = False
        self.closed = False
        self.idle_timer = None
        self.last_active = 0.0

    def connection_made(self, transport):
        s = self.server
        self.transport = transport
        self.addr = peer_addr(transport)
        if s.max_clients is not None and s.clients >= s.max_clients:
            # Refuse politely: one line, then close. No connection number.
            transport.write(b"? server busy: too many clients\n")
            transport.close()
            self.closed = True
            s.log.event(f"client {self.addr} refused: too many clients")
            return
        s.clients += 1
        self.id = s.next_conn_id()
        self.last_active = s.loop.time()
        s.log.event(f"client#{self.id} {self.addr} connected")
        if s.idle_timeout:
            self.idle_timer = s.loop.call_later(s.idle_timeout, self.idle_check)

    def data_received(self, data):
        if self.closed:
            return
        self.last_active = self.server.loop.time()
        lines, too_long = self.lines.feed(data)
        for line in lines:
            self.line_received(line)
        # Floods leave before the client's reply: a client that gets its AT
        # line and asks a neighbour finds the update there.
        self.server.flush_peers()
        if too_long:
            self.close("line longer than 64 KiB", flush=False)
            return
        self.flush()

    def eof_received(self):
        if self.closed:
            return False
        for line in self.lines.finish():
            self.line_received(line)
        self.eof = True
        self.server.log.event(f"client#{self.id} sent EOF")
        self.server.flush_peers()
        self.flush()
        return True  # keep the writing half open: replies may still be owed

    def connection_lost(self, exc):
        if not self.closed:
            self.close(f"connection lost: {exc}" if exc else "connection lost", flush=False)

    def line_received(self, line):
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
                    s.accepted(at, None)
                    s.flood(at, None)
                self.send(at + b"\n")
                return
        if fields[0] == b"WHATSAT" and len(fields) == 4:
            radius, bound = radius_metres(fields[2]), parse_bound(fields[3])
            known = s.store.positions.get(fields[1])
            if radius and bound and known:
                coords = parse_location(known[1].split()[4])
                if coords:
                    request = s.places.next_request()
                    self.held.append([request, None])
                    s.places.start(self, request, known[1], coords, radius, bound)
                    return
        reply = invalid(line)
        s.log.event(f"client#{self.id} > {esc(reply[:-1])}")
        self.send(reply)

    def send(self, reply):
        if self.held:
            self.held.append([None, reply])
        else:
            self.out += reply

    def flush(self):
        """Writes this turn's replies in one write; enforces the backlog bound;
        closes once the client has half-closed and nothing more is owed."""
        if self.closed:
            return
        if self.out:
            # The log first, as the Rust loop does: a client that has its
            # reply finds the events that made it already in the log.
            self.server.log.flush()
            self.transport.write(bytes(self.out))
            self.out.clear()
        if self.transport.get_write_buffer_size() > MAX_BACKLOG:
            self.close("over 1 MiB of replies left unread", flush=False)
        elif self.eof and not self.held:
            # transport.close() writes what is buffered, then closes.
            self.close("done after EOF", flush=True)

    def places_answered(self, request, reply, at_line):
        """deliver_answer in event_loop/clients.rs: release what this answer held up."""
        if self.closed:
            return
        self.server.log.event(f"client#{self.id} > {esc(at_line)} "
                              f"(+ Places JSON, {len(reply)} bytes)")
        for slot in self.held:
            if slot[0] == request:
                slot[0], slot[1] = None, reply
                break
        while self.held and self.held[0][1] is not None:
            self.out += self.held.popleft()[1]
        self.flush()

    def idle_check(self):
        if self.closed:
            return
        idle = self.server.idle_timeout
        quiet = self.server.loop.time() - self.last_active
        if quiet >= idle and not self.held:
            self.close("idle too long", flush=True)
        else:
            self.idle_timer = self.server.loop.call_later(max(idle - quiet, 0.01), self.idle_check)

    def close(self, why, flush):
        if self.closed:
            return
        self.closed = True
        self.server.clients -= 1
        self.server.log.event(f"client#{self.id} {self.addr} closed: {why}")
        if self.idle_timer:
            self.idle_timer.cancel()
        if flush:
            self.transport.close()
        else:
            self.transport.abort()


# ----- peer links (herd/link.rs and event_loop/peers.rs) ----------------------------

class Link:
    """Our link to one neighbour: Backoff -> Dialing -> Greeting -> Up, and back
    to Backoff on any failure. set_state logs every transition (link.rs)."""

    def __init__(self, name, host, port):
        self.name, self.host, self.port = name, host, port
        self.state = "Backoff"
        self.conn = None        # PeerOut while Greeting or Up
        self.attempt = None     # the connection number of the current dial
        self.timer = None       # backoff, or the dial/greeting timeout
        self.task = None        # the create_connection task while Dialing
        self.failures = 0
        self.incoming = None    # the PeerIn the neighbour dialed to us
        self.since = time.time_ns()  # when state was entered, for /status

    def set_state(self, log, state, why):
        log.event(f"link {self.name}: {self.state} => {state} ({why})")
        self.state = state
        self.since = time.time_ns()


class PeerConn(asyncio.Protocol):
    """What both directions of a peer link share: lines in, queued lines out."""

    def __init__(self, server, conn_id):
        self.server = server
        self.id = conn_id
        self.transport = None
        self.lines = LineBuffer()
        self.pending = bytearray()   # written at the end of the turn (flush_peers)
        self.allowance = PEER_BACKLOG
        self.closed = False
        self.last_heard = server.loop.time()
        # Heartbeats are counted, not logged line by line (docs/spec.md §6):
        # the counts are on the line that logs the connection's close.
        self.heartbeats = 0

    def queue(self, data):
        self.pending += data
        self.server.dirty.add(self)

    def backlog(self):
        return self.transport.get_write_buffer_size() + len(self.pending)

    def flush(self):
        if self.closed:
            return
        if self.pending:
            self.transport.write(bytes(self.pending))
            self.pending.clear()
        if self.transport.get_write_buffer_size() == 0:
            self.allowance = PEER_BACKLOG  # the catch-up has drained
            self.catch_up_drained()

    def resume_writing(self):
        # With a low-water mark of 0 (PeerOut), this means: all written.
        self.flush()

    def catch_up_drained(self):
        pass

    def data_received(self, data):
        if self.closed:
            return
        self.last_heard = self.server.loop.time()
        lines, too_long = self.lines.feed(data)
        for line in lines:
            if self.closed:
                return
            self.line_received(line)
        if too_long:
            self.close("line too long")
        self.server.flush_peers()

    def connection_lost(self, exc):
        if not self.closed:
            self.close(f"read error: {exc}" if exc else "closed by the neighbour")


class PeerOut(PeerConn):
    """Our dialed connection: it carries our updates and PINGs; the neighbour
    answers WELCOME or REFUSED, then PONGs."""

    def __init__(self, server, link, conn_id):
        super().__init__(server, conn_id)
        self.link = link
        self.catch_up = None    # (positions, bytes, start) until it has drained

    def catch_up_drained(self):
        """One summary line per catch-up sent, once the kernel has it all."""
        if self.catch_up is None:
            return
        positions, size, start = self.catch_up
        self.catch_up = None
        ms = (self.server.loop.time() - start) * 1000
        self.server.log.event(f"link {self.link.name}: catch-up of {positions} positions sent "
                              f"({size} bytes, {ms:.1f} ms)")

    def connection_made(self, transport):
        self.transport = transport
        s, link = self.server, self.link
        if link.state != "Dialing" or link.attempt != self.id:
            self.closed = True  # a dial that was given up meanwhile
            transport.abort()
            return
        link.conn = self
        link.timer.cancel()
        # resume_writing then tells when a catch-up has fully drained.
        transport.set_write_buffer_limits(high=64 * 1024, low=0)
        transport.write(b"HELLO " + s.name_bytes + b"\n")
        s.log.event(f"peer-out {link.name}#{self.id} > HELLO {s.name}")
        link.timer = s.loop.call_later(LINK_TIMEOUT, s.link_timeout, link, self.id)
        link.set_state(s.log, "Greeting", "connected, HELLO sent")

    def line_received(self, line):
        s, link = self.server, self.link
        kind, value = parse_peer_line(line)
        if kind == "PONG":
            self.heartbeats += 1
            return
        s.log.event(f"peer-out {link.name}#{self.id} < {esc(line)}")
        if kind == "WELCOME" and value == link.name.encode():
            if link.state == "Greeting" and link.conn is self:
                s.link_up(link)
        elif kind == "REFUSED":
            self.close(f"refused: {esc(value)}")
        elif kind != "BLANK":
            s.log.event(f"peer-out {link.name}: unexpected line ignored")

    def eof_received(self):
        self.close("closed by the neighbour")
        return False

    def close(self, why):
        if self.closed:
            return
        self.closed = True
        self.server.log.event(f"peer-out {self.link.name}#{self.id} closed: {why} "
                              f"({self.heartbeats} PINGs answered)")
        self.transport.abort()
        if self.link.conn is self:
            self.server.back_off(self.link, why)


class PeerIn(PeerConn):
    """A neighbour's connection to us: HELLO first, then its updates and PINGs."""

    def __init__(self, server):
        super().__init__(server, server.next_conn_id())
        self.link = None
        self.hello_timer = None
        # The neighbour's catch-up: every AT line between its HELLO and its
        # first PING (it queues the catch-up before any PING), summarised in
        # one line. [positions, new, bytes, start, last]
        self.catch_up = None

    def end_catch_up(self, how):
        if self.catch_up is None:
            return
        positions, new, size, start, last = self.catch_up
        self.catch_up = None
        self.server.log.event(f"link from {self.link.name}: catch-up of {positions} positions "
                              f"received ({new} new, {size} bytes, {(last - start) * 1000:.1f} ms; {how})")

    def connection_made(self, transport):
        self.transport = transport
        s = self.server
        s.log.event(f"peer-in #{self.id} {peer_addr(transport)} connected")
        self.hello_timer = s.loop.call_later(LINK_TIMEOUT, self.hello_timeout)

    def hello_timeout(self):
        if self.link is None:
            self.close("no HELLO in time")

    def label(self):
        return self.link.name if self.link else "?"

    def line_received(self, line):
        """peer_line_received in event_loop/peers.rs."""
        s = self.server
        kind, value = parse_peer_line(line)
        if self.link is not None and kind == "PING":
            self.transport.write(b"PONG\n")
            self.heartbeats += 1
            self.end_catch_up("ended by the first PING")
            return
        if self.catch_up is not None and kind == "AT":
            client, time_ns, at = value
            new = s.store.update(client, time_ns, at)
            c = self.catch_up
            c[0] += 1
            c[1] += new
            c[2] += len(line) + 1
            c[4] = s.loop.time()
            if new:
                s.flood(at, self.link)
            return
        s.log.event(f"peer-in {self.label()}#{self.id} < {esc(line)}")
        if kind == "BLANK":
            return
        if self.link is None:
            if kind != "HELLO":
                self.transport.write(b"REFUSED HELLO expected\n")
                self.close("no HELLO")
                return
            link = s.links_by_name.get(value)
            if link is None:
                self.transport.write(b"REFUSED not a neighbour\n")
                self.close(f"refused HELLO from {esc(value)}: not a neighbour")
                return
            self.link = link
            self.hello_timer.cancel()
            now = s.loop.time()
            self.catch_up = [0, 0, 0, now, now]
            self.transport.write(b"WELCOME " + s.name_bytes + b"\n")
            s.link_greeted(link, self)
        elif kind == "AT":
            client, time_ns, at = value
            new = s.store.update(client, time_ns, at)
            s.log.event(f"update from {self.link.name} {'new' if new else 'known'}: {esc(client)}")
            if new:
                s.accepted(at, self.link)
                s.flood(at, self.link)
        else:
            s.log.event(f"peer-in {self.link.name}#{self.id}: invalid line ignored")

    def eof_received(self):
        for line in self.lines.finish():
            if not self.closed:
                self.line_received(line)
        self.close("closed by the neighbour")
        return False

    def close(self, why):
        if self.closed:
            return
        self.closed = True
        s = self.server
        self.end_catch_up("cut short by the close")
        s.log.event(f"peer-in {self.label()}#{self.id} closed: {why} ({self.heartbeats} PINGs answered)")
        self.hello_timer.cancel()
        self.transport.close()  # after what is owed (WELCOME, REFUSED, PONG)
        if self.link and self.link.incoming is self:
            self.link.incoming = None
            s.log.event(f"link from {self.link.name}: down ({why})")


# ----- the server: store, links, flooding (Herd + EventLoop in Rust) ----------

class Server:
    def __init__(self, loop, opts, log, places, neighbours):
        self.loop = loop
        self.name = opts["name"]
        self.name_bytes = self.name.encode()
        self.log = log
        self.places = places
        self.store = Store()
        self.links = [Link(n, host, port) for n, host, port in neighbours]
        self.links_by_name = {l.name.encode(): l for l in self.links}
        self.max_clients = opts["max_clients"]
        self.idle_timeout = opts["idle_timeout"]
        self.clients = 0
        self.conn_count = 0
        self.dirty = set()   # peers written to this turn (dirty_peers in Rust)
        # For GET /status: the last 50 updates accepted, and what to show.
        self.recent = deque(maxlen=RECENT)
        self.started = time.time_ns()
        self.herd = opts["herd"]
        self.addresses = {}
        self.http_conns = 0

    def accepted(self, at, link):
        """A new position: remembered for /status with where and when it came."""
        self.recent.append((at, link.name if link else "client", time.time_ns()))

    def next_conn_id(self):
        """Connection numbers count every connection opened or accepted."""
        self.conn_count += 1
        return self.conn_count

    def flood(self, at, came_from):
        """A new position goes to every neighbour whose link is up, except the
        one it came from (event_loop/peers.rs: flood). Not up: the catch-up carries it."""
        for link in self.links:
            conn = link.conn
            if link is came_from or link.state != "Up" or conn is None or conn.closed:
                continue
            conn.queue(at + b"\n")
            self.log.event(f"peer-out {link.name}#{conn.id} > {esc(at)}")
            if conn.backlog() > conn.allowance:
                conn.close("peer output backlog over its bound")

    def flush_peers(self):
        dirty, self.dirty = self.dirty, set()
        for conn in dirty:
            conn.flush()

    # Our side of each link: dial, greet, up, back off.

    def dial(self, link):
        """asyncio's create_connection, as a task; its timeout is a call_later."""
        link.attempt = conn_id = self.next_conn_id()
        link.conn = None
        link.set_state(self.log, "Dialing", f"dialing {show_addr(link.host, link.port)}")
        link.timer = self.loop.call_later(LINK_TIMEOUT, self.link_timeout, link, conn_id)
        link.task = self.loop.create_task(self.connect(link, conn_id))

    async def connect(self, link, conn_id):
        try:
            await self.loop.create_connection(
                lambda: PeerOut(self, link, conn_id), link.host, link.port)
        except OSError as e:
            if link.state == "Dialing" and link.attempt == conn_id:
                self.back_off(link, f"dial failed: {e}")

    def link_timeout(self, link, conn_id):
        if link.attempt == conn_id and link.state in ("Dialing", "Greeting"):
            self.back_off(link, "timed out")

    def back_off(self, link, why):
        """The link failed: wait 100 ms doubling to 3.2 s, with jitter, then dial."""
        conn, link.conn, link.attempt = link.conn, None, None
        if conn and not conn.closed:
            conn.closed = True
            conn.transport.abort()
        if link.task and not link.task.done():
            link.task.cancel()
        if link.timer:
            link.timer.cancel()
        base = min(BACKOFF_MIN * 2 ** min(link.failures, 10), BACKOFF_MAX)
        delay = base * (0.75 + 0.5 * random.random())
        link.failures += 1
        link.timer = self.loop.call_later(delay, self.redial, link)
        link.set_state(self.log, "Backoff", f"{why}; retry in {int(delay * 1000)} ms")

    def redial(self, link):
        if link.state == "Backoff":
            self.dial(link)

    def link_up(self, link):
        """WELCOME: the link is up; the neighbour gets every position we know."""
        link.timer.cancel()
        link.failures = 0
        link.set_state(self.log, "Up", "WELCOME received")
        conn = link.conn
        before = conn.backlog()
        data = b"".join(at + b"\n" for _, at in self.store.positions.values())
        conn.queue(data)
        conn.allowance = PEER_BACKLOG + conn.backlog() - before
        # Summarised in one line (docs/spec.md §6) when it has drained.
        conn.catch_up = (len(self.store.positions), len(data), self.loop.time())
        self.flush_peers()

    def link_greeted(self, link, conn):
        """A neighbour said HELLO. If our link to it is backing off, it is
        evidently back: cancel the wait and dial now."""
        old, link.incoming = link.incoming, conn
        if old is not None and old is not conn and not old.closed:
            old.close("replaced by a new link from the same neighbour")
        self.log.event(f"link from {link.name}: up")
        if link.state == "Backoff":
            link.timer.cancel()
            link.failures = 0
            self.log.event(f"link {link.name}: HELLO from it, dialing back now")
            self.dial(link)

    def heartbeat(self):
        """PING every link that is up; close links, either way, silent too long."""
        now = self.loop.time()
        for link in self.links:
            up = link.conn if link.state == "Up" else None
            for conn in (up, link.incoming):
                if conn is None or conn.closed:
                    continue
                if now - conn.last_heard > SILENCE:
                    conn.close("silent too long")
                elif conn is up:
                    conn.queue(b"PING\n")
        self.flush_peers()
        self.loop.call_later(HEARTBEAT, self.heartbeat)


# ----- the read-only HTTP endpoint (src/http/, src/event_loop/http.rs) --------
# GET /status, the same document as the Rust server's (observe/status.rs), so
# that the live page draws an asyncio herd too, and GET /, the page itself
# (src/http/page.html, read from the repository). No /metrics: this herd keeps
# no counters, so the message and byte counts in /status stay 0.

RECENT = 50                      # updates kept for /status
HTTP_MAX_HEAD = 8 * 1024         # request line and headers
HTTP_HEAD_TIMEOUT = 5.0          # a head must arrive whole this soon (else 408)
HTTP_KEEP_ALIVE = 30.0           # an idle keep-alive connection is closed
HTTP_MAX_CONNS = 64
PAGE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "src", "http", "page.html")
REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
           408: "Request Timeout", 413: "Content Too Large",
           431: "Request Header Fields Too Large", 503: "Service Unavailable"}


def stamp(ns):
    """RFC 3339 UTC with microseconds, as the log writes it."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ns // NS)) + f".{ns % NS // 1000:06d}Z"


def http_response(status, content_type, body, keep_alive, head_only=False, cors=False):
    """src/http/response.rs: status line, the headers every response carries, body."""
    head = [f"HTTP/1.1 {status} {REASONS[status]}", f"Content-Type: {content_type}",
            f"Content-Length: {len(body)}",
            "Date: " + time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime()),
            "Cache-Control: no-store"]
    if cors:
        head.append("Access-Control-Allow-Origin: *")
    if status == 405:
        head.append("Allow: GET, HEAD")
    head.append("Connection: keep-alive" if keep_alive else "Connection: close")
    data = ("\r\n".join(head) + "\r\n\r\n").encode()
    return data if head_only else data + body


class HttpProtocol(asyncio.Protocol):
    """One HTTP connection (HttpProtocol in src/http/protocol.rs, with the
    same limits): each whole request head is answered at once; errors close."""

    def __init__(self, server):
        self.server = server
        self.buf = bytearray()
        self.closed = False
        self.timer = None
        self.id = 0

    def connection_made(self, transport):
        s = self.server
        self.transport = transport
        if s.http_conns >= HTTP_MAX_CONNS:
            transport.write(http_response(503, "text/plain", b"503 too many connections\n", False))
            transport.close()
            self.closed = True
            return
        s.http_conns += 1
        self.id = s.next_conn_id()
        s.log.event(f"http#{self.id} {peer_addr(transport)} connected")
        self.arm(HTTP_KEEP_ALIVE)

    def arm(self, delay):
        if self.timer:
            self.timer.cancel()
        self.timer = self.server.loop.call_later(delay, self.timed_out)

    def timed_out(self):
        if self.buf:
            self.transport.write(http_response(408, "text/plain", b"408 Request Timeout\n", False))
            self.close("request head not complete in 5 s")
        else:
            self.close("idle keep-alive connection")

    def data_received(self, data):
        if self.closed:
            return
        was_empty = not self.buf
        self.buf += data
        while self.buf and not self.closed:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0 or end + 4 > HTTP_MAX_HEAD:
                if len(self.buf) > HTTP_MAX_HEAD or end >= 0:
                    self.refuse(431, "request head over 8 KiB")
                elif was_empty:
                    self.arm(HTTP_HEAD_TIMEOUT)  # a new request has begun
                return
            head, self.buf = bytes(self.buf[:end]), self.buf[end + 4:]
            self.request(head.decode("latin-1").split("\r\n"))
            was_empty = True
        if not self.closed:
            self.arm(HTTP_KEEP_ALIVE)

    def request(self, lines):
        parts = lines[0].split(" ")
        if len(parts) != 3 or parts[2] not in ("HTTP/1.0", "HTTP/1.1") or not parts[1].startswith("/"):
            return self.refuse(400, "malformed request head")
        method, target, version = parts
        headers = {}
        for line in lines[1:]:
            name, colon, value = line.partition(":")
            if not colon:
                return self.refuse(400, "malformed request head")
            headers[name.strip().lower()] = value.strip()
        if len(headers) > 32:
            return self.refuse(431, "more than 32 header fields")
        if method not in ("GET", "HEAD"):
            return self.refuse(405, "only GET and HEAD are served")
        if headers.get("content-length", "0") != "0" or "transfer-encoding" in headers:
            return self.refuse(413, "request bodies are not accepted")
        if version == "HTTP/1.1" and "host" not in headers:
            return self.refuse(400, "HTTP/1.1 request without Host")
        tokens = [t.strip().lower() for t in headers.get("connection", "").split(",")]
        keep = "close" not in tokens if version == "HTTP/1.1" else "keep-alive" in tokens
        path = target.split("?")[0].split("#")[0]
        cors = False
        if path == "/status":
            status, ctype, cors = 200, "application/json", True
            body = (json.dumps(server_status(self.server)) + "\n").encode()
        elif path in ("/", "/index.html") and os.path.exists(PAGE):
            with open(PAGE, "rb") as f:
                status, ctype, body = 200, "text/html; charset=utf-8", f.read()
        else:
            status, ctype, body = 404, "text/plain; charset=utf-8", b"404 Not Found: try / or /status\n"
        self.transport.write(http_response(status, ctype, body, keep, method == "HEAD", cors))
        if not keep:
            self.close("done (no keep-alive)")

    def refuse(self, status, why):
        body = f"{status} {REASONS[status]}: {why}\n".encode()
        self.transport.write(http_response(status, "text/plain; charset=utf-8", body, False))
        self.close(why)

    def eof_received(self):
        self.close("closed by the client")
        return False

    def connection_lost(self, exc):
        self.close("connection lost")

    def close(self, why):
        if self.closed:
            return
        self.closed = True
        self.buf = bytearray()
        if self.timer:
            self.timer.cancel()
        self.server.http_conns -= 1
        self.server.log.event(f"http#{self.id} closed: {why}")
        self.transport.close()  # after what was written


def herd_view(herd):
    """The herd file as /status shows it (observe::HerdView)."""
    servers, links = [], []
    for i, spec in enumerate(herd):
        http = spec.http
        if http is None and spec.client[1] + 20000 <= 65535:  # run_herd.sh's default
            http = (spec.client[0], spec.client[1] + 20000)
        servers.append({"name": spec.name, "client": show_addr(*spec.client),
                        "peer": show_addr(*spec.peer), "http": http and show_addr(*http),
                        "neighbours": spec.neighbours})
        later = {s.name for s in herd[i + 1:]}
        links += [[spec.name, n] for n in spec.neighbours if n in later]
    return {"servers": servers, "links": links}


def server_status(s):
    """GET /status: the document of observe/status.rs."""
    now = time.time_ns()
    links = []
    for link in s.links:
        conn = link.conn if link.state == "Up" else None
        links.append({
            "neighbour": link.name, "state": link.state.lower(), "since": stamp(link.since),
            "incoming": link.incoming is not None and not link.incoming.closed, "tls": False,
            "failures": link.failures, "unsent_bytes": conn.backlog() if conn else 0,
            "sent": {"messages": 0, "bytes": 0, "floods": 0},
            "received": {"messages": 0, "bytes": 0, "new": 0, "known": 0},
        })
    recent = [{"client": at.split()[3].decode("utf-8", "replace"),
               "at": at.decode("utf-8", "replace"), "from": origin,
               "time": stamp(ns), "time_us": ns // 1000}
              for at, origin, ns in reversed(s.recent)]
    return {
        "server": s.name, "version": VERSION, "implementation": "asyncio",
        "started": stamp(s.started), "now": stamp(now), "now_us": now // 1000,
        "uptime_seconds": round((now - s.started) / NS, 3),
        "addresses": s.addresses, "herd": herd_view(s.herd), "links": links,
        "counts": {"positions": len(s.store.positions), "clients": s.clients,
                   "http_connections": s.http_conns},
        "recent": recent,
    }



# ----- Places: Google's JSON style (places/google_json.rs) --------------------

class Num(str):
    """A JSON number kept as the text Google wrote (no float round trip)."""


def keep_number(text):
    # serde_json (arbitrary_precision) writes an exponent as e with a sign:
    # 1E5 -> 1e+5. Matched here so both servers print the same bytes.
    m = re.fullmatch(r"([^eE]*)[eE]([+-]?)(\d+)", text)
    if m:
        text = f"{m[1]}e{m[2] or '+'}{m[3]}"
    return Num(text)


def reject_constant(name):
    raise ValueError(f"{name} is not JSON")


def parse_json(body):
    """JSON with key order kept (dicts keep insertion order) and number text kept."""
    return json.loads(body.decode("utf-8"), parse_float=keep_number, parse_int=keep_number,
                      parse_constant=reject_constant, object_pairs_hook=dict)


def is_text(v):
    return isinstance(v, str) and not isinstance(v, Num)


ESCAPES = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t",
           "\b": "\\b", "\f": "\\f", "<": "\\u003c", ">": "\\u003e"}
NEEDS_ESCAPE = re.compile(r'["\\<>\x00-\x1f\x7f]')


def google_string(s):
    return '"' + NEEDS_ESCAPE.sub(
        lambda m: ESCAPES.get(m[0]) or f"\\u{ord(m[0]):04x}", s) + '"'


def google_style(v, level=0):
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


def squeeze(text):
    """Runs of newlines to one, trailing ones dropped, then the reply's "\\n\\n"."""
    return re.sub(r"\n{2,}", "\n", text).rstrip("\n") + "\n\n"


def error_json(message, status="UNKNOWN_ERROR"):
    return squeeze(google_style({"error_message": message, "html_attributions": [],
                                 "results": [], "status": status}))


# ----- Places: the reply pipeline (places/new_api.rs: render_reply) -----------

def render_reply(api, status, body, bound):
    """A Places answer to (reply JSON text, number of results or why none)."""
    http_ok = 200 <= status < 300
    try:
        parsed, detail = parse_json(body), None
        ok = True
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


def new_to_legacy(answer):
    places = answer.get("places")
    results = [place_to_result(p) for p in places] if isinstance(places, list) else []
    return {"html_attributions": [], "results": results,
            "status": "OK" if results else "ZERO_RESULTS"}


def place_to_result(place):
    """One Places API (New) place as a legacy result, keys in the legacy order."""
    if not isinstance(place, dict):
        return {}
    result = {}
    if "businessStatus" in place:
        result["business_status"] = place["businessStatus"]
    loc = place.get("location")
    location = {}
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


def legacy_reply(answer, bound, http):
    results = answer.get("results")
    sent = 0
    if isinstance(results, list):
        del results[bound:]
        sent = len(results)
    status = answer.get("status")
    status = status if is_text(status) else None
    if status in ("OK", "ZERO_RESULTS"):
        outcome = sent
    elif status is not None:
        message = answer.get("error_message")
        outcome = (f"{status}: {message} (HTTP {http})" if is_text(message)
                   else f"{status} (HTTP {http})")
    else:
        outcome = f"Places answered HTTP {http} without a status"
    return squeeze(google_style(answer)), outcome


def google_error(error, http):
    """{"error": {"code", "message", "status"}} as a legacy error reply."""
    google_status = error.get("status") if is_text(error.get("status")) else ""
    legacy_status = {"PERMISSION_DENIED": "REQUEST_DENIED", "UNAUTHENTICATED": "REQUEST_DENIED",
                     "INVALID_ARGUMENT": "INVALID_REQUEST",
                     "RESOURCE_EXHAUSTED": "OVER_QUERY_LIMIT"}.get(google_status, "UNKNOWN_ERROR")
    message = error.get("message")
    if not is_text(message):
        message = f"Places answered HTTP {http}"
    return error_json(message, legacy_status), \
        f"{legacy_status}: {message} (HTTP {http}, {google_status or 'no status'})"


def failure(message, detail=None):
    """Our own error reply: message to the client, detail only to the log."""
    return error_json(message), (f"UNKNOWN_ERROR: {message} ({detail})" if detail
                                 else f"UNKNOWN_ERROR: {message}")


# ----- Places: requests (places/http.rs) ---------------------------------------

def percent_encode(text):
    """Everything but RFC 3986 unreserved characters as %XX."""
    return "".join(chr(b) if chr(b).isalnum() and b < 128 or b in b"-._~" else f"%{b:02X}"
                   for b in text.encode())


def json_number(text):
    """A number's text as JSON accepts it: no '+', no leading zeros."""
    t = text.removeprefix("+")
    sign, digits = ("-", t[1:]) if t.startswith("-") else ("", t)
    whole = len(digits) - len(digits.lstrip("0123456789"))
    zeros = min(len(digits[:whole]) - len(digits[:whole].lstrip("0")), max(whole - 1, 0))
    candidate = sign + digits[zeros:]
    if re.fullmatch(r"-?(0|[1-9]\d*)(\.\d+)?([eE][+-]?\d+)?", candidate, re.ASCII):
        return candidate
    return json.dumps(text)


class Endpoint:
    """An https:// URL taken apart (http.rs: Endpoint::parse)."""

    def __init__(self, url):
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
        self.host = m[1] or m[3]
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

    def legacy_target(self, lat, lon, radius, key_text):
        target = self.path + "?"
        if self.query:
            target += self.query if self.query.endswith("&") else self.query + "&"
        return (target + f"location={percent_encode(lat)},{percent_encode(lon)}"
                f"&radius={percent_encode(radius)}&key={key_text}")

    def new_target(self):
        return f"{self.path}?{self.query}" if self.query else self.path


def redact_keys(target):
    """Any key= parameter's value shown as ***, even one written into the URL."""
    path, sep, query = target.partition("?")
    if not sep:
        return target
    params = [p.split("=", 1)[0] + "=***" if "=" in p and p.split("=", 1)[0].lower() == "key"
              else p for p in query.split("&")]
    return path + "?" + "&".join(params)


class HttpError(Exception):
    """A response that breaks HTTP/1.1 framing."""


async def read_response(reader):
    """Reads one HTTP/1.1 response: (status, body, keep_alive). Content-Length,
    chunked, or read-to-close bodies; 1xx interim responses are skipped."""
    while True:
        status_line = await reader.readline()
        if not status_line:
            raise HttpError("connection closed before the response")
        m = re.fullmatch(rb"HTTP/1\.([01]) (\d{3})(?: .*)?\r?\n", status_line, re.S)
        if not m:
            raise HttpError(f"bad status line {esc(status_line[:80])}")
        version, status = int(m[1]), int(m[2])
        headers = {}
        while True:
            line = await reader.readline()
            if line in (b"\r\n", b"\n"):
                break
            if not line.endswith(b"\n") or b":" not in line:
                raise HttpError("bad header line")
            name, _, value = line.partition(b":")
            headers.setdefault(name.strip().lower(), []).append(value.strip())
            if len(headers) > 100:
                raise HttpError("too many header fields")
        if 100 <= status < 200 and status != 101:
            continue
        break
    if status == 101:
        raise HttpError("unexpected 101 Switching Protocols")
    connection = b",".join(headers.get(b"connection", [])).lower()
    keep_alive = version == 1 and b"close" not in connection
    te, cl = headers.get(b"transfer-encoding"), headers.get(b"content-length")
    if te and cl:
        raise HttpError("both Content-Length and Transfer-Encoding")
    if status in (204, 304) or 100 <= status < 200:
        return status, b"", keep_alive
    if te:
        if b",".join(te).lower().strip() != b"chunked" or version == 0:
            raise HttpError("unsupported Transfer-Encoding")
        body = bytearray()
        while True:
            size_line = await reader.readline()
            try:
                size = int(size_line.split(b";")[0].strip(), 16)
            except ValueError:
                raise HttpError("bad chunk size") from None
            if size == 0:
                while (await reader.readline()) not in (b"\r\n", b"\n", b""):
                    pass  # trailers are dropped
                return status, bytes(body), keep_alive
            if len(body) + size > PLACES_MAX_BODY:
                raise HttpError("body too large")
            body += await reader.readexactly(size)
            if (await reader.readline()).strip():
                raise HttpError("bad chunk ending")
    if cl:
        if len(set(cl)) != 1 or not cl[0].isdigit() or int(cl[0]) > PLACES_MAX_BODY:
            raise HttpError("bad Content-Length")
        return status, await reader.readexactly(int(cl[0])), keep_alive
    body = await reader.read(PLACES_MAX_BODY + 1)  # close-delimited
    while len(body) <= PLACES_MAX_BODY:
        more = await reader.read(PLACES_MAX_BODY + 1 - len(body))
        if not more:
            return status, body, False
        body += more
    raise HttpError("body too large")


class PlacesClient:
    """HTTPS to Places with a keep-alive pool (places/client.rs). Each WHATSAT
    is a task, so other clients never wait for it; the Rust loop runs a state
    machine per request instead. Log lines and error texts are the Rust ones."""

    def __init__(self, opts, key):
        self.api = opts["places_api"]
        self.endpoint = Endpoint(opts["places_url"])
        self.key = key or ""
        self.ca = opts["places_ca"]
        self.ssl = None       # built on first use: loading the CA store takes a while
        self.idle = []        # [reader, writer, conn id, expiry TimerHandle]
        self.requests = 0
        self.server = None    # set once the Server exists
        self.tasks = set()

    def next_request(self):
        self.requests += 1
        return self.requests

    def context(self):
        if self.ssl is None:
            self.ssl = ssl.create_default_context()
            if self.ca:
                self.ssl.load_verify_locations(cafile=self.ca)
        return self.ssl

    def start(self, client, request, at_line, coords, radius, bound):
        task = asyncio.get_running_loop().create_task(
            self.fetch(client, request, at_line, coords, radius, bound))
        self.tasks.add(task)  # keep a reference until it is done
        task.add_done_callback(self.tasks.discard)

    def build(self, coords, radius, bound):
        """The request bytes and how the log shows them (never the key): http.rs."""
        ep, (lat, lon) = self.endpoint, coords
        head = ("Host: {}\r\nUser-Agent: proxy-herd/{}\r\nAccept: application/json\r\n"
                "Connection: keep-alive\r\n").format(ep.authority, VERSION)
        if self.api == "legacy":
            target = ep.legacy_target(lat, lon, radius, percent_encode(self.key))
            shown = "GET https://" + ep.authority + redact_keys(
                ep.legacy_target(lat, lon, radius, "***"))
            return f"GET {target} HTTP/1.1\r\n{head}\r\n".encode(), shown
        body = ('{"maxResultCount":%d,"locationRestriction":{"circle":{"center":'
                '{"latitude":%s,"longitude":%s},"radius":%s}}}'
                % (bound, json_number(lat), json_number(lon), json_number(radius)))
        key = "".join(c for c in self.key if "!" <= c <= "~")
        request = (f"POST {ep.new_target()} HTTP/1.1\r\n{head}Content-Type: application/json\r\n"
                   f"X-Goog-Api-Key: {key}\r\nX-Goog-FieldMask: {FIELD_MASK}\r\n"
                   f"Content-Length: {len(body)}\r\n\r\n{body}")
        shown = f"POST https://{ep.authority}{redact_keys(ep.new_target())} {body}"
        return request.encode(), shown

    async def fetch(self, client, request, at_line, coords, radius, bound):
        log = self.server.log
        loop = asyncio.get_running_loop()
        data, shown = self.build(coords, radius, bound)
        log.event(f"places#{request} request {shown} for client#{client.id}")
        start = loop.time()
        try:
            status, body = await asyncio.wait_for(self.exchange(request, data), PLACES_TIMEOUT)
            json_text, outcome = render_reply(self.api, status, body, bound)
        except asyncio.TimeoutError:
            json_text, outcome = None, f"no answer in {PLACES_TIMEOUT:.0f} s"
        except PlacesFailure as e:
            json_text, outcome = None, str(e)
        ms = (loop.time() - start) * 1000
        if isinstance(outcome, int):
            log.event(f"places#{request} answered: HTTP {status}, {outcome} results, in {ms:.3f} ms")
        else:
            log.event(f"places#{request} failed: {outcome} after {ms:.3f} ms")
        if json_text is None:
            json_text = error_json(f"Places request failed: {outcome}")
        if client.closed:
            log.event(f"places#{request} answer dropped: its client has gone")
            return
        reply = at_line + b"\n" + json_text.encode("utf-8", "replace")
        client.places_answered(request, reply, at_line)

    async def exchange(self, request, data):
        """One request on an idle pooled connection, or on a new one. A pooled
        connection the server had closed meanwhile gets one retry, fresh."""
        log = self.server.log
        while self.idle:
            reader, writer, conn_id, expiry = self.idle.pop()
            expiry.cancel()
            if writer.is_closing() or reader.at_eof():
                writer.close()
                continue
            log.event(f"places conn#{conn_id} reused for places#{request}")
            try:
                return await self.send(reader, writer, conn_id, data)
            except PlacesFailure as e:
                log.event(f"places#{request} retried on a fresh connection: {e}")
                break
        reader, writer, conn_id = await self.open(request)
        return await self.send(reader, writer, conn_id, data)

    async def open(self, request):
        ep, log = self.endpoint, self.server.log
        conn_id = self.server.next_conn_id()
        log.event(f"places conn#{conn_id} connecting for places#{request}")
        try:
            reader, writer = await asyncio.open_connection(
                ep.host, ep.port, ssl=self.context(), server_hostname=ep.host)
        except ssl.SSLError as e:  # before OSError: it is one
            raise PlacesFailure(f"TLS: {e}") from None
        except OSError as e:
            raise PlacesFailure(f"connect failed: {e}") from None
        tls = writer.get_extra_info("ssl_object")
        log.event(f"places conn#{conn_id} TLS handshake done ({tls.version() if tls else '?'})")
        return reader, writer, conn_id

    async def send(self, reader, writer, conn_id, data):
        keep = False
        try:
            writer.write(data)
            await writer.drain()
            status, body, keep = await read_response(reader)
            return status, body
        except (OSError, HttpError, EOFError, ValueError, asyncio.LimitOverrunError) as e:
            raise PlacesFailure(f"HTTP: {e or type(e).__name__}") from None
        finally:
            # Pool only a connection that ended cleanly with nothing extra read.
            if keep and not reader._buffer and len(self.idle) < PLACES_POOL:
                loop = asyncio.get_running_loop()
                entry = [reader, writer, conn_id, None]
                entry[3] = loop.call_later(PLACES_IDLE_FOR, self.expire, entry)
                self.idle.append(entry)
            else:
                writer.close()

    def expire(self, entry):
        """An idle connection unused for PLACES_IDLE_FOR is closed."""
        if entry in self.idle:
            self.idle.remove(entry)
            entry[1].close()


class PlacesFailure(Exception):
    """Why a Places request failed, in the Rust client's words."""


# ----- start and stop (src/bin/proxy-herd.rs) ---------------------------------

def resolve(host, port):
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return infos[0][4][0]


async def serve(opts):
    loop = asyncio.get_running_loop()
    herd = {s.name: s for s in opts["herd"]}
    me = herd[opts["name"]]
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
    if opts["places_ca"] and not os.access(opts["places_ca"], os.R_OK):
        print(f"herd.py: --places-ca: cannot read {opts['places_ca']}", file=sys.stderr)
        return 2
    try:
        log = Log(opts["log"])
    except OSError as e:
        print(f"herd.py: cannot open the log {opts['log']}: {e}", file=sys.stderr)
        return 1
    server = Server(loop, opts, log, places, neighbours)
    places.server = server
    client_port = opts["port"] or me.client[1]
    listeners = []
    # The HTTP endpoint first: once the client port answers, so does it.
    http = opts["http"] or me.http
    if http:
        try:
            listeners.append(await loop.create_server(lambda: HttpProtocol(server), *http))
        except OSError as e:
            print(f"herd.py: cannot listen on {show_addr(*http)}: {e}", file=sys.stderr)
            return 1
    for host, port, factory in ((client_host, client_port, lambda: ClientProtocol(server)),
                                (peer_host, me.peer[1], lambda: PeerIn(server))):
        try:
            listeners.append(await loop.create_server(factory, host, port))
        except OSError as e:
            for l in listeners:
                l.close()
            import errno
            if e.errno == errno.EADDRINUSE:
                print(f"herd.py: address {show_addr(host, port)} is already in use", file=sys.stderr)
            else:
                print(f"herd.py: cannot listen on {show_addr(host, port)}: {e}", file=sys.stderr)
            return 1
    log.loop = loop
    addrs = [show_addr(*l.sockets[0].getsockname()[:2]) for l in listeners]
    http_addr = addrs.pop(0) if http else ""
    server.addresses = {"client": addrs[0], "peer": addrs[1], "http": http_addr}
    log.event(f"{server.name} listening for clients on {addrs[0]} and for peers on {addrs[1]}")
    if http:
        log.event(f"HTTP endpoint on http://{http_addr}/")
    log.flush()

    stop = loop.create_future()
    for signum, name in ((signal.SIGINT, "SIGINT"), (signal.SIGTERM, "SIGTERM")):
        loop.add_signal_handler(signum, lambda n=name: stop.done() or stop.set_result(n))
    loop.add_signal_handler(signal.SIGHUP, log.reopen)
    for link in server.links:
        server.dial(link)
    loop.call_later(HEARTBEAT, server.heartbeat)

    why = await stop
    for l in listeners:
        l.close()
    server.flush_peers()
    log.event(f"{server.name} stopping on {why}")
    log.flush()
    log.file.close()
    return 0


def main(argv):
    try:
        opts = parse_args(argv)
    except UsageError as e:
        print(f"herd.py: {e}", file=sys.stderr)
        return 2
    if opts == "help":
        print(HELP)
        return 0
    if opts == "version":
        print(f"proxy-herd {VERSION} (asyncio)")
        return 0
    if opts["uvloop"]:
        try:
            import uvloop
        except ImportError:
            print("herd.py: uvloop was asked for but is not installed (pip install uvloop)",
                  file=sys.stderr)
            return 2
        # asyncio.run then makes a uvloop event loop; nothing else changes.
        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    return asyncio.run(serve(opts))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
