// Unit tests of herd.js's pure parts, with Node's own runner:
//
//     node --test docs/node/
//
// The last test is differential: random and damaged Places answers are
// rendered here and by docs/asyncio/herd.py (when python3 is present), and
// the replies must be the same bytes.
'use strict';

const assert = require('assert/strict');
const fs = require('fs');
const os = require('os');
const path = require('path');
const { spawnSync } = require('child_process');
const { test } = require('node:test');

const h = require('./herd.js');

const ROOT = path.join(__dirname, '..', '..');

test('locations: ISO 6709 with exact range checks', () => {
  assert.deepEqual(h.parseLocation('+34.068930-118.445127'), ['34.068930', '-118.445127']);
  assert.deepEqual(h.parseLocation('+90.000+180'), ['90.000', '180']);
  assert.deepEqual(h.parseLocation('-0090-0180.0'), ['-0090', '-0180.0']);
  for (const bad of ['+90.0000000001+0', '+0+180.1', '34-118', '+34-', '+34.-118', '+1-1 ', '++1-1',
    '+1.5.5-1', '+٣-1']) {
    assert.equal(h.parseLocation(bad), null, bad);
  }
});

test('times: exact nanoseconds, at most 9 fraction and 12 whole digits', () => {
  assert.equal(h.parseTime('1621464827.959498503'), 1621464827959498503n);
  assert.equal(h.parseTime('7'), 7000000000n);
  assert.equal(h.parseTime('0001.5'), 1500000000n);
  assert.equal(h.parseTime('999999999999.999999999'), 999999999999999999999n);
  for (const bad of ['1.0000000001', '1000000000000', '-1', '+1', '1e5', '1.', '.5', '']) {
    assert.equal(h.parseTime(bad), null, bad);
  }
});

test('the time difference has a sign and nine digits', () => {
  assert.equal(h.formatDiff(263873386n), '+0.263873386');
  assert.equal(h.formatDiff(-12345n), '-0.000012345');
  assert.equal(h.formatDiff(0n), '+0.000000000');
  assert.equal(h.formatDiff(174695250639111099n), '+174695250.639111099');
});

test('radius in metres, as text; bound 1 to 20', () => {
  assert.equal(h.radiusMetres('10'), '10000');
  assert.equal(h.radiusMetres('1.2345'), '1234.5');
  assert.equal(h.radiusMetres('1.5'), '1500');
  assert.equal(h.radiusMetres('0.0001'), '0.1');
  assert.equal(h.radiusMetres('50.000'), '50000');
  for (const bad of ['0', '0.000', '50.0001', '-1', '60', '1e1', '']) assert.equal(h.radiusMetres(bad), null, bad);
  assert.equal(h.parseBound('020'), 20);
  assert.equal(h.parseBound('1'), 1);
  for (const bad of ['0', '21', '000', '-1', '1.0', '']) assert.equal(h.parseBound(bad), null, bad);
});

test('fields: docs/spec.md white space only (not U+00A0, which is byte 0xA0 here)', () => {
  assert.deepEqual(h.fieldsOf(' \tIAMAT\x0bkiwi\x0c+1-1\r 7\r'), ['IAMAT', 'kiwi', '+1-1', '7']);
  assert.deepEqual(h.fieldsOf('a\xa0b'), ['a\xa0b']);
  assert.deepEqual(h.fieldsOf('   '), []);
  assert.equal(h.invalid('bogus\r'), '? bogus\n');
  assert.equal(h.invalid('bogus'), '? bogus\n');
});

test('the store: newest wins, equal times go to the greater AT line as bytes', () => {
  const s = new h.Store();
  assert.ok(s.update('k', 10n, 'AT B +0.1 k +1-1 10'));
  assert.ok(!s.update('k', 9n, 'AT Z +0.1 k +1-1 9'));
  assert.ok(!s.update('k', 10n, 'AT B +0.1 k +1-1 10'), 'the same line is not new');
  assert.ok(!s.update('k', 10n, 'AT A +0.1 k +1-1 10'));
  assert.ok(s.update('k', 10n, 'AT C +0.1 k +1-1 10'));
  // Bytes, not UTF-16 code units of decoded text: 0xff sorts after 'z'.
  assert.ok(s.update('k', 10n, 'AT C +0.1 k\xff +1-1 10') === true);
  assert.ok(s.update('k', 11n, 'AT A +0.1 k +1-1 11'));
});

test('peer lines', () => {
  assert.deepEqual(h.parsePeerLine('HELLO Riley'), ['HELLO', 'Riley']);
  assert.deepEqual(h.parsePeerLine('HELLO Ri ley'), ['INVALID', null]);
  assert.deepEqual(h.parsePeerLine('REFUSED  not a  neighbour \r'), ['REFUSED', 'not a  neighbour']);
  assert.deepEqual(h.parsePeerLine('PING'), ['PING', null]);
  assert.deepEqual(h.parsePeerLine('  '), ['BLANK', null]);
  const [kind, u] = h.parsePeerLine('AT  Riley +0.263873386 kiwi +34.068930-118.445127 1621464827.959498503');
  assert.equal(kind, 'AT');
  assert.equal(u.at, 'AT Riley +0.263873386 kiwi +34.068930-118.445127 1621464827.959498503');
  assert.equal(u.timeNs, 1621464827959498503n);
  assert.deepEqual(h.parsePeerLine('AT Riley +0.26387338 kiwi +1-1 1'), ['INVALID', null]);
  assert.deepEqual(h.parsePeerLine('AT Riley +0.263873386 kiwi +91-1 1'), ['INVALID', null]);
});

test('the line splitter: pieces, the 64 KiB limit, the last line at EOF', () => {
  const b = new h.LineBuffer();
  assert.deepEqual(b.feed('IAM'), [[], false]);
  assert.deepEqual(b.feed('AT a\nIAMAT'), [['IAMAT a'], false]);
  assert.deepEqual(b.feed(' b\n\n'), [['IAMAT b', ''], false]);
  assert.deepEqual(b.feed('last'), [[], false]);
  assert.deepEqual(b.finish(), ['last']);
  assert.deepEqual(b.finish(), []);
  const long = new h.LineBuffer();
  assert.deepEqual(long.feed('x'.repeat(65536)), [[], false]);
  assert.deepEqual(long.feed('x'), [[], true]);
  const before = new h.LineBuffer();
  assert.deepEqual(before.feed('ok\n' + 'y'.repeat(65537) + '\n'), [['ok'], true]);
});

test('herd files: defaults and every check names its line', () => {
  const herd = h.parseHerd('# c\nA 127.0.0.1:20001 B\r\nB [0:0::1]:20002 peer=host.example:1 A\n', 'f');
  assert.deepEqual(herd[0].peer, { host: '127.0.0.1', port: 30001 });
  assert.deepEqual(herd[1].client, { host: '::1', port: 20002 });
  assert.deepEqual(herd[1].peer, { host: 'host.example', port: 1 });
  const bad = [
    ['A 127.0.0.1:1 B\nA 127.0.0.1:2 B\nB 127.0.0.1:3 A\n', 'f:2: duplicate server name A (first on line 1)'],
    ['A 127.0.0.1:1 C\n', 'f:1: A lists unknown neighbour C'],
    ['A 127.0.0.1:1 B\nB 127.0.0.1:2\n', 'f:1: A lists B as a neighbour but B (line 2) does not list A'],
    ['A 127.0.0.1:1 A\n', 'f:1: A lists itself as a neighbour'],
    ['A 127.0.0.1:x\n', 'f:1: A: bad address "127.0.0.1:x": port "x" is not a number'],
    ['A 127.0.0.300:1\n', 'f:1: A: bad address "127.0.0.300:1": "127.0.0.300" is not an IPv4 address'],
    ['A ::1:1\n', 'f:1: A: bad address "::1:1": write an IPv6 host in brackets'],
    ['A [fe80::1%eth0]:1\n', 'f:1: A: bad address "[fe80::1%eth0]:1": "fe80::1%eth0" is not an IPv6'],
    ['A 127.0.0.1:1\nB 127.0.0.1:1\n', 'f:2: B: client address 127.0.0.1:1 collides with the client address of A'],
    ['A 127.0.0.1:60000\n', 'f:1: A: the default peer port 70000'],
    ['A! 127.0.0.1:1\n', 'f:1: bad server name "A!"'],
    ['A 127.0.0.1:1 x=y\n', 'f:1: A: unknown setting "x=y"'],
    ['# nothing\n', 'f: no servers in the herd file'],
  ];
  for (const [text, message] of bad) {
    assert.throws(() => h.parseHerd(text, 'f'), (e) => e.message.startsWith(message), text);
  }
});

test('JSON: number text and key order are kept, exponents as serde_json writes them', () => {
  const v = h.parseJson(Buffer.from('{"b":34.0689300,"10":1E5,"a":[-0,2e-3,1.5E+3]}'));
  assert.deepEqual([...v.keys()], ['b', '10', 'a']);
  assert.equal(h.googleStyle(v),
    '{\n   "b" : 34.0689300,\n   "10" : 1e+5,\n   "a" : [ -0, 2e-3, 1.5e+3 ]\n}');
  for (const bad of ['', '{', '{"a" 1}', '[1,]', '01', '1.', 'NaN', '"\x01"', '"\\x"', '\ufeff{}', '{} x',
    '['.repeat(200) + ']'.repeat(200)]) {
    assert.throws(() => h.parseJson(Buffer.from(bad)), SyntaxError, JSON.stringify(bad));
  }
  assert.throws(() => h.parseJson(Buffer.from([0x22, 0xff, 0x22])), TypeError); // not UTF-8
  assert.equal(h.googleStyle(h.parseJson(Buffer.from('"<a\\u0007\\"/>\\u00e9"'))), '"\\u003ca\\u0007\\"/\\u003e\u00e9"');
});

test('the golden answer prints as itself', () => {
  const golden = fs.readFileSync(path.join(ROOT, 'tests/data/whatsat_ucla_10km_3.txt'), 'utf8');
  assert.equal(h.squeeze(h.googleStyle(h.parseJson(Buffer.from(golden)))), golden);
});

test('render_reply: bound, denials, new API, failures', () => {
  const [text, n] = h.renderReply('legacy', 200, Buffer.from('{"results":[1,2,3],"status":"OK"}'), 2);
  assert.equal(n, 2);
  assert.equal(text, '{\n   "results" : [ 1, 2 ],\n   "status" : "OK"\n}\n\n');
  const denied = h.renderReply('legacy', 200,
    Buffer.from('{"error_message":"no key","results":[],"status":"REQUEST_DENIED"}'), 5);
  assert.equal(denied[1], 'REQUEST_DENIED: no key (HTTP 200)');
  const [newText, count] = h.renderReply('new', 200, Buffer.from(JSON.stringify({
    places: [{ id: 'p1', displayName: { text: 'Bel Air' }, location: { latitude: 34.08, longitude: -118.4 },
      types: ['locality'], shortFormattedAddress: 'CA, US', businessStatus: 'OPERATIONAL' }],
  })), 5);
  assert.equal(count, 1);
  assert.match(newText, /"business_status" : "OPERATIONAL",\n {9}"geometry" : \{/);
  assert.equal(h.renderReply('new', 403, Buffer.from(
    '{"error":{"code":403,"message":"denied","status":"PERMISSION_DENIED"}}'), 5)[1],
  'REQUEST_DENIED: denied (HTTP 403, PERMISSION_DENIED)');
  assert.equal(h.renderReply('legacy', 500, Buffer.from('oops'), 5)[1], 'UNKNOWN_ERROR: Places answered HTTP 500');
  assert.match(h.renderReply('legacy', 200, Buffer.from('oops'), 5)[1],
    /^UNKNOWN_ERROR: Places answered HTTP 200 with a body that is not JSON \(/);
  assert.equal(h.errorJson('x'),
    '{\n   "error_message" : "x",\n   "html_attributions" : [],\n   "results" : [],\n   "status" : "UNKNOWN_ERROR"\n}\n\n');
});

test('Places requests: encoding, JSON numbers, the key never shown', () => {
  assert.equal(h.percentEncode('a b/é~'), 'a%20b%2F%C3%A9~');
  assert.equal(h.jsonNumber('+0034.5'), '34.5');
  assert.equal(h.jsonNumber('-000'), '-0');
  assert.equal(h.jsonNumber('1500'), '1500');
  const ep = new h.Endpoint('https://127.0.0.1:8443/maps/json?key=secret&x=1');
  assert.equal(ep.authority, '127.0.0.1:8443');
  assert.equal(h.redactKeys(ep.legacyTarget('1', '-1', '1000', '***')),
    '/maps/json?key=***&x=1&location=1,-1&radius=1000&key=***');
  assert.throws(() => new h.Endpoint('http://x/'), /only https/);
  assert.throws(() => new h.Endpoint('https://u@x/'), /user information/);
  assert.throws(() => new h.Endpoint('https://x/a b'), /printable ASCII/);
  assert.equal(new h.Endpoint('https://[::1]/v1').authority, '[::1]');
});

// ----- differential: the same answers as docs/asyncio/herd.py -----------------

/** A small deterministic generator (xorshift32), so a failure can be replayed. */
function rng(seed) {
  let x = seed >>> 0 || 1;
  return (n) => {
    x ^= x << 13; x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5; x >>>= 0;
    return x % n;
  };
}

const WORDS = ['results', 'status', 'OK', 'name', 'géo', 'a<b>', 'tab\t', 'quote"', 'back\\slash', '10', '2',
  '', 'emoji \u{1F600}', 'ctl\u0001\u007f', 'html_attributions', 'error_message', 'places', 'error'];
const NUMBERS = ['0', '-0', '12', '34.0689300', '-118.445127', '1E5', '2e-3', '1.5E+3', '123456789012345678901234567890'];

function genValue(r, depth) {
  const k = r(depth > 4 ? 4 : 7);
  if (k === 0) return JSON.stringify(WORDS[r(WORDS.length)]);
  if (k === 1) return NUMBERS[r(NUMBERS.length)];
  if (k === 2) return ['true', 'false', 'null'][r(3)];
  if (k === 3) return `"\\u${r(0x10000).toString(16).padStart(4, '0')}\\n\\/"`;
  if (k === 4 || k === 5) {
    const items = [];
    for (let i = r(5); i > 0; i--) items.push(genValue(r, depth + 1));
    return `[${items.join(r(2) ? ',' : ' ,\n ')}]`;
  }
  const items = [];
  for (let i = r(6); i > 0; i--) items.push(`${JSON.stringify(WORDS[r(WORDS.length)])} : ${genValue(r, depth + 1)}`);
  return `{${items.join(',')}}`;
}

function genDocument(r) {
  // Mostly answer-shaped objects, so that the bound and status paths run.
  const status = ['"OK"', '"ZERO_RESULTS"', '"REQUEST_DENIED"', '7', '"INVALID_REQUEST"'][r(5)];
  const results = [];
  for (let i = r(25); i > 0; i--) results.push(genValue(r, 2));
  let doc = r(4) === 0 ? genValue(r, 0)
    : `{"html_attributions":[],"results":[${results.join(',')}],"status":${status}` +
      (r(2) ? ',"error_message":"why"' : '') + (r(6) === 0 ? `,"error":${genValue(r, 1)}` : '') + '}';
  if (r(5) === 0) { // damaged: cut, or a byte changed
    const at = r(doc.length + 1);
    doc = r(2) ? doc.slice(0, at) : doc.slice(0, at) + '{}[],:"\\x'[r(9)] + doc.slice(at + 1);
  }
  return doc;
}

test('differential: random and damaged answers render as herd.py renders them', (t) => {
  const python = spawnSync('python3', ['--version']);
  if (python.error || python.status !== 0) {
    t.skip('python3 is not installed');
    return;
  }
  const r = rng(20261201);
  const cases = [];
  for (let i = 0; i < 1500; i++) {
    cases.push({ api: r(3) ? 'legacy' : 'new', status: [200, 200, 200, 403, 500][r(5)], bound: 1 + r(20), body: genDocument(r) });
  }
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'herd-js-diff-'));
  try {
    const input = path.join(dir, 'cases.json');
    fs.writeFileSync(input, JSON.stringify(cases));
    const script = `
import importlib.util, json, sys
spec = importlib.util.spec_from_file_location("herd", ${JSON.stringify(path.join(ROOT, 'docs/asyncio/herd.py'))})
herd = importlib.util.module_from_spec(spec); spec.loader.exec_module(herd)
out = []
for c in json.load(open(sys.argv[1])):
    text, outcome = herd.render_reply(c["api"], c["status"], c["body"].encode("utf-8", "surrogatepass"), c["bound"])
    out.append([text, outcome])
json.dump(out, sys.stdout)
`;
    const run = spawnSync('python3', ['-c', script, input], { maxBuffer: 1 << 28, encoding: 'utf8' });
    assert.equal(run.status, 0, run.stderr);
    const theirs = JSON.parse(run.stdout);
    let compared = 0;
    cases.forEach((c, i) => {
      const [text, outcome] = h.renderReply(c.api, c.status, Buffer.from(c.body, 'utf8'), c.bound);
      const [pyText, pyOutcome] = theirs[i];
      const detail = (o) => (typeof o === 'string' ? o.replace(/ \(.*\)$/s, '') : o);
      assert.equal(text, pyText, `case ${i}: ${c.body}`);
      assert.equal(detail(outcome), detail(pyOutcome), `case ${i}: ${c.body}`);
      compared++;
    });
    assert.equal(compared, cases.length);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
