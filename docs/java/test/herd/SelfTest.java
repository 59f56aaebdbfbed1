package herd;

import java.io.ByteArrayInputStream;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.util.List;
import java.util.Map;
import java.util.Objects;

/**
 * Unit tests of the pure parts (parsing and formatting), with no test
 * framework: the JDK has none, and this counterpart uses only the JDK. Run
 * with docs/java/test.sh. Expected values were taken from docs/asyncio/herd.py,
 * so the two counterparts agree byte for byte.
 */
public final class SelfTest {
    private static int checks;
    private static int failures;

    private static void eq(Object want, Object got, String what) {
        checks++;
        if (!Objects.equals(want, got)) {
            failures++;
            System.out.println("FAIL " + what + ": want " + show(want) + ", got " + show(got));
        }
    }

    private static String show(Object o) {
        return o instanceof String s ? HerdFile.q(s) : String.valueOf(o);
    }

    private static String latin1(byte... bytes) {
        return new String(bytes, StandardCharsets.ISO_8859_1);
    }

    public static void main(String[] args) throws Exception {
        clientProtocol();
        store();
        peerProtocol();
        herdFile();
        commandLine();
        json();
        placesReply();
        http();
        lineBuffer();
        System.out.println(checks + " checks, " + failures + " failed");
        System.exit(failures == 0 ? 0 : 1);
    }

    static void clientProtocol() {
        eq(List.of("IAMAT", "kiwi", "+1-1", "7"), Protocol.fields("IAMAT\u000bkiwi\f+1-1\t 7\r"), "fields");
        eq(List.of(), Protocol.fields(" \t\r\u000b\f"), "blank fields");
        String[][] radii = {{"10", "10000"}, {"1.2345", "1234.5"}, {"0", null}, {"50", "50000"}, {"50.1", null},
            {"0.0001", "0.1"}, {"00.5", "500"}, {"50.000", "50000"}, {"1.5", "1500"}, {"0.00001", "0.01"},
            {"7.1000", "7100"}, {"-1", null}, {"1e3", null}};
        for (String[] r : radii) {
            eq(r[1], Protocol.radiusMetres(r[0]), "radius " + r[0]);
        }
        eq(new Protocol.ClientTime(1621464827L, 959498503), Protocol.parseTime("1621464827.959498503"), "time");
        eq(null, Protocol.parseTime("1.0000000001"), "ten fraction digits");
        eq(null, Protocol.parseTime("1234567890123"), "thirteen digits");
        eq(new Protocol.ClientTime(1, 500000000), Protocol.parseTime("000000000000001.5"), "leading zeros");
        eq(null, Protocol.parseTime("1."), "a bare point");
        eq(null, Protocol.parseTime("\u00b2"), "a Latin-1 superscript is no digit");
        eq(new Protocol.Coords("34.068930", "-118.445127"), Protocol.parseLocation("+34.068930-118.445127"), "loc");
        eq(new Protocol.Coords("90.000", "180"), Protocol.parseLocation("+90.000+180"), "loc at the edge");
        eq(null, Protocol.parseLocation("+90.0000000001-0"), "loc just over");
        eq(new Protocol.Coords("0", "-0"), Protocol.parseLocation("+0-0"), "zeros");
        eq(null, Protocol.parseLocation("34-118"), "no sign");
        eq(null, Protocol.parseLocation("+91-100"), "latitude out of range");
        eq(new Protocol.Coords("00090.0", "-00180.00"), Protocol.parseLocation("+00090.0-00180.00"), "padded");
        eq(null, Protocol.parseLocation("+1-1."), "trailing point");
        String[][] bounds = {{"020", "20"}, {"21", "0"}, {"0", "0"}, {"1", "1"}, {"20", "20"}, {"1.0", "0"}, {"", "0"}};
        for (String[] b : bounds) {
            eq(Integer.parseInt(b[1]), Protocol.parseBound(b[0]), "bound " + b[0]);
        }
        Protocol.ClientTime t = new Protocol.ClientTime(10, 5);
        eq("-0.000000005", Protocol.formatDiff(10, 0, t), "a small negative difference");
        eq("+1.000000001", Protocol.formatDiff(11, 6, t), "positive");
        eq("+0.000000000", Protocol.formatDiff(10, 5, t), "zero");
        eq("-1.999999999", Protocol.formatDiff(9, 6, new Protocol.ClientTime(11, 5)), "negative with a borrow");
        eq("+0.999999999", Protocol.formatDiff(11, 4, t), "positive with a borrow");
        eq("-999999999988.500000000", Protocol.formatDiff(10, 500000000, new Protocol.ClientTime(999999999999L, 0)),
                "twelve digits of seconds do not overflow");
        eq("? bogus line\n", Protocol.invalid("bogus line\r"), "CRLF echo");
        eq("ok \\x5c \\x0a\\xff", Protocol.esc("ok \\ \n" + latin1((byte) 0xff)), "esc");
    }

    static void store() {
        Store s = new Store();
        Protocol.ClientTime t = new Protocol.ClientTime(5, 0);
        eq(true, s.update("k", t, "AT A +0.1 k +1-1 5"), "first");
        eq(false, s.update("k", t, "AT A +0.1 k +1-1 5"), "the same line is not new");
        eq(true, s.update("k", t, "AT B +0.1 k +1-1 5"), "equal time, greater line");
        eq(false, s.update("k", t, "AT A +0.2 k +1-1 5"), "equal time, smaller line");
        eq(true, s.update("k", t, "AT " + latin1((byte) 0xff)), "bytes compare unsigned");
        eq(false, s.update("k", new Protocol.ClientTime(4, 999999999), "AT Z"), "older");
        eq(true, s.update("k", new Protocol.ClientTime(5, 1), "AT A"), "newer");
    }

    static void peerProtocol() {
        eq(Protocol.Kind.HELLO, Protocol.parsePeerLine("HELLO Riley").kind(), "HELLO");
        eq("Riley", Protocol.parsePeerLine(" HELLO  Riley\r").text(), "HELLO name");
        eq(Protocol.Kind.INVALID, Protocol.parsePeerLine("HELLO Ril!ey").kind(), "bad name");
        eq("not a neighbour", Protocol.parsePeerLine("REFUSED not a neighbour ").text(), "reason");
        Protocol.PeerLine at = Protocol.parsePeerLine("AT  Riley +0.263873386 kiwi +34.068930-118.445127 1621464827.9");
        eq(Protocol.Kind.AT, at.kind(), "AT");
        eq("AT Riley +0.263873386 kiwi +34.068930-118.445127 1621464827.9", at.update().atLine(), "single spaces");
        eq(Protocol.Kind.INVALID, Protocol.parsePeerLine("AT Riley 0.263873386 kiwi +1-1 1").kind(), "diff sign");
        eq(Protocol.Kind.INVALID, Protocol.parsePeerLine("AT Riley +0.26387338 kiwi +1-1 1").kind(), "8 digits");
        eq(Protocol.Kind.PING, Protocol.parsePeerLine("PING").kind(), "PING");
        eq(Protocol.Kind.INVALID, Protocol.parsePeerLine("PING x").kind(), "PING x");
        eq(Protocol.Kind.BLANK, Protocol.parsePeerLine(" \r").kind(), "blank");
    }

    private static String herdError(String text) {
        try {
            HerdFile.parse(text, "h");
            return null;
        } catch (Cli.UsageError e) {
            return e.getMessage();
        }
    }

    static void herdFile() throws Exception {
        Map<String, HerdFile.ServerSpec> def = HerdFile.parse(HerdFile.DEFAULT_HERD_TEXT, "<built-in>");
        eq(List.of("Riley", "Jaquez", "Juzang", "Campbell", "Bernard"), List.copyOf(def.keySet()), "default herd");
        eq(new HerdFile.Addr("127.0.0.1", 22002), def.get("Juzang").peer(), "default peer port");
        eq(List.of("Riley", "Bernard", "Campbell"), def.get("Juzang").neighbours(), "neighbours");
        eq("h:2: duplicate server name A (first on line 1)",
                herdError("A 127.0.0.1:20001 B\nA 127.0.0.1:20002 B\nB 127.0.0.1:20003 A\n"), "duplicate");
        eq("h:1: A lists unknown neighbour C (no server of that name in this file)",
                herdError("A 127.0.0.1:20001 C\n"), "unknown neighbour");
        eq("h:1: A lists B as a neighbour but B (line 2) does not list A: links are bidirectional, "
                + "write them on both lines", herdError("A 127.0.0.1:20001 B\nB 127.0.0.1:20002\n"), "one-sided");
        eq("h:1: A lists itself as a neighbour", herdError("A 127.0.0.1:20001 A\n"), "itself");
        eq("h:1: A: bad address \"127.0.0.1:notaport\": port \"notaport\" is not a number",
                herdError("A 127.0.0.1:notaport\n"), "bad port");
        eq("h:2: B: client address 127.0.0.1:20001 collides with the client address of A (line 1)",
                herdError("A 127.0.0.1:20001\nB 127.0.0.1:20001\n"), "collision");
        eq("h:1: A: the default peer port 70000 (client port + 10000) is above 65535; give one with peer=HOST:PORT",
                herdError("A 127.0.0.1:60000\n"), "peer port too high");
        eq("h:1: bad server name \"A!\": use letters, digits, '_' and '-'", herdError("A! 127.0.0.1:20001\n"), "name");
        eq("h:1: A: bad address \"127.0.0.300:1\": \"127.0.0.300\" is not an IPv4 address",
                herdError("A 127.0.0.300:1\n"), "IPv4 range");
        eq(null, herdError("# comment\n\nA  [0:0:0:0:0:0:0:1]:1 peer=localhost:2  # end\r\n"), "IPv6 and comments");
        eq(new HerdFile.Addr("::1", 1), HerdFile.parseAddr("[0:0:0:0:0:0:0:1]:1"), "IPv6 compressed");
        eq(new HerdFile.Addr("2001:db8::1:0:0:1", 80), HerdFile.parseAddr("[2001:db8:0:0:1:0:0:1]:80"), "RFC 5952");
        eq("[::1]:1", new HerdFile.Addr("::1", 1).toString(), "IPv6 shown");
        eq("h: no servers in the herd file", herdError("# nothing\n"), "empty");
    }

    private static String cliError(String... args) {
        try {
            Cli.parse(args);
            return null;
        } catch (Cli.UsageError e) {
            return e.getMessage();
        }
    }

    static void commandLine() throws Exception {
        eq(Cli.Action.HELP, Cli.parse(new String[] {"Riley", "-h"}).action(), "help after NAME");
        eq(Cli.Action.VERSION, Cli.parse(new String[] {"--vers"}).action(), "a unique prefix");
        Cli.Options o = Cli.parse(new String[] {"--log=x.log", "Riley", "--places-api", "new", "1234"}).options();
        eq("x.log", o.log(), "--log=");
        eq(1234, o.port(), "PORT");
        eq(Cli.NEW_URL, o.placesUrl(), "the new API's default URL");
        eq("option --bogus not recognized (see --help)", cliError("--bogus", "Riley"), "unknown option");
        eq("option --places- not a unique prefix (see --help)", cliError("--places-", "x", "Riley"), "ambiguous");
        eq("option config given more than once (see --help)", cliError("-c", "a", "--config", "b", "Riley"), "twice");
        eq("missing server NAME (see --help)", cliError(), "no NAME");
        eq("bad PORT \"70000\": expected a number from 1 to 65535", cliError("Riley", "70000"), "PORT range");
        eq("--places-api: expected 'legacy' or 'new', got \"old\"", cliError("--places-api", "old", "Riley"), "api");
    }

    static void json() throws Exception {
        String doc = "{\"a\": [1, 2.50, \"x<y>\"], \"b\": {}, \"c\": [], \"d\": [{\"e\": 1E5, \"f\": null, \"g\": true}],"
                + " \"h\": \"\\u0001\\u007f\\ud83d\\ude00\"}";
        String want = "{\n   \"a\" : [ 1, 2.50, \"x\\u003cy\\u003e\" ],\n   \"b\" : {},\n   \"c\" : [],\n   \"d\" : [\n"
                + "      {\n         \"e\" : 1e+5,\n         \"f\" : null,\n         \"g\" : true\n      }\n   ],\n"
                + "   \"h\" : \"\\u0001\\u007f\ud83d\ude00\"\n}\n\n";
        eq(want, Json.print(Json.parse(doc)), "Google's style");
        eq("{\n   \"k\" : 2\n}\n\n", Json.print(Json.parse("{\"k\": 1, \"k\": 2}")), "a repeated key");
        for (String bad : new String[] {"", "{", "[1,]", "01", "NaN", "{\"a\" 1}", "\"\u0001\"", "1 2", "-", "[1.]"}) {
            boolean refused;
            try {
                Json.parse(bad);
                refused = false;
            } catch (Json.ParseError e) {
                refused = true;
            }
            eq(true, refused, "not JSON: " + bad);
        }
        eq("a\nb\n\n", Json.squeeze("a\n\n\nb\n\n\n"), "squeeze");
    }

    static void placesReply() {
        String legacy = "{\"html_attributions\":[],\"results\":[{\"name\":\"A\"},{\"name\":\"B\"},{\"name\":\"C\"}],"
                + "\"status\":\"OK\"}";
        PlacesReply.Rendered r = PlacesReply.render("legacy", 200, legacy.getBytes(StandardCharsets.UTF_8), 2);
        eq(true, r.ok(), "legacy ok");
        eq(2, r.results(), "cut to the bound");
        eq("{\n   \"html_attributions\" : [],\n   \"results\" : [\n      {\n         \"name\" : \"A\"\n      },\n"
                + "      {\n         \"name\" : \"B\"\n      }\n   ],\n   \"status\" : \"OK\"\n}\n\n", r.json(), "legacy json");
        String denied = "{\"error_message\":\"no key\",\"html_attributions\":[],\"results\":[],"
                + "\"status\":\"REQUEST_DENIED\"}";
        r = PlacesReply.render("legacy", 200, denied.getBytes(StandardCharsets.UTF_8), 2);
        eq("REQUEST_DENIED: no key (HTTP 200)", r.why(), "denied");
        String place = "{\"places\":[{\"id\":\"p1\",\"types\":[\"x\"],\"location\":{\"latitude\":1.5,\"longitude\":-2},"
                + "\"rating\":4.5,\"displayName\":{\"text\":\"N\",\"languageCode\":\"en\"},\"businessStatus\":\"OPERATIONAL\","
                + "\"formattedAddress\":\"long\",\"shortFormattedAddress\":\"short\"}]}";
        r = PlacesReply.render("new", 200, place.getBytes(StandardCharsets.UTF_8), 5);
        eq("{\n   \"html_attributions\" : [],\n   \"results\" : [\n      {\n         \"business_status\" : \"OPERATIONAL\",\n"
                + "         \"geometry\" : {\n            \"location\" : {\n               \"lat\" : 1.5,\n"
                + "               \"lng\" : -2\n            }\n         },\n         \"name\" : \"N\",\n"
                + "         \"place_id\" : \"p1\",\n         \"rating\" : 4.5,\n         \"types\" : [ \"x\" ],\n"
                + "         \"vicinity\" : \"short\"\n      }\n   ],\n   \"status\" : \"OK\"\n}\n\n", r.json(), "new -> legacy");
        r = PlacesReply.render("new", 200, "{}".getBytes(StandardCharsets.UTF_8), 5);
        eq(true, r.json().contains("\"status\" : \"ZERO_RESULTS\""), "no places");
        String error = "{\"error\":{\"code\":403,\"message\":\"bad key\",\"status\":\"PERMISSION_DENIED\"}}";
        r = PlacesReply.render("new", 403, error.getBytes(StandardCharsets.UTF_8), 5);
        eq("REQUEST_DENIED: bad key (HTTP 403, PERMISSION_DENIED)", r.why(), "Google's error");
        r = PlacesReply.render("legacy", 200, "<html>".getBytes(StandardCharsets.UTF_8), 5);
        eq(true, r.json().contains("with a body that is not JSON"), "not JSON");
        r = PlacesReply.render("legacy", 500, "oops".getBytes(StandardCharsets.UTF_8), 5);
        eq("UNKNOWN_ERROR: Places answered HTTP 500", r.why(), "HTTP 500");
        r = PlacesReply.render("legacy", 200, new byte[] {'"', (byte) 0xff, '"'}, 5);
        eq(false, r.ok(), "bad UTF-8");
    }

    private static Http.Response response(String text) throws IOException {
        return Http.readResponse(new ByteArrayInputStream(text.getBytes(StandardCharsets.ISO_8859_1)));
    }

    private static String httpError(String text) {
        try {
            response(text);
            return null;
        } catch (IOException e) {
            return e.getMessage();
        }
    }

    static void http() throws Exception {
        Http.Response r = response("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi");
        eq(200, r.status(), "after 100");
        eq("hi", new String(r.body(), StandardCharsets.ISO_8859_1), "Content-Length body");
        eq(true, r.keepAlive(), "keep-alive");
        r = response("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
                + "3;x=y\r\nabc\r\n2\r\nde\r\n0\r\nTrailer: t\r\n\r\n");
        eq("abcde", new String(r.body(), StandardCharsets.ISO_8859_1), "chunked");
        eq(false, r.keepAlive(), "Connection: close");
        r = response("HTTP/1.0 200 OK\r\n\r\nto the end");
        eq("to the end", new String(r.body(), StandardCharsets.ISO_8859_1), "read to close");
        eq("connection closed before the response", httpError(""), "nothing");
        eq("bad status line ICY 200 OK\\x0d\\x0a", httpError("ICY 200 OK\r\n\r\n"), "not HTTP");
        eq("both Content-Length and Transfer-Encoding",
                httpError("HTTP/1.1 200 OK\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n"), "both");
        eq("bad Content-Length", httpError("HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"), "CL");
        eq("bad chunk size", httpError("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"), "chunk size");
        eq("34.068930", Http.jsonNumber("+34.068930"), "no plus");
        eq("-118.5", Http.jsonNumber("-0118.5"), "no leading zero");
        eq("7", Http.jsonNumber("007"), "zeros");
        eq("-0.5", Http.jsonNumber("-000.5"), "zeros before the point");
        eq("0", Http.jsonNumber("+0"), "zero");
        Http.Endpoint ep = new Http.Endpoint("https://127.0.0.1:8443/maps/json?key=secret&x=1#frag");
        eq("127.0.0.1:8443", ep.authority, "authority");
        eq("/maps/json?key=secret&x=1&location=1.5,-2&radius=1500&key=K", ep.legacyTarget("1.5", "-2", "1500", "K"),
                "legacy target");
        eq("/maps/json?key=***&x=1&location=1&key=***", Http.redactKeys("/maps/json?key=secret&x=1&location=1&key=K"),
                "keys redacted");
        eq("a%20b%2B%C3%A9~", Http.percentEncode("a b+\u00e9~"), "percent-encoding");
        boolean refused = false;
        try {
            new Http.Endpoint("http://example.com/");
        } catch (IllegalArgumentException e) {
            refused = true;
        }
        eq(true, refused, "only https");
    }

    static void lineBuffer() {
        LineBuffer b = new LineBuffer(Protocol.MAX_LINE);
        java.util.ArrayList<String> got = new java.util.ArrayList<>();
        byte[] part1 = "IAM".getBytes(StandardCharsets.ISO_8859_1);
        byte[] part2 = "AT x\nsecond\r\nthi".getBytes(StandardCharsets.ISO_8859_1);
        eq(false, b.feed(part1, part1.length, got::add), "a piece");
        eq(false, b.feed(part2, part2.length, got::add), "more pieces");
        eq(List.of("IAMAT x", "second\r"), got, "lines");
        eq("thi", b.finish(), "the last line at EOF");
        eq(null, b.finish(), "nothing more");
        byte[] big = new byte[Protocol.MAX_LINE + 2];
        java.util.Arrays.fill(big, (byte) 'x');
        eq(true, new LineBuffer(Protocol.MAX_LINE).feed(big, big.length, got::add), "a line over 64 KiB");
        eq(false, new LineBuffer(Protocol.MAX_PEER_LINE).feed(big, big.length, got::add), "a peer takes it");
    }
}
