package herd;

import java.util.ArrayList;
import java.util.List;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

/**
 * The client and peer protocols, pure: parsing and formatting only, no I/O
 * (src/protocol/client.rs and src/protocol/peer.rs; herd.py's parse_* functions).
 *
 * <p>Lines are bytes. They are held as ISO-8859-1 strings: one char per byte,
 * so nothing is lost, any byte sequence is a valid "string", and
 * {@link String#compareTo} orders two lines exactly as their bytes compare
 * (unsigned), which is the store's tie-break rule.
 */
final class Protocol {
    private Protocol() {}

    /** A longer line disconnects the client. */
    static final int MAX_LINE = 64 * 1024;

    /**
     * A longer line breaks a peer link (src/protocol/peer.rs). An AT line is
     * longer than its IAMAT, so peers take a little more than clients, and an
     * IAMAT whose AT line would still not fit is refused at the client port:
     * no link ever meets a line it refuses.
     */
    static final int MAX_PEER_LINE = MAX_LINE + 1024;

    static final long NS = 1_000_000_000L;

    // Java's \d is ASCII only unless UNICODE_CHARACTER_CLASS is asked for,
    // as Python's is on bytes.
    private static final Pattern LOCATION =
            Pattern.compile("([+-])(\\d+(?:\\.\\d+)?)([+-])(\\d+(?:\\.\\d+)?)");
    private static final Pattern DECIMAL = Pattern.compile("(\\d+)(?:\\.(\\d+))?");
    private static final Pattern DIFF = Pattern.compile("[+-]\\d{1,20}\\.\\d{9}");
    private static final Pattern NAME = Pattern.compile("[A-Za-z0-9_-]+");

    /** docs/spec.md's white space: space, \t, \n, \r, form feed and vertical tab. */
    static boolean isSpace(char c) {
        return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == 0x0b;
    }

    /** Splits a line on runs of white space; leading and trailing ones ignored. */
    static List<String> fields(String line) {
        List<String> out = new ArrayList<>(6);
        int i = 0;
        int n = line.length();
        while (i < n) {
            while (i < n && isSpace(line.charAt(i))) {
                i++;
            }
            int start = i;
            while (i < n && !isSpace(line.charAt(i))) {
                i++;
            }
            if (i > start) {
                out.add(line.substring(start, i));
            }
        }
        return out;
    }

    static boolean isName(String text) {
        return NAME.matcher(text).matches();
    }

    // ----- the client protocol (src/protocol/client.rs) ---------------------

    /** A latitude and longitude as plain decimal text (no '+'), for Places. */
    record Coords(String lat, String lon) {}

    /** |number| <= limit, compared exactly on the digits (no float). */
    static boolean within(String number, int limit) {
        int dot = number.indexOf('.');
        String whole = stripLeading(dot < 0 ? number : number.substring(0, dot), '0');
        String frac = dot < 0 ? "" : number.substring(dot + 1);
        if (whole.length() > 3) {
            return false;
        }
        int value = whole.isEmpty() ? 0 : Integer.parseInt(whole);
        return value < limit || (value == limit && stripLeading(frac, '0').isEmpty());
    }

    /** ISO 6709 +LAT-LNG with range checks, or null. */
    static Coords parseLocation(String text) {
        Matcher m = LOCATION.matcher(text);
        if (!m.matches() || !within(m.group(2), 90) || !within(m.group(4), 180)) {
            return null;
        }
        String lat = (m.group(1).equals("-") ? "-" : "") + m.group(2);
        String lon = (m.group(3).equals("-") ? "-" : "") + m.group(4);
        return new Coords(lat, lon);
    }

    /**
     * A client's time: POSIX seconds and nanoseconds, exact. Two longs rather
     * than one count of nanoseconds: twelve digits of seconds times 10^9
     * overflows a long.
     */
    record ClientTime(long seconds, int nanos) implements Comparable<ClientTime> {
        @Override
        public int compareTo(ClientTime o) {
            int c = Long.compare(seconds, o.seconds);
            return c != 0 ? c : Integer.compare(nanos, o.nanos);
        }
    }

    /** POSIX seconds with up to 9 fraction digits, or null. */
    static ClientTime parseTime(String text) {
        Matcher m = DECIMAL.matcher(text);
        if (!m.matches()) {
            return null;
        }
        String whole = stripLeading(m.group(1), '0');
        String frac = m.group(2) == null ? "" : m.group(2);
        // The digit limit refuses absurd times (beyond the year 33000).
        if (frac.length() > 9 || whole.length() > 12) {
            return null;
        }
        long seconds = whole.isEmpty() ? 0 : Long.parseLong(whole);
        int nanos = Integer.parseInt((frac + "000000000").substring(0, 9));
        return new ClientTime(seconds, nanos);
    }

    /** A radius in km, in (0, 50], as exact metres text (10 -> 10000, 1.2345 -> 1234.5), or null. */
    static String radiusMetres(String text) {
        Matcher m = DECIMAL.matcher(text);
        if (!m.matches() || !within(text, 50)) {
            return null;
        }
        String frac = stripTrailing(m.group(2) == null ? "" : m.group(2), '0');
        // Shift the point three places, as text, so nothing is rounded.
        String head = frac.length() >= 3 ? frac.substring(0, 3) : (frac + "000").substring(0, 3);
        String out = stripLeading(m.group(1) + head, '0');
        if (out.isEmpty()) {
            out = "0";
        }
        if (frac.length() > 3) {
            out += "." + frac.substring(3);
        }
        for (int i = 0; i < out.length(); i++) {
            char c = out.charAt(i);
            if (c != '0' && c != '.') {
                return out;
            }
        }
        return null; // zero is no radius
    }

    /** A whole number from 1 to 20, or 0 when it is not one. */
    static int parseBound(String text) {
        if (text.isEmpty() || !allDigits(text)) {
            return 0;
        }
        String t = stripLeading(text, '0');
        if (t.length() > 2) {
            return 0;
        }
        int value = t.isEmpty() ? 0 : Integer.parseInt(t);
        return value >= 1 && value <= 20 ? value : 0;
    }

    /** now - t as "+0.263873386": always a sign, exactly nine fraction digits. */
    static String formatDiff(long nowSeconds, int nowNanos, ClientTime t) {
        long secs = nowSeconds - t.seconds();
        long nanos = (long) nowNanos - t.nanos();
        // Give both parts the same sign, so |diff| = |secs| + |nanos| / 10^9.
        if (secs > 0 && nanos < 0) {
            secs -= 1;
            nanos += NS;
        } else if (secs < 0 && nanos > 0) {
            secs += 1;
            nanos -= NS;
        }
        boolean negative = secs < 0 || (secs == 0 && nanos < 0);
        String frac = Long.toString(Math.abs(nanos));
        return (negative ? "-" : "+") + Math.abs(secs) + "." + "000000000".substring(frac.length()) + frac;
    }

    /** "? " + the line as received, without its terminator, and "\n". */
    static String invalid(String line) {
        String body = line.endsWith("\r") ? line.substring(0, line.length() - 1) : line;
        return "? " + body + "\n";
    }

    // ----- the peer protocol (src/protocol/peer.rs) --------------------------

    /** An AT line from a peer, validated like a client's IAMAT. */
    record Update(String client, ClientTime time, String atLine) {}

    enum Kind { HELLO, WELCOME, REFUSED, AT, PING, PONG, BLANK, INVALID }

    /** One peer line: its kind, and the name, reason or update it carries. */
    record PeerLine(Kind kind, String text, Update update) {
        static PeerLine of(Kind kind) {
            return new PeerLine(kind, null, null);
        }
    }

    static Update parseUpdate(List<String> f) {
        if (f.size() != 6 || !isName(f.get(1)) || !DIFF.matcher(f.get(2)).matches()
                || parseLocation(f.get(4)) == null) {
            return null;
        }
        ClientTime time = parseTime(f.get(5));
        if (time == null) {
            return null;
        }
        return new Update(f.get(3), time, String.join(" ", f));
    }

    static PeerLine parsePeerLine(String line) {
        List<String> f = fields(line);
        if (f.isEmpty()) {
            return PeerLine.of(Kind.BLANK);
        }
        String cmd = f.get(0);
        if ((cmd.equals("HELLO") || cmd.equals("WELCOME")) && f.size() == 2 && isName(f.get(1))) {
            return new PeerLine(Kind.valueOf(cmd), f.get(1), null);
        }
        if (cmd.equals("REFUSED")) {
            String rest = trim(line);
            return new PeerLine(Kind.REFUSED, trim(rest.substring("REFUSED".length())), null);
        }
        if (cmd.equals("AT")) {
            Update u = parseUpdate(f);
            return u == null ? PeerLine.of(Kind.INVALID) : new PeerLine(Kind.AT, null, u);
        }
        if ((cmd.equals("PING") || cmd.equals("PONG")) && f.size() == 1) {
            return PeerLine.of(Kind.valueOf(cmd));
        }
        return PeerLine.of(Kind.INVALID);
    }

    // ----- small text helpers -------------------------------------------------

    /** Strips docs/spec.md's white space from both ends (String.strip knows other spaces). */
    static String trim(String s) {
        int a = 0;
        int b = s.length();
        while (a < b && isSpace(s.charAt(a))) {
            a++;
        }
        while (b > a && isSpace(s.charAt(b - 1))) {
            b--;
        }
        return s.substring(a, b);
    }

    static boolean allDigits(String s) {
        for (int i = 0; i < s.length(); i++) {
            char c = s.charAt(i);
            if (c < '0' || c > '9') {
                return false;
            }
        }
        return true;
    }

    static String stripLeading(String s, char c) {
        int i = 0;
        while (i < s.length() && s.charAt(i) == c) {
            i++;
        }
        return s.substring(i);
    }

    static String stripTrailing(String s, char c) {
        int i = s.length();
        while (i > 0 && s.charAt(i - 1) == c) {
            i--;
        }
        return s.substring(0, i);
    }

    /** Bytes from the network on one log line: all but printable ASCII, and \, as \xHH. */
    static String esc(String bytes) {
        StringBuilder out = null;
        for (int i = 0; i < bytes.length(); i++) {
            char c = bytes.charAt(i);
            boolean plain = c >= 0x20 && c <= 0x7e && c != '\\';
            if (plain && out == null) {
                continue;
            }
            if (out == null) {
                out = new StringBuilder(bytes.length() + 16).append(bytes, 0, i);
            }
            if (plain) {
                out.append(c);
            } else {
                out.append("\\x").append(Character.forDigit((c >> 4) & 0xf, 16))
                        .append(Character.forDigit(c & 0xf, 16));
            }
        }
        return out == null ? bytes : out.toString();
    }
}
