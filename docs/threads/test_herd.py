"""Unit tests for docs/threads/herd.py: its pure parts, and the one piece of
locking worth testing alone (many threads writing to one peer connection).

    python3 -m unittest discover -s docs/threads -p 'test_*.py'

The integration tests (tests/*.rs with PROXY_HERD_IMPL=threads) cover the
rest with real processes."""

import importlib.util
import os
import socket
import threading
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
_spec = importlib.util.spec_from_file_location("threads_herd", os.path.join(HERE, "herd.py"))
assert _spec is not None and _spec.loader is not None
herd = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(herd)


class ClientLines(unittest.TestCase):
    def test_time_difference_is_exact_with_sign_and_nine_digits(self):
        self.assertEqual(herd.format_diff(263873386), b"+0.263873386")
        self.assertEqual(herd.format_diff(-12345), b"-0.000012345")
        self.assertEqual(herd.format_diff(0), b"+0.000000000")
        t = herd.parse_time(b"1621464827.959498503")
        self.assertEqual(t, 1621464827959498503)  # a float would lose the last digits
        self.assertEqual(herd.parse_time(b"7"), 7 * herd.NS)
        self.assertIsNone(herd.parse_time(b"1.0000000001"))  # ten fraction digits
        self.assertIsNone(herd.parse_time(b"-1"))
        self.assertIsNone(herd.parse_time(b"1e9"))

    def test_locations_are_checked_exactly_on_their_text(self):
        self.assertEqual(herd.parse_location(b"+34.068930-118.445127"),
                         ("34.068930", "-118.445127"))
        self.assertIsNotNone(herd.parse_location(b"+90.000-180"))
        self.assertIsNone(herd.parse_location(b"+90.0000000001-100"))
        self.assertIsNone(herd.parse_location(b"+91-100"))
        self.assertIsNone(herd.parse_location(b"34-118"))
        self.assertIsNone(herd.parse_location(b"+34.-118"))

    def test_radius_becomes_exact_metres_and_bound_is_1_to_20(self):
        self.assertEqual(herd.radius_metres(b"10"), "10000")
        self.assertEqual(herd.radius_metres(b"1.2345"), "1234.5")
        self.assertEqual(herd.radius_metres(b"50"), "50000")
        self.assertIsNone(herd.radius_metres(b"50.001"))
        self.assertIsNone(herd.radius_metres(b"0"))
        self.assertIsNone(herd.radius_metres(b"0.000"))
        self.assertEqual(herd.parse_bound(b"020"), 20)
        self.assertIsNone(herd.parse_bound(b"21"))
        self.assertIsNone(herd.parse_bound(b"0"))

    def test_anything_else_is_echoed_without_its_terminator(self):
        self.assertEqual(herd.invalid(b"bogus line\r"), b"? bogus line\n")
        self.assertEqual(herd.invalid(b"x\ry"), b"? x\ry\n")


class Stores(unittest.TestCase):
    def test_newest_wins_and_equal_times_go_to_the_greater_line(self):
        a = b"AT Riley +0.000000001 kiwi +1-1 5"
        b = b"AT Campbell +0.000000002 kiwi +2-2 5"
        for order in ((a, b), (b, a)):
            store = herd.Store()
            for line in order:
                store.update(b"kiwi", 5 * herd.NS, line)
            self.assertEqual(store.get(b"kiwi"), max(a, b))
        store = herd.Store()
        self.assertTrue(store.update(b"kiwi", 5, a))
        self.assertFalse(store.update(b"kiwi", 5, a))    # the same line is not new
        self.assertFalse(store.update(b"kiwi", 4, b"AT Z +1.000000000 kiwi +0-0 9"))
        self.assertTrue(store.update(b"kiwi", 6, b))

    def test_racing_threads_leave_the_newest(self):
        store = herd.Store()
        news = []

        def report(start):
            n = 0
            for t in range(start, 4000, 8):
                n += store.update(b"kiwi", t, b"AT X +0.000000000 kiwi +1-1 %d" % t)
            news.append(n)

        threads = [threading.Thread(target=report, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self.assertEqual(store.positions[b"kiwi"][0], 3999)
        self.assertGreaterEqual(sum(news), 1)


class PeerLines(unittest.TestCase):
    def test_kinds(self):
        self.assertEqual(herd.parse_peer_line(b"HELLO Riley"), ("HELLO", b"Riley"))
        self.assertEqual(herd.parse_peer_line(b"PING"), ("PING", None))
        self.assertEqual(herd.parse_peer_line(b"  "), ("BLANK", None))
        self.assertEqual(herd.parse_peer_line(b"REFUSED not a neighbour"),
                         ("REFUSED", b"not a neighbour"))
        kind, (client, t, line) = herd.parse_peer_line(
            b"AT  Riley +0.000000001 kiwi +1-1 7")
        self.assertEqual((kind, client, t, line),
                         ("AT", b"kiwi", 7 * herd.NS, b"AT Riley +0.000000001 kiwi +1-1 7"))
        self.assertEqual(herd.parse_peer_line(b"AT Riley 0.1 kiwi +1-1 7")[0], "INVALID")
        self.assertEqual(herd.parse_peer_line(b"HELLO a b")[0], "INVALID")

    def test_line_buffer_splits_limits_and_finishes(self):
        buf = herd.LineBuffer()
        self.assertEqual(buf.feed(b"a\nb"), ([b"a"], False))
        self.assertEqual(buf.feed(b"c\n\n"), ([b"bc", b""], False))
        self.assertEqual(buf.feed(b"tail"), ([], False))
        self.assertEqual(buf.finish(), [b"tail"])
        self.assertEqual(buf.finish(), [])
        lines, too_long = herd.LineBuffer().feed(b"ok\n" + b"x" * (herd.MAX_LINE + 1))
        self.assertEqual((lines, too_long), ([b"ok"], True))


class GoogleStyle(unittest.TestCase):
    def test_the_golden_legacy_answer(self):
        with open(os.path.join(ROOT, "tests/data/legacy_nearby.json"), "rb") as f:
            body = f.read()
        with open(os.path.join(ROOT, "tests/data/legacy_nearby.google.txt")) as f:
            golden = f.read()
        text, outcome = herd.render_reply("legacy", 200, body, 20)
        self.assertEqual(text, golden)
        self.assertIsInstance(outcome, int)

    def test_numbers_keep_their_text_and_strings_escape_angles(self):
        v = herd.parse_json(b'[1.50, -0, 12345678901234567890123, 1E5, "<b>"]')
        self.assertEqual(herd.google_style(v),
                         '[ 1.50, -0, 12345678901234567890123, 1e+5, "\\u003cb\\u003e" ]')

    def test_the_bound_cuts_and_errors_keep_the_shape(self):
        body = b'{"results": [{"name": "a"}, {"name": "b"}, {"name": "c"}], "status": "OK"}'
        text, outcome = herd.render_reply("legacy", 200, body, 2)
        self.assertEqual(outcome, 2)
        self.assertNotIn('"c"', text)
        text, outcome = herd.render_reply("legacy", 500, b"oops", 2)
        self.assertIn('"status" : "UNKNOWN_ERROR"', text)
        self.assertIn("500", outcome)
        self.assertTrue(text.endswith("}\n\n"))

    def test_json_too_deep_for_a_small_thread_stack_is_an_error_not_a_crash(self):
        results = {}

        def render():
            deep = b'{"results":' * 450 + b"[]" + b"}" * 450
            results["deep"] = herd.render_reply("legacy", 200, deep, 3)

        threading.stack_size(herd.THREAD_STACK)
        try:
            t = threading.Thread(target=render)
            t.start()
            t.join()
        finally:
            threading.stack_size(0)
        text, outcome = results["deep"]
        self.assertIn("too deep", outcome)
        self.assertIn('"status" : "UNKNOWN_ERROR"', text)

    def test_the_new_api_is_converted_to_the_legacy_shape(self):
        body = (b'{"places": [{"id": "p1", "displayName": {"text": "Royce Hall"},'
                b' "location": {"latitude": 34.07, "longitude": -118.44}, "types": ["a", "b"],'
                b' "shortFormattedAddress": "LA"}]}')
        text, outcome = herd.render_reply("new", 200, body, 5)
        self.assertEqual(outcome, 1)
        self.assertIn('"name" : "Royce Hall"', text)
        self.assertIn('"lat" : 34.07', text)
        self.assertIn('"types" : [ "a", "b" ]', text)
        self.assertIn('"vicinity" : "LA"', text)

    def test_the_key_never_shows(self):
        self.assertEqual(herd.redact_keys("/p?location=1,2&key=s3cret&x=1"),
                         "/p?location=1,2&key=***&x=1")


class Logging(unittest.TestCase):
    def test_stamps_are_rfc3339_utc_with_microseconds(self):
        log = herd.Log(os.devnull)
        line = log.stamped("hello")
        log.file.close()
        stamp, text = line.split(" ", 1)
        self.assertEqual(len(stamp), 27)
        self.assertEqual((stamp[10], stamp[-1], text), ("T", "Z", "hello\n"))
        self.assertEqual(herd.esc(b"ok \xff\\"), "ok \\xff\\x5c")


class PeerWrites(unittest.TestCase):
    """PeerOut: many threads flood through one connection whose reader is
    slow, so some writes go straight to the socket and the rest through the
    writer thread. Every line must arrive whole, and each thread's in order."""

    def test_concurrent_floods_arrive_whole_and_in_order(self):
        ours, theirs = socket.socketpair()
        ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        link = herd.Link("Jaquez", "127.0.0.1", 1)
        out = herd.PeerOut(None, link, ours, 1)
        out.writer.start()
        senders, per_sender = 6, 2000

        def flood(n):
            for i in range(per_sender):
                out.send(b"AT Riley +0.000000001 t%d +1-1 %d\n" % (n, i))

        threads = [threading.Thread(target=flood, args=(n,)) for n in range(senders)]
        for t in threads:
            t.start()
        received = bytearray()
        theirs.settimeout(10)
        while received.count(b"\n") < senders * per_sender:
            data = theirs.recv(1000)  # a slow reader: small reads
            self.assertTrue(data, "closed early")
            received += data
        for t in threads:
            t.join()
        out.close("done")
        out.writer.join()
        last = {}
        for line in bytes(received).split(b"\n")[:-1]:
            fields = line.split()
            self.assertEqual(len(fields), 6, line)
            sender, i = fields[3], int(fields[5])
            self.assertEqual(i, last.get(sender, -1) + 1, line)
            last[sender] = i
        self.assertEqual(len(last), senders)
        ours.close()
        theirs.close()

    def test_a_backlog_over_its_bound_closes_the_link(self):
        ours, theirs = socket.socketpair()
        out = herd.PeerOut(None, herd.Link("Jaquez", "127.0.0.1", 1), ours, 1)
        out.allowance = 64 * 1024
        chunk = b"x" * 1023 + b"\n"
        for _ in range(2000):  # nobody reads theirs
            out.send(chunk)
            if out.closed:
                break
        self.assertTrue(out.closed)
        self.assertEqual(out.why, "peer output backlog over its bound")
        ours.close()
        theirs.close()


if __name__ == "__main__":
    unittest.main()
