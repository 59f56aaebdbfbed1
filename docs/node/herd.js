#!/usr/bin/env node
// proxy-herd in Node.js: the same application-server herd as the Rust mio
// loop (docs/spec.md §3-6) and docs/asyncio/herd.py, with Node's standard
// library only (net, https, tls, fs, dns, util).
//
//     node docs/node/herd.js [OPTIONS] NAME [PORT]
//
// Node owns the event loop (libuv: one epoll, its timers, its thread pool for
// the log file and DNS); we write only the callbacks. Read it beside the Rust
// code and herd.py:
//
//     Rust (src/)                             here
//     event_loop/mod.rs   EventLoop::run      main() returns; libuv runs the loop
//     event_loop/clients.rs client_*          ClientConn ('data', 'end', 'error')
//     event_loop/peers.rs peer_out_*, dial    PeerOut + Server.dial / backOff
//     event_loop/peers.rs peer_in_*           PeerIn
//     timers.rs   call_later / cancel         setTimeout / clearTimeout
//     herd/store.rs  Store                    Store (a Map)
//     protocol/   parse_request ...           parse* functions below (pure)
//     places/     HTTP, JSON printer          PlacesClient (https.Agent), googleStyle
//     log.rs      Log, Escaped                Log, esc
//
// Bytes on the wire are held as 'latin1' strings: one character per byte, so
// client IDs need not be UTF-8, a line's length is its byte count, and
// comparing two strings with < compares their bytes (the store's tie-break).
'use strict';

const dns = require('dns');
const fs = require('fs');
const https = require('https');
const net = require('net');
const path = require('path');
const tls = require('tls');
const { X509Certificate } = require('crypto');
const { parseArgs } = require('util');
const { performance } = require('perf_hooks');

const VERSION = '0.1.0';

// Limits and delays, as in src/protocol/client.rs and src/event_loop/.
const MAX_LINE = 64 * 1024; // a longer line disconnects the client
const MAX_BACKLOG = 1024 * 1024; // unread replies beyond this disconnect it
const MAX_WAITING_PLACES = 64; // WHATSATs waiting for Places on one connection
const PEER_BACKLOG = 8 * 1024 * 1024; // a neighbour's unsent output bound (beyond its catch-up)
const LINK_TIMEOUT = 2000; // ms: a dial, or a greeting, that takes longer failed
const HEARTBEAT = 1000; // ms: PING this often...
const SILENCE = 5000; // ms: ...and a link silent this long is dead
const BACKOFF_MIN = 0.1;
const BACKOFF_MAX = 3.2; // seconds
const PLACES_TIMEOUT = 10000; // ms, for the whole request (retry included)
const PLACES_POOL = 16; // idle keep-alive connections kept to Places...
const PLACES_IDLE_FOR = 20000; // ...for at most this long (ms)
const PLACES_MAX_SOCKETS = 32; // connections to Places at once, as in Rust
const PLACES_MAX_BODY = 16 * 1024 * 1024;
const MAX_JSON_DEPTH = 128; // as the Rust re-printer (places/reprint.rs)
const LISTEN_BACKLOG = 4096; // Node's default is 511; 10,000 clients may connect at once
const NS = 1000000000n;

const LEGACY_URL = 'https://maps.googleapis.com/maps/api/place/nearbysearch/json';
const NEW_URL = 'https://places.googleapis.com/v1/places:searchNearby';
const FIELD_MASK = 'places.id,places.displayName,places.location,places.types,' +
  'places.businessStatus,places.rating,places.userRatingCount,' +
  'places.shortFormattedAddress,places.formattedAddress';

const DEFAULT_HERD_TEXT = `\
# The default herd (docs/spec.md §2). Peer ports default to client port + 10000.
Riley       127.0.0.1:12000    Jaquez Juzang
Jaquez      127.0.0.1:12001    Riley Bernard
Juzang      127.0.0.1:12002    Riley Bernard Campbell
Campbell    127.0.0.1:12003    Juzang Bernard
Bernard     127.0.0.1:12004    Jaquez Juzang Campbell
`;

/** Quotes a value in an error message the way Rust's {:?} does. */
function q(text) {
  return JSON.stringify(text);
}

/** A bad command line or herd file: one line, exit status 2. */
class UsageError extends Error {}

// ----- the herd file (src/herd/config.rs) ------------------------------------

const NAME_RE = /^[A-Za-z0-9_-]+$/;
const LABEL_RE = /^[A-Za-z0-9-]{1,63}$/;
// Rust's split_whitespace: Unicode White_Space (JS's \s differs: it has
// U+FEFF and lacks U+0085).
const UNICODE_WS = /[\t\n\v\f\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]+/;

/** Checks a host name or IPv4 address; returns why not, or null. */
function checkHost(host) {
  if (!host) return 'empty host';
  // Digits and dots are meant as IPv4: 127.0.0.300 is an error, not a name.
  if (/^[0-9.]*$/.test(host)) {
    return net.isIPv4(host) ? null : `${q(host)} is not an IPv4 address`;
  }
  if (host.length > 253) return 'host name longer than 253 characters';
  for (const label of host.split('.')) {
    if (!LABEL_RE.test(label) || label.startsWith('-') || label.endsWith('-')) {
      return `${q(host)} is not a valid host name`;
    }
  }
  return null;
}

/** A port: decimal digits only, 1..65535; returns [port, null] or [null, why]. */
function parsePortText(text) {
  if (!text) return [null, 'missing port'];
  if (!/^[0-9]+$/.test(text)) return [null, `port ${q(text)} is not a number`];
  const port = Number(text);
  if (!(port >= 1 && port <= 65535)) return [null, `port ${text} is out of range 1..65535`];
  return [port, null];
}

/** The canonical (compressed, lower-case) text of an IPv6 address, or null. */
function canonicalIPv6(text) {
  if (text.includes('%') || !net.isIPv6(text)) return null; // no zone ids (as in Rust)
  // The WHATWG URL parser prints IPv6 hosts in RFC 5952 form, as Rust does.
  return new URL(`http://[${text}]/`).hostname.slice(1, -1);
}

/** Parses host:port (name, IPv4 or [IPv6]) into {host, port}; throws Error saying why. */
function parseAddr(text) {
  let host;
  let portText;
  if (text.startsWith('[')) {
    const close = text.indexOf(']');
    if (close < 0) throw new Error(`bad address ${q(text)}: missing ']' after the IPv6 host`);
    const inside = text.slice(1, close);
    const after = text.slice(close + 1);
    if (!after.startsWith(':')) throw new Error(`bad address ${q(text)}: expected [IPv6]:PORT`);
    host = canonicalIPv6(inside);
    if (host === null) throw new Error(`bad address ${q(text)}: ${q(inside)} is not an IPv6 address`);
    portText = after.slice(1);
  } else {
    const colon = text.lastIndexOf(':');
    if (colon < 0) throw new Error(`bad address ${q(text)}: expected HOST:PORT`);
    host = text.slice(0, colon);
    portText = text.slice(colon + 1);
    if (host.includes(':')) {
      throw new Error(`bad address ${q(text)}: write an IPv6 host in brackets, as [::1]:PORT`);
    }
    const why = checkHost(host);
    if (why) throw new Error(`bad address ${q(text)}: ${why}`);
  }
  const [port, why] = parsePortText(portText);
  if (why) throw new Error(`bad address ${q(text)}: ${why}`);
  return { host, port };
}

function showAddr(host, port) {
  return host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`;
}

/** One line of the herd file: {name, client, peer, neighbours, line}. */
function parseHerdLine(fields, source, line) {
  const err = (message) => new UsageError(`${source}:${line}: ${message}`);
  const name = fields[0];
  if (!NAME_RE.test(name)) {
    throw err(`bad server name ${q(name)}: use letters, digits, '_' and '-'`);
  }
  if (fields.length < 2) throw err(`server ${name} has no client address`);
  let client;
  try {
    client = parseAddr(fields[1]);
  } catch (e) {
    throw err(`${name}: ${e.message}`);
  }
  let peer = null;
  const neighbours = [];
  for (const field of fields.slice(2)) {
    if (field.startsWith('peer=')) {
      if (peer !== null) throw err(`${name}: peer= given twice`);
      try {
        peer = parseAddr(field.slice(5));
      } catch (e) {
        throw err(`${name}: peer ${e.message}`);
      }
    } else if (field.includes('=')) {
      throw err(`${name}: unknown setting ${q(field)} (only peer=ADDR is known)`);
    } else if (!NAME_RE.test(field)) {
      throw err(`${name}: bad neighbour name ${q(field)}: use letters, digits, '_' and '-'`);
    } else if (field === name) {
      throw err(`${name} lists itself as a neighbour`);
    } else if (neighbours.includes(field)) {
      throw err(`${name} lists neighbour ${field} twice`);
    } else {
      neighbours.push(field);
    }
  }
  if (peer === null) {
    // The default peer port, as Redis Cluster does for its bus port.
    const port = client.port + 10000;
    if (port > 65535) {
      throw err(`${name}: the default peer port ${port} (client port + 10000) ` +
        'is above 65535; give one with peer=HOST:PORT');
    }
    peer = { host: client.host, port };
  }
  return { name, client, peer, neighbours, line };
}

/** Parses and validates herd file text: HerdConfig::parse. */
function parseHerd(text, source) {
  const servers = [];
  const rawLines = text.split('\n');
  for (let index = 0; index < rawLines.length; index++) {
    let raw = rawLines[index];
    if (raw.endsWith('\r')) raw = raw.slice(0, -1);
    const fields = raw.split('#', 1)[0].split(UNICODE_WS).filter((f) => f !== '');
    if (fields.length === 0) continue;
    const spec = parseHerdLine(fields, source, index + 1);
    const first = servers.find((s) => s.name === spec.name);
    if (first) {
      throw new UsageError(`${source}:${index + 1}: duplicate server name ${spec.name} ` +
        `(first on line ${first.line})`);
    }
    servers.push(spec);
  }
  if (servers.length === 0) throw new UsageError(`${source}: no servers in the herd file`);
  const byName = new Map(servers.map((s) => [s.name, s]));
  for (const s of servers) { // check_links: every link known, and written on both sides
    for (const n of s.neighbours) {
      const other = byName.get(n);
      if (!other) {
        throw new UsageError(`${source}:${s.line}: ${s.name} lists unknown neighbour ${n} ` +
          '(no server of that name in this file)');
      }
      if (!other.neighbours.includes(s.name)) {
        throw new UsageError(`${source}:${s.line}: ${s.name} lists ${n} as a neighbour but ${n} ` +
          `(line ${other.line}) does not list ${s.name}: links are bidirectional, ` +
          'write them on both lines');
      }
    }
  }
  const seen = []; // check_ports: hosts compared by text, names case-insensitively
  for (const s of servers) {
    for (const [kind, addr] of [['client', s.client], ['peer', s.peer]]) {
      const key = `${addr.host.toLowerCase()} ${addr.port}`;
      const clash = seen.find((x) => x.key === key);
      if (clash) {
        const whose = clash.server === s ? `its own ${clash.kind} address`
          : `the ${clash.kind} address of ${clash.server.name} (line ${clash.server.line})`;
        throw new UsageError(`${source}:${s.line}: ${s.name}: ${kind} address ` +
          `${showAddr(addr.host, addr.port)} collides with ${whose}`);
      }
      seen.push({ server: s, kind, key });
    }
  }
  return servers;
}

function loadHerd(file) {
  let data;
  try {
    data = fs.readFileSync(file);
  } catch (e) {
    throw new UsageError(`${file}: cannot read the herd file: ${systemMessage(e)}`);
  }
  const decoder = new TextDecoder('utf-8', { fatal: true });
  let text;
  try {
    text = decoder.decode(data);
  } catch {
    // Find the line: decode line by line until one fails.
    let line = 1;
    let start = 0;
    for (;;) {
      const nl = data.indexOf(10, start);
      const end = nl < 0 ? data.length : nl;
      try {
        decoder.decode(data.subarray(start, end));
      } catch {
        break;
      }
      if (nl < 0) break;
      start = nl + 1;
      line++;
    }
    throw new UsageError(`${file}:${line}: the herd file is not valid UTF-8`);
  }
  return parseHerd(text, file);
}

/** An OS error's text without Node's "ENOENT: " and syscall decorations. */
function systemMessage(e) {
  const m = /^[A-Z0-9_]+: (.*?), \w+ .*$/.exec(e.message);
  return m ? m[1] : e.message;
}

// ----- the command line (src/cli.rs) -----------------------------------------

const HELP = `\
Usage: herd.js [OPTIONS] NAME [PORT]

Run server NAME of an application-server herd (the Node.js counterpart of
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
                        extra trusted CA certificates (PEM), added to Node's
                        bundled root certificates
        --max-clients N accept at most N client connections at once
        --idle-timeout SECS
                        close a client connection idle for SECS seconds
    -h, --help          print this help and exit
    -V, --version       print the version and exit

Not implemented (the Rust server's options): --state, --herd-secret-file,
--peer-cert, --peer-key, --peer-ca, --max-positions, --http.

Environment:
    PLACES_API_KEY      the Google Places API key (never logged)`;

const OPTIONS = {
  config: { type: 'string', short: 'c' },
  log: { type: 'string', short: 'l' },
  'places-url': { type: 'string' },
  'places-api': { type: 'string' },
  'places-ca': { type: 'string' },
  'max-clients': { type: 'string' },
  'idle-timeout': { type: 'string' },
  help: { type: 'boolean', short: 'h' },
  version: { type: 'boolean', short: 'V' },
};

function parseNumber(option, text, low, high) {
  if (!/^[0-9]+$/.test(text) || !(Number(text) >= low && Number(text) <= high)) {
    throw new UsageError(`${option}: expected a whole number from ${low} to ${high}, got ${q(text)}`);
  }
  return Number(text);
}

/** The command line (without node and the script) to options, 'help' or 'version'. */
function parseCommandLine(argv) {
  let parsed;
  try {
    parsed = parseArgs({ args: argv, options: OPTIONS, allowPositionals: true, strict: true, tokens: true });
  } catch (e) {
    // parseArgs' messages may span lines; ours is one.
    throw new UsageError(`${e.message.replace(/\s*\n\s*/g, ' ')} (see --help)`);
  }
  const seen = new Set();
  for (const token of parsed.tokens) {
    if (token.kind !== 'option') continue;
    if (seen.has(token.name)) { // getopts' rule: an option given twice is an error
      throw new UsageError(`option ${token.name} given more than once (see --help)`);
    }
    seen.add(token.name);
  }
  const opts = parsed.values;
  for (const key of ['config', 'log', 'places-url', 'places-ca']) {
    if (opts[key] === '') throw new UsageError(`--${key}: empty value`);
  }
  if (opts.help) return 'help';
  if (opts.version) return 'version';
  const api = opts['places-api'] ?? 'legacy';
  if (api !== 'legacy' && api !== 'new') {
    throw new UsageError(`--places-api: expected 'legacy' or 'new', got ${q(api)}`);
  }
  const url = opts['places-url'] ?? (api === 'legacy' ? LEGACY_URL : NEW_URL);
  if (!url.startsWith('https://') && !url.startsWith('http://')) {
    throw new UsageError(`--places-url: expected an https:// or http:// URL, got ${q(url)}`);
  }
  let maxClients = null;
  if (opts['max-clients'] !== undefined) {
    maxClients = parseNumber('--max-clients', opts['max-clients'], 1, 1000000);
  }
  let idleTimeout = null;
  if (opts['idle-timeout'] !== undefined) {
    idleTimeout = parseNumber('--idle-timeout', opts['idle-timeout'], 1, 365 * 24 * 3600);
  }
  const free = parsed.positionals;
  if (free.length === 0) throw new UsageError('missing server NAME (see --help)');
  if (free.length > 2) {
    throw new UsageError(`too many arguments: unexpected ${q(free[2])} after NAME and PORT`);
  }
  const name = free[0];
  let port = null;
  if (free.length === 2) {
    try {
      port = parseNumber('PORT', free[1], 1, 65535);
    } catch {
      throw new UsageError(`bad PORT ${q(free[1])}: expected a number from 1 to 65535`);
    }
  }
  const config = opts.config;
  const herd = config ? loadHerd(config) : parseHerd(DEFAULT_HERD_TEXT, '<built-in>');
  if (!herd.some((s) => s.name === name)) {
    const source = config ? `the herd file ${config}` : 'the default herd';
    throw new UsageError(`unknown server ${q(name)}: ${source} has ${herd.map((s) => s.name).join(', ')}`);
  }
  return {
    name,
    port,
    herd,
    log: opts.log || path.join('logs', `${name}.log`),
    placesUrl: url,
    placesApi: api,
    placesCa: opts['places-ca'] ?? null,
    maxClients,
    idleTimeout,
  };
}

// ----- the clock ---------------------------------------------------------------

// Date.now() has only milliseconds, and docs/spec.md's time difference has nine
// digits. So wall time is anchored once to Date.now() at the instant its
// millisecond ticks over, and then advanced by the monotonic clock
// (process.hrtime, in ns). Every second check() re-anchors if the system
// clock has moved away (NTP stepped it) by more than 2 ms.
const clock = {
  wallNs: 0n, // wall time at the anchor, ns
  monoNs: 0n, // process.hrtime.bigint() at the anchor
  wallUs: 0, // the same anchor as Numbers, for the log's microseconds
  perfMs: 0, // performance.now() at the anchor

  anchor() {
    const before = Date.now();
    let ms;
    do { ms = Date.now(); } while (ms === before); // at most 1 ms, and rarely
    this.monoNs = process.hrtime.bigint();
    this.perfMs = performance.now();
    this.wallNs = BigInt(ms) * 1000000n;
    this.wallUs = ms * 1000;
  },

  /** Nanoseconds since the epoch, exact integer arithmetic. */
  nowNs() {
    return this.wallNs + (process.hrtime.bigint() - this.monoNs);
  },

  /** Microseconds since the epoch as a Number (exact below 2^53), for the log. */
  nowUs() {
    return Math.floor(this.wallUs + (performance.now() - this.perfMs) * 1000);
  },

  check() {
    if (Math.abs(this.nowUs() / 1000 - Date.now()) > 2) this.anchor();
  },
};

// ----- the log (src/log.rs) ----------------------------------------------------

/** Bytes from the network (a latin1 string) on one log line: Escaped in log.rs. */
function esc(data) {
  return data.replace(/[^\x20-\x5b\x5d-\x7e]/g,
    (c) => '\\x' + c.charCodeAt(0).toString(16).padStart(2, '0'));
}

/** Other text on a log line (e.g. Places' error message) stays on its line. */
function oneLine(text) {
  return text.replace(/[\x00-\x1f\x7f]/g,
    (c) => '\\x' + c.charCodeAt(0).toString(16).padStart(2, '0'));
}

// Lines are buffered and written once per loop turn (setImmediate runs right
// after the turn's I/O callbacks), as log.rs flushes once per turn: a busy
// turn costs one write(2), to the page cache, as in Rust. (An fs.WriteStream
// would hand the write to libuv's thread pool instead, and then a client
// could read its reply before the line it caused was in the file: the tests
// caught that.) A clean stop flushes last, so nothing is lost.
class Log {
  constructor(file) {
    const folder = path.dirname(file);
    if (folder) fs.mkdirSync(folder, { recursive: true });
    this.file = file;
    this.fd = fs.openSync(file, 'a'); // fails here, at start, if it cannot be opened
    this.lines = [];
    this.scheduled = false;
    this.closed = false; // after close(), late events (sockets closing) are not logged
    this.second = -1;
    this.prefix = '';
  }

  event(text) {
    if (this.closed) return;
    const us = clock.nowUs();
    const second = Math.floor(us / 1000000);
    if (second !== this.second) { // the date part changes once a second
      this.second = second;
      this.prefix = new Date(second * 1000).toISOString().slice(0, 19);
    }
    const micros = String(us % 1000000).padStart(6, '0');
    this.lines.push(`${this.prefix}.${micros}Z ${text}\n`);
    if (this.lines.length >= 4096) {
      this.flush();
    } else if (!this.scheduled) {
      this.scheduled = true;
      setImmediate(() => this.flush());
    }
  }

  flush() {
    this.scheduled = false;
    if (this.lines.length === 0) return;
    const data = Buffer.from(this.lines.join(''), 'utf8');
    this.lines = [];
    try {
      let done = 0;
      while (done < data.length) done += fs.writeSync(this.fd, data, done); // short writes are legal
    } catch (e) { // a failing log disk must not stop the server
      process.stderr.write(`herd.js: cannot write the log: ${e.message}\n`);
    }
  }

  /** SIGHUP (logrotate): the next lines go to a new file of the same name. */
  reopen() {
    this.flush();
    try {
      const fd = fs.openSync(this.file, 'a');
      fs.closeSync(this.fd);
      this.fd = fd;
    } catch (e) { // keep writing to the old file rather than lose lines
      process.stderr.write(`herd.js: cannot reopen the log: ${e.message}\n`);
      return;
    }
    this.event('log reopened on SIGHUP');
  }

  /** Flushes and closes the file; later events are dropped. */
  close() {
    this.flush();
    this.closed = true;
    fs.closeSync(this.fd);
  }
}

// ----- the client protocol, pure (src/protocol/client.rs) ---------------------
// Lines are latin1 strings (one char per byte). White space is exactly the
// docs/spec.md's: space, \t, \n, \r, \v and \f. (JS's \s would also split on U+00A0,
// which is byte 0xA0 here.)

const WS = /[ \t\n\r\v\f]+/;
const DECIMAL_RE = /^([0-9]+)(?:\.([0-9]+))?$/;
const LOCATION_RE = /^([+-])([0-9]+(?:\.[0-9]+)?)([+-])([0-9]+(?:\.[0-9]+)?)$/;

/** The line without leading and trailing white space. */
function trimWS(line) {
  return line.replace(/^[ \t\n\r\v\f]+|[ \t\n\r\v\f]+$/g, '');
}

/** Splits a line into fields, as Python's bytes.split() does. */
function fieldsOf(line) {
  const fields = line.split(WS);
  if (fields.length > 0 && fields[0] === '') fields.shift();
  if (fields.length > 0 && fields[fields.length - 1] === '') fields.pop();
  return fields;
}

/** |number| <= limit, compared exactly on the digits (no float). */
function within(number, limit) {
  const dot = number.indexOf('.');
  const whole = (dot < 0 ? number : number.slice(0, dot)).replace(/^0+/, '');
  const frac = dot < 0 ? '' : number.slice(dot + 1);
  if (whole.length > 3) return false;
  const value = Number(whole || '0');
  return value < limit || (value === limit && !/[1-9]/.test(frac));
}

/** ISO 6709 +LAT-LNG with range checks: [lat, lon] as text without '+', or null. */
function parseLocation(text) {
  const m = LOCATION_RE.exec(text);
  if (!m || !within(m[2], 90) || !within(m[4], 180)) return null;
  return [(m[1] === '-' ? '-' : '') + m[2], (m[3] === '-' ? '-' : '') + m[4]];
}

/** POSIX seconds with up to 9 fraction digits, as exact integer nanoseconds (BigInt). */
function parseTime(text) {
  const m = DECIMAL_RE.exec(text);
  if (!m) return null;
  const whole = m[1].replace(/^0+/, '');
  const frac = m[2] || '';
  // The digit limit keeps BigInt away from huge inputs (and the year 33000).
  if (frac.length > 9 || whole.length > 12) return null;
  return BigInt(whole || '0') * NS + BigInt(frac.padEnd(9, '0'));
}

/** A radius in km, in (0, 50], as exact metres text: 10 -> 10000, 1.2345 -> 1234.5. */
function radiusMetres(text) {
  const m = DECIMAL_RE.exec(text);
  if (!m || !within(text, 50)) return null;
  const frac = (m[2] || '').replace(/0+$/, '');
  // Shift the point three places, as text, so nothing is rounded.
  let out = (m[1] + frac.slice(0, 3).padEnd(3, '0')).replace(/^0+/, '') || '0';
  if (frac.length > 3) out += '.' + frac.slice(3);
  return /[1-9]/.test(out) ? out : null; // zero is no radius
}

function parseBound(text) {
  if (!/^[0-9]+$/.test(text)) return null;
  const digits = text.replace(/^0+/, '');
  const n = Number(digits || '0');
  return digits.length <= 2 && n >= 1 && n <= 20 ? n : null;
}

/** +0.263873386: always a sign, exactly nine digits. diffNs is a BigInt. */
function formatDiff(diffNs) {
  const sign = diffNs < 0n ? '-' : '+';
  const abs = diffNs < 0n ? -diffNs : diffNs;
  return `${sign}${abs / NS}.${String(abs % NS).padStart(9, '0')}`;
}

/** '? ' + the line as received, without its terminator. */
function invalid(line) {
  return '? ' + (line.endsWith('\r') ? line.slice(0, -1) : line) + '\n';
}

// Client ID -> {timeNs, at}: src/herd/store.rs. Newest time wins; equal
// times: the greater AT line (bytes, so latin1 string order) wins; an equal
// line is not new. Every server applies this rule, so all agree, and floods end.
class Store {
  constructor() {
    this.positions = new Map();
  }

  update(client, timeNs, at) {
    const known = this.positions.get(client);
    if (known !== undefined && (timeNs < known.timeNs || (timeNs === known.timeNs && at <= known.at))) {
      return false;
    }
    this.positions.set(client, { timeNs, at });
    return true;
  }
}

// ----- the peer protocol, pure (src/protocol/peer.rs) -------------------------

const DIFF_RE = /^[+-][0-9]{1,20}\.[0-9]{9}$/;

/** An AT line from a peer, validated like a client's IAMAT: {client, timeNs, at}. */
function parseUpdate(fields) {
  if (fields.length !== 6 || !NAME_RE.test(fields[1]) || !DIFF_RE.test(fields[2]) ||
      parseLocation(fields[4]) === null) {
    return null;
  }
  const timeNs = parseTime(fields[5]);
  if (timeNs === null) return null;
  return { client: fields[3], timeNs, at: fields.join(' ') };
}

/** One peer line to [kind, value]: HELLO, WELCOME, REFUSED, AT, PING, PONG, BLANK or INVALID. */
function parsePeerLine(line) {
  const fields = fieldsOf(line);
  if (fields.length === 0) return ['BLANK', null];
  const cmd = fields[0];
  if ((cmd === 'HELLO' || cmd === 'WELCOME') && fields.length === 2 && NAME_RE.test(fields[1])) {
    return [cmd, fields[1]];
  }
  if (cmd === 'REFUSED') return ['REFUSED', trimWS(trimWS(line).slice('REFUSED'.length))];
  if (cmd === 'AT') {
    const update = parseUpdate(fields);
    return update ? ['AT', update] : ['INVALID', null];
  }
  if ((cmd === 'PING' || cmd === 'PONG') && fields.length === 1) return [cmd, null];
  return ['INVALID', null];
}

/** Splits a stream of latin1 text into lines: LineReader in transport.rs. */
class LineBuffer {
  constructor() {
    this.partial = '';
  }

  /** Returns [complete lines, tooLong]; lines before a too-long one count. */
  feed(data) {
    const from = this.partial.length; // the partial line has no '\n'
    const buf = this.partial + data;
    const lines = [];
    let start = 0;
    let nl = buf.indexOf('\n', from);
    while (nl >= 0) {
      if (nl - start > MAX_LINE) return [lines, true];
      lines.push(buf.slice(start, nl));
      start = nl + 1;
      nl = buf.indexOf('\n', start);
    }
    this.partial = start === 0 ? buf : buf.slice(start);
    return [lines, this.partial.length > MAX_LINE];
  }

  /** At end of file the last line, without its \n, is still a line. */
  finish() {
    const rest = this.partial;
    this.partial = '';
    return rest ? [rest] : [];
  }
}

function remoteAddr(socket) {
  return socket.remoteAddress ? showAddr(socket.remoteAddress, socket.remotePort) : '?';
}

// ----- clients (event_loop/clients.rs) -----------------------------------------

// One client connection. Replies stay in request order: a WHATSAT waiting for
// Places holds the replies behind it (Replies/Held in event_loop/clients.rs).
class ClientConn {
  constructor(server, socket) {
    this.server = server;
    this.socket = socket;
    this.id = server.nextConnId();
    this.addr = remoteAddr(socket);
    this.lines = new LineBuffer();
    this.out = ''; // replies of this read, written at once
    this.held = []; // [{request, reply}] behind a WHATSAT; reply null while waiting
    this.heldBytes = 0; // what the held replies weigh, counted in the backlog
    this.waiting = 0; // WHATSATs of this connection waiting for Places
    this.eof = false;
    this.closed = false;
    server.clients++;
    server.log.event(`client#${this.id} ${this.addr} connected`);
    socket.setEncoding('latin1');
    socket.on('data', (data) => this.dataReceived(data));
    socket.on('end', () => this.eofReceived());
    socket.on('error', (e) => this.close(`connection lost: ${e.message}`, false));
    socket.on('close', () => this.close('connection lost', false));
    if (server.idleTimeout) {
      socket.setTimeout(server.idleTimeout * 1000);
      socket.on('timeout', () => {
        // A socket's timeout fires once per idle spell: re-armed while owed an answer.
        if (this.waiting === 0) this.close('idle too long', true);
        else socket.setTimeout(server.idleTimeout * 1000);
      });
    }
  }

  dataReceived(data) {
    if (this.closed) return;
    const [lines, tooLong] = this.lines.feed(data);
    for (const line of lines) this.lineReceived(line);
    // Floods leave before the client's reply: a client that gets its AT
    // line and asks a neighbour finds the update there.
    this.server.flushPeers();
    if (tooLong) {
      this.close('line longer than 64 KiB', false);
      return;
    }
    this.flush();
  }

  eofReceived() {
    if (this.closed) return;
    for (const line of this.lines.finish()) this.lineReceived(line);
    this.eof = true;
    this.server.log.event(`client#${this.id} sent EOF`);
    this.server.flushPeers();
    this.flush(); // the socket is half-open (allowHalfOpen): replies may still be owed
  }

  /** Herd::client_line plus client_line_received in event_loop/clients.rs. */
  lineReceived(line) {
    const s = this.server;
    s.log.event(`client#${this.id} < ${esc(line)}`);
    const fields = fieldsOf(line);
    if (fields.length === 0) return; // blank lines are ignored
    if (fields[0] === 'IAMAT' && fields.length === 4 && parseLocation(fields[2])) {
      const timeNs = parseTime(fields[3]);
      if (timeNs !== null) {
        const diff = formatDiff(clock.nowNs() - timeNs);
        const at = `AT ${s.name} ${diff} ${fields[1]} ${fields[2]} ${fields[3]}`;
        s.log.event(`client#${this.id} > ${esc(at)}`);
        if (s.store.update(fields[1], timeNs, at)) s.flood(at, null);
        this.send(at + '\n');
        return;
      }
    }
    if (fields[0] === 'WHATSAT' && fields.length === 4) {
      const radius = radiusMetres(fields[2]);
      const bound = parseBound(fields[3]);
      const known = s.store.positions.get(fields[1]);
      const coords = radius && bound && known ? parseLocation(known.at.split(' ')[4]) : null;
      if (coords) {
        if (this.waiting >= MAX_WAITING_PLACES) {
          // A client may not queue Places requests without end: past the
          // limit it gets the error answer at once (still in order).
          s.log.event(`client#${this.id} > ${esc(known.at)}`);
          this.send(known.at + '\n' +
            errorJson('too many WHATSATs waiting for Places on this connection'));
          return;
        }
        const request = s.places.nextRequest();
        this.held.push({ request, reply: null });
        this.waiting++;
        s.places.fetch(this, request, known.at, coords, radius, bound);
        return;
      }
    }
    const reply = invalid(line);
    s.log.event(`client#${this.id} > ${esc(reply.slice(0, -1))}`);
    this.send(reply);
  }

  send(reply) {
    if (this.held.length > 0) {
      this.held.push({ request: null, reply });
      this.heldBytes += reply.length;
    } else {
      this.out += reply;
    }
  }

  /** Writes this turn's replies in one write; enforces the backlog bound;
   * closes once the client has half-closed and nothing more is owed. */
  flush() {
    if (this.closed) return;
    if (this.out) {
      this.socket.write(this.out, 'latin1');
      this.out = '';
    }
    if (this.socket.writableLength + this.heldBytes > MAX_BACKLOG) {
      this.close('over 1 MiB of replies left unread', false);
    } else if (this.eof && this.held.length === 0) {
      // socket.end() writes what is buffered, then sends FIN.
      this.close('done after EOF', true);
    }
  }

  /** deliver_answer in event_loop/clients.rs: release what this answer held up. */
  placesAnswered(request, reply, atLine) {
    if (this.closed) return;
    this.waiting--;
    this.server.log.event(`client#${this.id} > ${esc(atLine)} (+ Places JSON, ${reply.length} bytes)`);
    const slot = this.held.find((h) => h.request === request);
    slot.request = null;
    slot.reply = reply;
    this.heldBytes += reply.length;
    while (this.held.length > 0 && this.held[0].reply !== null) {
      const done = this.held.shift();
      this.heldBytes -= done.reply.length;
      this.out += done.reply;
    }
    // The Places lines (request, outcome) reach the file before the answer
    // reaches the client, whatever the scheduler does between the two: a
    // test (or an operator) that reads the log on seeing the answer finds
    // them. The tests caught this race on a loaded machine.
    this.server.log.flush();
    this.flush();
  }

  close(why, graceful) {
    if (this.closed) return;
    this.closed = true;
    this.server.clients--;
    this.server.log.event(`client#${this.id} ${this.addr} closed: ${why}`);
    this.server.log.flush(); // on disk before the client sees the close (as for Places answers)
    if (graceful) this.socket.end();
    else this.socket.destroy();
  }
}

// ----- peer links (herd/link.rs and event_loop/peers.rs) -----------------------

// Our link to one neighbour: Backoff -> Dialing -> Greeting -> Up, and back to
// Backoff on any failure. setState logs every transition (link.rs).
class Link {
  constructor(name, host, port) {
    this.name = name;
    this.host = host;
    this.port = port;
    this.state = 'Backoff';
    this.conn = null; // the PeerOut while Dialing, Greeting or Up
    this.attempt = null; // the connection number of the current dial
    this.timer = null; // backoff, or the dial/greeting timeout
    this.failures = 0;
    this.incoming = null; // the PeerIn the neighbour dialed to us
  }

  setState(log, state, why) {
    log.event(`link ${this.name}: ${this.state} => ${state} (${why})`);
    this.state = state;
  }
}

// What both directions of a peer link share: lines in, queued lines out,
// heartbeats counted (docs/spec.md §6: not logged line by line).
class PeerConn {
  constructor(server, socket, id) {
    this.server = server;
    this.socket = socket;
    this.id = id;
    this.lines = new LineBuffer();
    this.pending = ''; // written at the end of the turn (flushPeers)
    this.allowance = PEER_BACKLOG;
    this.closed = false;
    this.lastHeard = Date.now();
    this.pings = 0; // PINGs sent (PeerOut) or received (PeerIn)
    this.pongs = 0; // PONGs received (PeerOut) or sent (PeerIn)
    socket.setEncoding('latin1');
    socket.setNoDelay(true);
    socket.on('data', (data) => this.dataReceived(data));
    socket.on('end', () => this.eofReceived());
    socket.on('error', (e) => this.failed(e));
    socket.on('close', () => this.close('closed by the neighbour'));
  }

  queue(data) {
    this.pending += data;
    this.server.dirty.add(this);
  }

  backlog() {
    return this.socket.writableLength + this.pending.length;
  }

  flush() {
    if (this.closed) return;
    if (this.pending) {
      this.socket.write(this.pending, 'latin1');
      this.pending = '';
    }
    if (this.socket.writableLength === 0) this.allowance = PEER_BACKLOG; // the catch-up has drained
  }

  dataReceived(data) {
    if (this.closed) return;
    this.lastHeard = Date.now();
    const [lines, tooLong] = this.lines.feed(data);
    for (const line of lines) {
      if (this.closed) return;
      this.lineReceived(line);
    }
    if (tooLong) this.close('line too long');
    this.server.flushPeers();
  }

  failed(e) {
    this.close(`read error: ${e.message}`);
  }
}

// Our dialed connection: it carries our updates and PINGs; the neighbour
// answers WELCOME or REFUSED, then PONGs.
class PeerOut extends PeerConn {
  constructor(server, link, id) {
    super(server, net.connect({ host: link.host, port: link.port }), id);
    this.link = link;
    this.connected = false;
    this.socket.once('connect', () => this.connectionMade());
  }

  connectionMade() {
    const s = this.server;
    const link = this.link;
    if (link.state !== 'Dialing' || link.attempt !== this.id) { // given up meanwhile
      this.closed = true;
      this.socket.destroy();
      return;
    }
    this.connected = true;
    clearTimeout(link.timer);
    this.socket.write(`HELLO ${s.name}\n`, 'latin1');
    s.log.event(`peer-out ${link.name}#${this.id} > HELLO ${s.name}`);
    link.timer = setTimeout(() => s.linkTimeout(link, this.id), LINK_TIMEOUT);
    link.setState(s.log, 'Greeting', 'connected, HELLO sent');
  }

  lineReceived(line) {
    const s = this.server;
    const link = this.link;
    const [kind, value] = parsePeerLine(line);
    if (kind === 'PONG') {
      this.pongs++;
      return;
    }
    s.log.event(`peer-out ${link.name}#${this.id} < ${esc(line)}`);
    if (kind === 'WELCOME' && value === link.name) {
      if (link.state === 'Greeting' && link.conn === this) s.linkUp(link);
    } else if (kind === 'REFUSED') {
      this.close(`refused: ${esc(value)}`);
    } else if (kind !== 'BLANK') {
      s.log.event(`peer-out ${link.name}: unexpected line ignored`);
    }
  }

  failed(e) {
    const link = this.link;
    if (!this.connected && !this.closed && link.state === 'Dialing' && link.attempt === this.id) {
      this.closed = true;
      this.server.backOff(link, `dial failed: ${e.message}`);
    } else {
      this.close(`read error: ${e.message}`);
    }
  }

  eofReceived() {
    this.close('closed by the neighbour');
  }

  close(why) {
    if (this.closed) return;
    this.closed = true;
    const s = this.server;
    s.log.event(`peer-out ${this.link.name}#${this.id} closed: ${why}`);
    if (this.connected) {
      s.log.event(`peer-out ${this.link.name}#${this.id} heartbeats: ${this.pings} PING sent, ` +
        `${this.pongs} PONG received`);
    }
    this.socket.destroy();
    if (this.link.conn === this) s.backOff(this.link, why);
  }
}

// A neighbour's connection to us: HELLO first, then its catch-up, updates and
// PINGs. What arrives between the HELLO and the first PING is the neighbour's
// catch-up (it writes every position at WELCOME, before any PING): it is
// counted and logged as one summary line, not one line per position.
class PeerIn extends PeerConn {
  constructor(server, socket) {
    super(server, socket, server.nextConnId());
    this.link = null;
    this.catchUp = null; // {start, positions, fresh, bytes} while it lasts
    server.log.event(`peer-in #${this.id} ${remoteAddr(socket)} connected`);
    this.helloTimer = setTimeout(() => {
      if (this.link === null) this.close('no HELLO in time');
    }, LINK_TIMEOUT);
  }

  label() {
    return this.link ? this.link.name : '?';
  }

  /** peer_line_received in event_loop/peers.rs. */
  lineReceived(line) {
    const s = this.server;
    const [kind, value] = parsePeerLine(line);
    if (this.link !== null) {
      if (kind === 'PING') {
        this.pings++;
        this.pongs++;
        this.socket.write('PONG\n');
        this.endCatchUp('');
        return;
      }
      if (kind === 'AT' && this.catchUp !== null) {
        this.catchUp.positions++;
        this.catchUp.bytes += line.length + 1;
        if (s.store.update(value.client, value.timeNs, value.at)) {
          this.catchUp.fresh++;
          s.flood(value.at, this.link);
        }
        return;
      }
    }
    s.log.event(`peer-in ${this.label()}#${this.id} < ${esc(line)}`);
    if (kind === 'BLANK') return;
    if (this.link === null) {
      if (kind !== 'HELLO') {
        this.socket.write('REFUSED HELLO expected\n');
        this.close('no HELLO');
        return;
      }
      const link = s.linksByName.get(value);
      if (link === undefined) {
        this.socket.write('REFUSED not a neighbour\n');
        this.close(`refused HELLO from ${esc(value)}: not a neighbour`);
        return;
      }
      this.link = link;
      clearTimeout(this.helloTimer);
      this.socket.write(`WELCOME ${s.name}\n`, 'latin1');
      // A neighbour that never PINGs (not one of ours) gets its lines logged
      // one by one after SILENCE; so does a catch-up still arriving then.
      const timer = setTimeout(() => this.endCatchUp(', ended without a PING'), SILENCE);
      this.catchUp = { start: performance.now(), positions: 0, fresh: 0, bytes: 0, timer };
      s.linkGreeted(link, this);
    } else if (kind === 'AT') {
      const new_ = s.store.update(value.client, value.timeNs, value.at);
      s.log.event(`update from ${this.link.name} ${new_ ? 'new' : 'known'}: ${esc(value.client)}`);
      if (new_) s.flood(value.at, this.link);
    } else {
      s.log.event(`peer-in ${this.link.name}#${this.id}: invalid line ignored`);
    }
  }

  /** The catch-up summary, once: at the first PING, or when the link ends. */
  endCatchUp(note) {
    const c = this.catchUp;
    if (c === null) return;
    this.catchUp = null;
    clearTimeout(c.timer);
    const ms = (performance.now() - c.start).toFixed(3);
    this.server.log.event(`link from ${this.link.name}: catch-up of ${c.positions} positions ` +
      `received (${c.fresh} new, ${c.bytes} bytes) in ${ms} ms${note}`);
  }

  eofReceived() {
    for (const line of this.lines.finish()) {
      if (!this.closed) this.lineReceived(line);
    }
    this.close('closed by the neighbour');
  }

  close(why) {
    if (this.closed) return;
    this.closed = true;
    const s = this.server;
    s.log.event(`peer-in ${this.label()}#${this.id} closed: ${why}`);
    clearTimeout(this.helloTimer);
    if (this.link) {
      this.endCatchUp(', cut short');
      s.log.event(`peer-in ${this.link.name}#${this.id} heartbeats: ${this.pings} PING received, ` +
        `${this.pongs} PONG sent`);
    }
    // end() sends what is owed (WELCOME, REFUSED, PONG) first; a neighbour
    // that does not close its side in time is cut off.
    this.socket.end();
    setTimeout(() => this.socket.destroy(), LINK_TIMEOUT).unref();
    if (this.link && this.link.incoming === this) {
      this.link.incoming = null;
      s.log.event(`link from ${this.link.name}: down (${why})`);
    }
  }
}

// ----- the server: store, links, flooding (Herd + EventLoop in Rust) ----------

class Server {
  constructor(opts, log, places, neighbours) {
    this.name = opts.name;
    this.log = log;
    this.places = places;
    this.store = new Store();
    this.links = neighbours.map(([n, host, port]) => new Link(n, host, port));
    this.linksByName = new Map(this.links.map((l) => [l.name, l]));
    this.maxClients = opts.maxClients;
    this.idleTimeout = opts.idleTimeout;
    this.clients = 0;
    this.connCount = 0;
    this.dirty = new Set(); // peers written to this turn (dirty_peers in Rust)
    this.heartbeat = null;
  }

  /** Connection numbers count every connection opened or accepted. */
  nextConnId() {
    return ++this.connCount;
  }

  clientConnected(socket) {
    if (this.maxClients !== null && this.clients >= this.maxClients) {
      // Refuse politely: one line, then close. No connection number.
      socket.on('error', () => {});
      socket.end('? server busy: too many clients\n');
      this.log.event(`client ${remoteAddr(socket)} refused: too many clients`);
      return;
    }
    socket.setNoDelay(true);
    new ClientConn(this, socket); // eslint-disable-line no-new
  }

  /** A new position goes to every neighbour whose link is up, except the one
   * it came from (event_loop/peers.rs: flood). Not up: the catch-up carries it. */
  flood(at, cameFrom) {
    for (const link of this.links) {
      const conn = link.conn;
      if (link === cameFrom || link.state !== 'Up' || conn === null || conn.closed) continue;
      conn.queue(at + '\n');
      this.log.event(`peer-out ${link.name}#${conn.id} > ${esc(at)}`);
      if (conn.backlog() > conn.allowance) conn.close('peer output backlog over its bound');
    }
  }

  flushPeers() {
    if (this.dirty.size === 0) return;
    const dirty = this.dirty;
    this.dirty = new Set();
    for (const conn of dirty) conn.flush();
  }

  // Our side of each link: dial, greet, up, back off.

  dial(link) {
    const id = this.nextConnId();
    link.attempt = id;
    link.setState(this.log, 'Dialing', `dialing ${showAddr(link.host, link.port)}`);
    link.timer = setTimeout(() => this.linkTimeout(link, id), LINK_TIMEOUT);
    link.conn = new PeerOut(this, link, id);
  }

  linkTimeout(link, id) {
    if (link.attempt === id && (link.state === 'Dialing' || link.state === 'Greeting')) {
      this.backOff(link, 'timed out');
    }
  }

  /** The link failed: wait 100 ms doubling to 3.2 s, with jitter, then dial. */
  backOff(link, why) {
    const conn = link.conn;
    link.conn = null;
    link.attempt = null;
    if (conn && !conn.closed) {
      conn.closed = true;
      conn.socket.destroy();
    }
    clearTimeout(link.timer);
    const base = Math.min(BACKOFF_MIN * 2 ** Math.min(link.failures, 10), BACKOFF_MAX);
    const delay = base * (0.75 + 0.5 * Math.random());
    link.failures++;
    link.timer = setTimeout(() => {
      if (link.state === 'Backoff') this.dial(link);
    }, delay * 1000);
    link.setState(this.log, 'Backoff', `${why}; retry in ${Math.floor(delay * 1000)} ms`);
  }

  /** WELCOME: the link is up; the neighbour gets every position we know, in
   * one write, and one summary line once it has left for the kernel. */
  linkUp(link) {
    clearTimeout(link.timer);
    link.failures = 0;
    link.setState(this.log, 'Up', 'WELCOME received');
    const conn = link.conn;
    const parts = [];
    for (const { at } of this.store.positions.values()) parts.push(at, '\n');
    const data = parts.join('');
    const count = this.store.positions.size;
    const start = performance.now();
    const summary = (note) => {
      const ms = (performance.now() - start).toFixed(3);
      this.log.event(`link ${link.name}: catch-up of ${count} positions sent ` +
        `(${data.length} bytes) in ${ms} ms${note}`);
    };
    if (data.length === 0) {
      summary('');
      return;
    }
    conn.allowance = PEER_BACKLOG + data.length;
    conn.socket.write(data, 'latin1', (err) => summary(err ? `, cut short: ${err.message}` : ''));
  }

  /** A neighbour said HELLO. If our link to it is backing off, it is
   * evidently back: cancel the wait and dial now. */
  linkGreeted(link, conn) {
    const old = link.incoming;
    link.incoming = conn;
    if (old !== null && old !== conn && !old.closed) {
      old.close('replaced by a new link from the same neighbour');
    }
    this.log.event(`link from ${link.name}: up`);
    if (link.state === 'Backoff') {
      clearTimeout(link.timer);
      link.failures = 0;
      this.log.event(`link ${link.name}: HELLO from it, dialing back now`);
      this.dial(link);
    }
  }

  /** PING every link that is up; close links, either way, silent too long. */
  beat() {
    const now = Date.now();
    clock.check();
    for (const link of this.links) {
      const up = link.state === 'Up' ? link.conn : null;
      for (const conn of [up, link.incoming]) {
        if (conn === null || conn.closed) continue;
        if (now - conn.lastHeard > SILENCE) {
          conn.close('silent too long');
        } else if (conn === up) {
          conn.pings++;
          conn.queue('PING\n');
        }
      }
    }
    this.flushPeers();
  }
}

// ----- Places: Google's JSON style (places/google_json.rs) --------------------

/** A JSON number kept as the text Google wrote (no float round trip). */
class Num {
  constructor(text) {
    this.text = text;
  }
}

function keepNumber(text) {
  // serde_json (arbitrary_precision) writes an exponent as e with a sign:
  // 1E5 -> 1e+5. Matched here so both servers print the same bytes.
  const m = /^([^eE]*)[eE]([+-]?)([0-9]+)$/.exec(text);
  return new Num(m ? `${m[1]}e${m[2] || '+'}${m[3]}` : text);
}

const NUMBER_AT = /-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?/y;
const STRING_STOP = /["\\\x00-\x1f]/g;
const SIMPLE_ESCAPES = { '"': '"', '\\': '\\', '/': '/', b: '\b', f: '\f', n: '\n', r: '\r', t: '\t' };

// JSON.parse would lose what docs/spec.md keeps: the text of numbers (34.0689300
// stays so) and the order of keys (a JS object puts "10" before "b"). So a
// small recursive-descent parser: objects are Maps, numbers are Nums.
class JsonParser {
  constructor(text) {
    this.s = text;
    this.i = 0;
    this.depth = 0;
  }

  fail(what) {
    const before = this.s.slice(0, this.i);
    const line = before.split('\n').length;
    const column = this.i - before.lastIndexOf('\n');
    throw new SyntaxError(`${what}: line ${line} column ${column} (char ${this.i})`);
  }

  ws() {
    const s = this.s;
    let i = this.i;
    for (;;) {
      const c = s.charCodeAt(i);
      if (c === 32 || c === 10 || c === 13 || c === 9) i++;
      else break;
    }
    this.i = i;
  }

  parse() {
    const v = this.value();
    this.ws();
    if (this.i < this.s.length) this.fail('Extra data');
    return v;
  }

  value() {
    this.ws();
    const c = this.s[this.i];
    if (c === '{') return this.object();
    if (c === '[') return this.array();
    if (c === '"') return this.string();
    if (c === '-' || (c >= '0' && c <= '9')) {
      NUMBER_AT.lastIndex = this.i;
      const m = NUMBER_AT.exec(this.s);
      if (!m) this.fail('Expecting value');
      this.i += m[0].length;
      return keepNumber(m[0]);
    }
    for (const [word, v] of [['true', true], ['false', false], ['null', null]]) {
      if (this.s.startsWith(word, this.i)) {
        this.i += word.length;
        return v;
      }
    }
    return this.fail('Expecting value');
  }

  enter() {
    if (++this.depth >= MAX_JSON_DEPTH) this.fail('Nested too deep');
    this.i++;
  }

  object() {
    this.enter();
    const map = new Map();
    this.ws();
    if (this.s[this.i] === '}') {
      this.i++;
      this.depth--;
      return map;
    }
    for (;;) {
      this.ws();
      if (this.s[this.i] !== '"') this.fail('Expecting property name enclosed in double quotes');
      const key = this.string();
      this.ws();
      if (this.s[this.i] !== ':') this.fail("Expecting ':' delimiter");
      this.i++;
      map.set(key, this.value()); // a repeated key keeps its first place, as a Python dict
      this.ws();
      const c = this.s[this.i++];
      if (c === '}') break;
      if (c !== ',') {
        this.i--;
        this.fail("Expecting ',' delimiter");
      }
    }
    this.depth--;
    return map;
  }

  array() {
    this.enter();
    const list = [];
    this.ws();
    if (this.s[this.i] === ']') {
      this.i++;
      this.depth--;
      return list;
    }
    for (;;) {
      list.push(this.value());
      this.ws();
      const c = this.s[this.i++];
      if (c === ']') break;
      if (c !== ',') {
        this.i--;
        this.fail("Expecting ',' delimiter");
      }
    }
    this.depth--;
    return list;
  }

  string() {
    const s = this.s;
    let i = this.i + 1;
    let out = '';
    for (;;) {
      STRING_STOP.lastIndex = i;
      const m = STRING_STOP.exec(s);
      if (!m) {
        this.i = s.length;
        this.fail('Unterminated string');
      }
      const j = m.index;
      out += s.slice(i, j);
      const c = s[j];
      if (c === '"') {
        this.i = j + 1;
        return out;
      }
      if (c !== '\\') {
        this.i = j;
        this.fail('Invalid control character');
      }
      const e = s[j + 1];
      if (e === 'u') {
        const hex = s.slice(j + 2, j + 6);
        if (!/^[0-9A-Fa-f]{4}$/.test(hex)) {
          this.i = j;
          this.fail('Invalid \\uXXXX escape');
        }
        out += String.fromCharCode(parseInt(hex, 16));
        i = j + 6;
      } else if (Object.prototype.hasOwnProperty.call(SIMPLE_ESCAPES, e)) {
        out += SIMPLE_ESCAPES[e];
        i = j + 2;
      } else {
        this.i = j;
        this.fail('Invalid \\escape');
      }
    }
  }
}

// ignoreBOM keeps a BOM in the text, so that it is refused as JSON (as Python and
// serde_json do) rather than silently dropped.
const UTF8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

/** JSON bytes to a value, key order and number text kept; throws on bad input. */
function parseJson(body) {
  return new JsonParser(UTF8.decode(body)).parse();
}

function isText(v) {
  return typeof v === 'string';
}

function isMap(v) {
  return v instanceof Map;
}

const ESCAPES = {
  '"': '\\"', '\\': '\\\\', '\n': '\\n', '\r': '\\r', '\t': '\\t',
  '\b': '\\b', '\f': '\\f', '<': '\\u003c', '>': '\\u003e',
};
const NEEDS_ESCAPE = /["\\<>\x00-\x1f\x7f]/g;

function googleString(s) {
  return '"' + s.replace(NEEDS_ESCAPE,
    (c) => ESCAPES[c] || '\\u' + c.charCodeAt(0).toString(16).padStart(4, '0')) + '"';
}

/** Prints v as Google does: 3-space indent, "key" : value, scalar arrays inline. */
function googleStyle(v, level = 0) {
  if (v === null) return 'null';
  if (v === true) return 'true';
  if (v === false) return 'false';
  if (v instanceof Num) return v.text;
  if (isText(v)) return googleString(v);
  const pad = '   '.repeat(level);
  const inner = '   '.repeat(level + 1);
  if (isMap(v)) {
    if (v.size === 0) return '{}';
    const items = [];
    for (const [k, x] of v) items.push(`${inner}${googleString(k)} : ${googleStyle(x, level + 1)}`);
    return '{\n' + items.join(',\n') + '\n' + pad + '}';
  }
  if (v.length === 0) return '[]';
  if (!v.some((x) => isMap(x) || Array.isArray(x))) {
    return '[ ' + v.map((x) => googleStyle(x, level)).join(', ') + ' ]';
  }
  return '[\n' + v.map((x) => inner + googleStyle(x, level + 1)).join(',\n') + '\n' + pad + ']';
}

/** Runs of newlines to one, trailing ones dropped, then the reply's "\n\n". */
function squeeze(text) {
  return text.replace(/\n{2,}/g, '\n').replace(/\n+$/, '') + '\n\n';
}

function errorJson(message, status = 'UNKNOWN_ERROR') {
  return squeeze(googleStyle(new Map([
    ['error_message', message], ['html_attributions', []], ['results', []], ['status', status],
  ])));
}

// ----- Places: the reply pipeline (places/new_api.rs: render_reply) -----------

/** A Places answer to [reply JSON text, number of results or why none]. */
function renderReply(api, status, body, bound) {
  const httpOk = status >= 200 && status < 300;
  let parsed = null;
  let detail = null;
  let ok = true;
  try {
    parsed = parseJson(body);
  } catch (e) {
    detail = e.message;
    ok = false;
  }
  if (ok && isMap(parsed) && isMap(parsed.get('error'))) return googleError(parsed.get('error'), status);
  if (ok && isMap(parsed)) {
    if (api === 'legacy' && (httpOk || (isText(parsed.get('status')) && isText(parsed.get('error_message'))))) {
      return legacyReply(parsed, bound, status);
    }
    if (api === 'new' && httpOk) {
      if (!parsed.has('places') || Array.isArray(parsed.get('places'))) {
        return legacyReply(newToLegacy(parsed), bound, status);
      }
      return failure(`Places answered HTTP ${status} with places that are not a list`);
    }
  }
  if (ok && httpOk) return failure(`Places answered HTTP ${status} with JSON that is not an object`);
  if (httpOk) return failure(`Places answered HTTP ${status} with a body that is not JSON`, detail);
  return failure(`Places answered HTTP ${status}`);
}

function newToLegacy(answer) {
  const places = answer.get('places');
  const results = Array.isArray(places) ? places.map(placeToResult) : [];
  return new Map([
    ['html_attributions', []], ['results', results], ['status', results.length ? 'OK' : 'ZERO_RESULTS'],
  ]);
}

/** One Places API (New) place as a legacy result, keys in the legacy order. */
function placeToResult(place) {
  const result = new Map();
  if (!isMap(place)) return result;
  if (place.has('businessStatus')) result.set('business_status', place.get('businessStatus'));
  const loc = place.get('location');
  const location = new Map();
  if (isMap(loc)) {
    for (const [to, from] of [['lat', 'latitude'], ['lng', 'longitude']]) {
      if (loc.has(from)) location.set(to, loc.get(from));
    }
  }
  if (location.size) result.set('geometry', new Map([['location', location]]));
  const display = place.get('displayName');
  if (isMap(display)) {
    if (display.has('text')) result.set('name', display.get('text'));
  } else if (isText(display)) {
    result.set('name', display);
  }
  for (const [to, from] of [['place_id', 'id'], ['rating', 'rating'], ['types', 'types'],
    ['user_ratings_total', 'userRatingCount']]) {
    if (place.has(from)) result.set(to, place.get(from));
  }
  for (const from of ['shortFormattedAddress', 'formattedAddress']) {
    if (place.has(from)) {
      result.set('vicinity', place.get(from));
      break;
    }
  }
  return result;
}

function legacyReply(answer, bound, http) {
  const results = answer.get('results');
  let sent = 0;
  if (Array.isArray(results)) {
    if (results.length > bound) results.length = bound;
    sent = results.length;
  }
  const status = isText(answer.get('status')) ? answer.get('status') : null;
  let outcome;
  if (status === 'OK' || status === 'ZERO_RESULTS') {
    outcome = sent;
  } else if (status !== null) {
    const message = answer.get('error_message');
    outcome = isText(message) ? `${status}: ${message} (HTTP ${http})` : `${status} (HTTP ${http})`;
  } else {
    outcome = `Places answered HTTP ${http} without a status`;
  }
  return [squeeze(googleStyle(answer)), outcome];
}

const LEGACY_STATUS = {
  PERMISSION_DENIED: 'REQUEST_DENIED',
  UNAUTHENTICATED: 'REQUEST_DENIED',
  INVALID_ARGUMENT: 'INVALID_REQUEST',
  RESOURCE_EXHAUSTED: 'OVER_QUERY_LIMIT',
};

/** {"error": {"code", "message", "status"}} as a legacy error reply. */
function googleError(error, http) {
  const googleStatus = isText(error.get('status')) ? error.get('status') : '';
  const legacyStatus = Object.prototype.hasOwnProperty.call(LEGACY_STATUS, googleStatus)
    ? LEGACY_STATUS[googleStatus] : 'UNKNOWN_ERROR';
  let message = error.get('message');
  if (!isText(message)) message = `Places answered HTTP ${http}`;
  return [errorJson(message, legacyStatus),
    `${legacyStatus}: ${message} (HTTP ${http}, ${googleStatus || 'no status'})`];
}

/** Our own error reply: message to the client, detail only to the log. */
function failure(message, detail = null) {
  return [errorJson(message),
    detail ? `UNKNOWN_ERROR: ${message} (${detail})` : `UNKNOWN_ERROR: ${message}`];
}

// ----- Places: requests (places/http.rs) ----------------------------------------

/** Everything but RFC 3986 unreserved characters as %XX (of the UTF-8 bytes). */
function percentEncode(text) {
  let out = '';
  for (const b of Buffer.from(text, 'utf8')) {
    const c = String.fromCharCode(b);
    out += /[A-Za-z0-9._~-]/.test(c) ? c : '%' + b.toString(16).toUpperCase().padStart(2, '0');
  }
  return out;
}

/** A number's text as JSON accepts it: no '+', no leading zeros. */
function jsonNumber(text) {
  const t = text.startsWith('+') ? text.slice(1) : text;
  const sign = t.startsWith('-') ? '-' : '';
  const digits = sign ? t.slice(1) : t;
  const whole = /^[0-9]*/.exec(digits)[0].length;
  const leadingZeros = /^0*/.exec(digits.slice(0, whole))[0].length;
  const zeros = Math.min(leadingZeros, Math.max(whole - 1, 0));
  const candidate = sign + digits.slice(zeros);
  if (/^-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?$/.test(candidate)) return candidate;
  return JSON.stringify(text);
}

/** An https:// URL taken apart (http.rs: Endpoint::parse); throws Error saying why. */
class Endpoint {
  constructor(url) {
    const sep = url.indexOf('://');
    if (sep < 0 || url.slice(0, sep).toLowerCase() !== 'https') {
      throw new Error(`bad Places URL ${q(url)}: only https:// is supported`);
    }
    const rest = url.slice(sep + 3).split('#', 1)[0];
    const cuts = [rest.indexOf('/'), rest.indexOf('?')].filter((i) => i >= 0);
    const split = cuts.length ? Math.min(...cuts) : rest.length;
    const authority = rest.slice(0, split);
    const pathQuery = rest.slice(split);
    if (authority.includes('@')) {
      throw new Error(`bad Places URL ${q(url)}: user information is not supported`);
    }
    const m = /^(?:\[([0-9A-Fa-f:.]+)\](?::([0-9]+))?|([A-Za-z0-9._-]+)(?::([0-9]+))?)$/.exec(authority);
    if (!m) throw new Error(`bad Places URL ${q(url)}: bad host or port`);
    this.host = m[1] || m[3];
    this.port = Number(m[2] || m[4] || 443);
    if (!(this.port >= 1 && this.port <= 65535)) {
      throw new Error(`bad Places URL ${q(url)}: port out of range`);
    }
    const qmark = pathQuery.indexOf('?');
    const urlPath = qmark < 0 ? pathQuery : pathQuery.slice(0, qmark);
    const query = qmark < 0 ? '' : pathQuery.slice(qmark + 1);
    if (!/^[\x21-\x7e]*$/.test(urlPath + query)) {
      throw new Error(`bad Places URL ${q(url)}: the path and query must be ` +
        'printable ASCII without spaces');
    }
    this.path = urlPath || '/';
    this.query = query;
    const host = this.host.includes(':') ? `[${this.host}]` : this.host;
    this.authority = this.port === 443 ? host : `${host}:${this.port}`;
  }

  legacyTarget(lat, lon, radius, keyText) {
    let target = this.path + '?';
    if (this.query) target += this.query.endsWith('&') ? this.query : this.query + '&';
    return target + `location=${percentEncode(lat)},${percentEncode(lon)}` +
      `&radius=${percentEncode(radius)}&key=${keyText}`;
  }

  newTarget() {
    return this.query ? `${this.path}?${this.query}` : this.path;
  }
}

/** Any key= parameter's value shown as ***, even one written into the URL. */
function redactKeys(target) {
  const qmark = target.indexOf('?');
  if (qmark < 0) return target;
  const params = target.slice(qmark + 1).split('&').map((p) => {
    const eq = p.indexOf('=');
    return eq >= 0 && p.slice(0, eq).toLowerCase() === 'key' ? p.slice(0, eq) + '=***' : p;
  });
  return target.slice(0, qmark + 1) + params.join('&');
}

/** Why a Places request failed, in the Rust client's words. */
class PlacesFailure extends Error {}

// HTTPS to Places through https.request and one keep-alive https.Agent: the
// agent keeps up to 16 idle connections for 20 s and reuses them. Each
// WHATSAT is an async function awaiting its answer, so other clients never
// wait for it; the Rust loop runs a state machine per request instead. Log
// lines and error texts are the Rust ones.
class PlacesClient {
  constructor(opts, key, extraCa) {
    this.api = opts.placesApi;
    this.endpoint = new Endpoint(opts.placesUrl);
    this.key = key || '';
    this.extraCa = extraCa; // PEM text of --places-ca, or null
    this.secureContext = null; // built on first use: parsing the roots takes ~100 ms
    this.agent = new https.Agent({
      keepAlive: true,
      maxFreeSockets: PLACES_POOL,
      maxSockets: PLACES_MAX_SOCKETS,
      timeout: PLACES_IDLE_FOR, // a pooled socket idle this long is closed by the agent
    });
    this.sockets = new WeakMap(); // TLS socket -> {id, tcp, secure}
    this.requests = 0;
    this.server = null; // set once the Server exists
  }

  nextRequest() {
    return ++this.requests;
  }

  /** One TLS context for every connection: Node's bundled roots, plus
   * --places-ca added to them (not put in their place). Without it, Node's
   * default context, which shares the bundled roots already parsed. */
  context() {
    if (this.secureContext === null) {
      const ca = this.extraCa === null ? undefined : [...tls.rootCertificates, this.extraCa];
      this.secureContext = tls.createSecureContext({ ca });
    }
    return this.secureContext;
  }

  /** The request options, body and how the log shows them (never the key): http.rs. */
  build(coords, radius, bound) {
    const ep = this.endpoint;
    const [lat, lon] = coords;
    const headers = { 'User-Agent': `proxy-herd/${VERSION}`, Accept: 'application/json' };
    // secureContext is not part of the agent's pool key, so connections are
    // still pooled per host and port.
    const base = { host: ep.host, port: ep.port, agent: this.agent, secureContext: this.context(), headers };
    if (this.api === 'legacy') {
      const target = ep.legacyTarget(lat, lon, radius, percentEncode(this.key));
      const shown = 'GET https://' + ep.authority + redactKeys(ep.legacyTarget(lat, lon, radius, '***'));
      return { options: { ...base, method: 'GET', path: target }, body: null, shown };
    }
    const body = `{"maxResultCount":${bound},"locationRestriction":{"circle":{"center":` +
      `{"latitude":${jsonNumber(lat)},"longitude":${jsonNumber(lon)}},"radius":${jsonNumber(radius)}}}}`;
    Object.assign(headers, {
      'Content-Type': 'application/json',
      'X-Goog-Api-Key': this.key.replace(/[^!-~]/g, ''),
      'X-Goog-FieldMask': FIELD_MASK,
      'Content-Length': Buffer.byteLength(body),
    });
    const shown = `POST https://${ep.authority}${redactKeys(ep.newTarget())} ${body}`;
    return { options: { ...base, method: 'POST', path: ep.newTarget() }, body, shown };
  }

  async fetch(client, request, atLine, coords, radius, bound) {
    const log = this.server.log;
    const { options, body, shown } = this.build(coords, radius, bound);
    log.event(`places#${request} request ${shown} for client#${client.id}`);
    const start = performance.now();
    let jsonText = null;
    let outcome;
    let status = 0;
    // One deadline for the whole request, the retry included.
    const signal = AbortSignal.timeout(PLACES_TIMEOUT);
    try {
      let answer;
      try {
        answer = await this.exchange(request, options, body, signal);
      } catch (e) {
        if (!(e instanceof PlacesFailure) || !e.retry) throw e;
        // A pooled connection that Places had closed: one retry, on a new one.
        log.event(`places#${request} retried on a fresh connection: ${oneLine(e.message)}`);
        answer = await this.exchange(request, options, body, signal);
      }
      status = answer.status;
      [jsonText, outcome] = renderReply(this.api, answer.status, answer.body, bound);
    } catch (e) {
      if (!(e instanceof PlacesFailure)) throw e;
      outcome = e.message;
    }
    const ms = (performance.now() - start).toFixed(3);
    if (typeof outcome === 'number') {
      log.event(`places#${request} answered: HTTP ${status}, ${outcome} results, in ${ms} ms`);
    } else {
      log.event(`places#${request} failed: ${oneLine(outcome)} after ${ms} ms`);
    }
    if (jsonText === null) jsonText = errorJson(`Places request failed: ${outcome}`);
    if (client.closed) {
      log.event(`places#${request} answer dropped: its client has gone`);
      return;
    }
    // The reply is bytes: the AT line as received, the JSON as UTF-8.
    const reply = atLine + '\n' + Buffer.from(jsonText, 'utf8').toString('latin1');
    client.placesAnswered(request, reply, atLine);
  }

  /** One HTTP exchange: resolves {status, body}, rejects with a PlacesFailure
   * (its retry flag set when a reused connection failed before any answer). */
  exchange(request, options, body, signal) {
    const log = this.server.log;
    return new Promise((resolve, reject) => {
      let info = null; // the socket's {id, tcp, secure}
      let answered = false;
      const req = https.request({ ...options, signal });
      req.on('socket', (socket) => {
        if (req.reusedSocket) {
          info = this.sockets.get(socket);
          log.event(`places conn#${info.id} reused for places#${request}`);
          return;
        }
        info = { id: this.server.nextConnId(), tcp: false, secure: false };
        this.sockets.set(socket, info);
        log.event(`places conn#${info.id} connecting for places#${request}`);
        socket.once('connect', () => { info.tcp = true; });
        socket.once('secureConnect', () => {
          info.secure = true;
          log.event(`places conn#${info.id} TLS handshake done (${socket.getProtocol()})`);
        });
      });
      req.on('response', (res) => {
        answered = true;
        const chunks = [];
        let size = 0;
        res.on('data', (chunk) => {
          size += chunk.length;
          if (size > PLACES_MAX_BODY) {
            req.destroy(new Error('body too large'));
            return;
          }
          chunks.push(chunk);
        });
        res.on('end', () => resolve({ status: res.statusCode, body: Buffer.concat(chunks) }));
        res.on('aborted', () => reject(new PlacesFailure('HTTP: the connection closed mid-body')));
        res.on('error', (e) => reject(this.failure(e, info)));
      });
      req.on('error', (e) => {
        const f = this.failure(e, info);
        f.retry = req.reusedSocket && !answered && e.name !== 'AbortError';
        reject(f);
      });
      req.end(body === null ? undefined : body);
    });
  }

  /** An error, named by how far the connection had got. */
  failure(e, info) {
    if (e.name === 'AbortError') return new PlacesFailure(`no answer in ${PLACES_TIMEOUT / 1000} s`);
    if (info === null || !info.tcp) return new PlacesFailure(`connect failed: ${e.message}`);
    if (!info.secure) return new PlacesFailure(`TLS: ${e.message}`);
    return new PlacesFailure(`HTTP: ${e.message}`);
  }
}

// ----- start and stop (src/bin/proxy-herd.rs) -----------------------------------

function fail(status, message) {
  process.stderr.write(`herd.js: ${message}\n`);
  process.exitCode = status;
  return status;
}

async function resolve(addr) {
  return (await dns.promises.lookup(addr.host)).address;
}

function listen(netServer, host, port) {
  return new Promise((resolveListen, rejectListen) => {
    netServer.once('error', rejectListen);
    netServer.listen({ host, port, backlog: LISTEN_BACKLOG }, () => {
      netServer.off('error', rejectListen);
      resolveListen();
    });
  });
}

async function serve(opts) {
  const herd = new Map(opts.herd.map((s) => [s.name, s]));
  const me = herd.get(opts.name);
  let clientHost;
  let peerHost;
  const neighbours = [];
  try {
    clientHost = await resolve(me.client);
    peerHost = await resolve(me.peer);
    for (const n of me.neighbours) {
      neighbours.push([n, await resolve(herd.get(n).peer), herd.get(n).peer.port]);
    }
  } catch (e) {
    return fail(2, `cannot resolve an address of the herd: ${e.message}`);
  }
  let extraCa = null;
  if (opts.placesCa) {
    try {
      extraCa = fs.readFileSync(opts.placesCa, 'latin1');
    } catch (e) {
      return fail(2, `--places-ca: cannot read ${opts.placesCa}: ${systemMessage(e)}`);
    }
    try {
      // tls.createSecureContext skips a PEM block it cannot parse without a
      // word, so each one is parsed here, at start, to fail loudly.
      const blocks = extraCa.match(/-----BEGIN CERTIFICATE-----[^-]*-----END CERTIFICATE-----/g);
      if (!blocks) throw new Error('no PEM certificate in it');
      for (const block of blocks) new X509Certificate(block); // eslint-disable-line no-new
    } catch (e) {
      return fail(2, `--places-ca: ${opts.placesCa}: ${e.message}`);
    }
  }
  let places;
  try {
    places = new PlacesClient(opts, process.env.PLACES_API_KEY, extraCa);
  } catch (e) {
    return fail(2, `--places-url: ${e.message}`);
  }
  let log;
  try {
    log = new Log(opts.log);
  } catch (e) {
    return fail(1, `cannot open the log ${opts.log}: ${e.message}`);
  }
  const server = new Server(opts, log, places, neighbours);
  places.server = server;
  const clientPort = opts.port || me.client.port;
  // allowHalfOpen: a client's EOF leaves our side open for the replies owed.
  const clientListener = net.createServer({ allowHalfOpen: true }, (socket) => server.clientConnected(socket));
  const peerListener = net.createServer((socket) => new PeerIn(server, socket));
  const listeners = [];
  // The handlers go in before listening: the harness (and an operator) may
  // signal as soon as the client port answers, and Node's default SIGINT
  // would end the process with no log line and no clean exit. The tests
  // caught that.
  let stopping = false;
  const stop = (why) => {
    if (stopping) return;
    stopping = true;
    for (const l of listeners) l.close();
    clearInterval(server.heartbeat);
    server.flushPeers();
    for (const link of server.links) { // heartbeats are counted, and told at the end
      if (link.conn && link.conn.connected && !link.conn.closed) {
        log.event(`peer-out ${link.name}#${link.conn.id} heartbeats: ${link.conn.pings} PING sent, ` +
          `${link.conn.pongs} PONG received`);
      }
      if (link.incoming && !link.incoming.closed) {
        log.event(`peer-in ${link.name}#${link.incoming.id} heartbeats: ${link.incoming.pings} ` +
          `PING received, ${link.incoming.pongs} PONG sent`);
      }
    }
    log.event(`${server.name} stopping on ${why}`);
    log.close();
    process.exit(0);
  };
  process.on('SIGINT', () => stop('SIGINT'));
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGHUP', () => log.reopen());
  for (const [listener, host, port] of [[clientListener, clientHost, clientPort],
    [peerListener, peerHost, me.peer.port]]) {
    try {
      await listen(listener, host, port);
      listeners.push(listener);
    } catch (e) {
      for (const l of listeners) l.close();
      const why = e.code === 'EADDRINUSE' ? 'is already in use' : `cannot be listened on: ${e.message}`;
      log.close();
      process.exit(fail(1, `address ${showAddr(host, port)} ${why}`));
    }
    // Accept errors (EMFILE...) after start are logged; libuv retries.
    listener.on('error', (e) => log.event(`accept failed: ${e.message}`));
  }
  const shown = listeners.map((l) => showAddr(l.address().address, l.address().port));
  log.event(`${server.name} listening for clients on ${shown[0]} and for peers on ${shown[1]}`);
  log.flush();

  for (const link of server.links) server.dial(link);
  server.heartbeat = setInterval(() => server.beat(), HEARTBEAT);
  return 0;
}

function main(argv) {
  let opts;
  try {
    opts = parseCommandLine(argv);
  } catch (e) {
    if (!(e instanceof UsageError)) throw e;
    return fail(2, e.message);
  }
  if (opts === 'help') {
    process.stdout.write(HELP + '\n');
    return 0;
  }
  if (opts === 'version') {
    process.stdout.write(`proxy-herd ${VERSION} (node)\n`);
    return 0;
  }
  clock.anchor();
  serve(opts);
  return 0;
}

if (require.main === module) {
  main(process.argv.slice(2));
}

module.exports = {
  parseHerd, parseAddr, parseCommandLine, parseLocation, parseTime, radiusMetres, parseBound,
  formatDiff, invalid, fieldsOf, Store, parsePeerLine, LineBuffer, parseJson, googleStyle,
  squeeze, errorJson, renderReply, percentEncode, jsonNumber, Endpoint, redactKeys, esc,
};
