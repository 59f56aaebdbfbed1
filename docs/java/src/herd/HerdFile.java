package herd;

import java.io.IOException;
import java.net.Inet4Address;
import java.net.Inet6Address;
import java.net.InetAddress;
import java.net.UnknownHostException;
import java.nio.ByteBuffer;
import java.nio.charset.CharacterCodingException;
import java.nio.charset.CharsetDecoder;
import java.nio.charset.CodingErrorAction;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.regex.Pattern;

/** The herd file (docs/spec.md §2; src/herd/config.rs, herd.py's parse_herd). */
final class HerdFile {
    private HerdFile() {}

    static final String DEFAULT_HERD_TEXT = """
            # The default herd (docs/spec.md §2). Peer ports default to client port + 10000.
            Riley       127.0.0.1:12000    Jaquez Juzang
            Jaquez      127.0.0.1:12001    Riley Bernard
            Juzang      127.0.0.1:12002    Riley Bernard Campbell
            Campbell    127.0.0.1:12003    Juzang Bernard
            Bernard     127.0.0.1:12004    Jaquez Juzang Campbell
            """;

    private static final Pattern NAME = Pattern.compile("[A-Za-z0-9_-]+");
    private static final Pattern LABEL = Pattern.compile("[A-Za-z0-9-]{1,63}");

    /** host:port; an IPv6 host is kept compressed and without brackets. */
    record Addr(String host, int port) {
        @Override
        public String toString() {
            return host.contains(":") ? "[" + host + "]:" + port : host + ":" + port;
        }
    }

    /** One line of the herd file. */
    record ServerSpec(String name, Addr client, Addr peer, List<String> neighbours, int line) {}

    /** Why an address is bad, as an exception carrying the message. */
    static final class BadAddress extends Exception {
        private static final long serialVersionUID = 1L;

        BadAddress(String message) {
            super(message);
        }
    }

    /** Quotes a value in a message the way Rust's {:?} (and herd.py's q) does. */
    static String q(String text) {
        StringBuilder out = new StringBuilder(text.length() + 2).append('"');
        for (int i = 0; i < text.length(); i++) {
            char c = text.charAt(i);
            switch (c) {
                case '"' -> out.append("\\\"");
                case '\\' -> out.append("\\\\");
                case '\n' -> out.append("\\n");
                case '\r' -> out.append("\\r");
                case '\t' -> out.append("\\t");
                case '\b' -> out.append("\\b");
                case '\f' -> out.append("\\f");
                default -> {
                    if (c < 0x20) {
                        out.append(String.format("\\u%04x", (int) c));
                    } else {
                        out.append(c);
                    }
                }
            }
        }
        return out.append('"').toString();
    }

    /** Why a host name or IPv4 address is bad, or null. */
    static String checkHost(String host) {
        if (host.isEmpty()) {
            return "empty host";
        }
        // Digits and dots are meant as IPv4: 127.0.0.300 is an error, not a name.
        boolean numeric = true;
        for (int i = 0; i < host.length(); i++) {
            char c = host.charAt(i);
            if (!Character.isDigit(c) && c != '.') {
                numeric = false;
                break;
            }
        }
        if (numeric) {
            return isIpv4(host) ? null : q(host) + " is not an IPv4 address";
        }
        if (host.length() > 253) {
            return "host name longer than 253 characters";
        }
        for (String label : host.split("\\.", -1)) {
            if (!LABEL.matcher(label).matches() || label.startsWith("-") || label.endsWith("-")) {
                return q(host) + " is not a valid host name";
            }
        }
        return null;
    }

    /** Four decimal octets 0..255 without leading zeros, as Python's ipaddress wants. */
    static boolean isIpv4(String text) {
        String[] parts = text.split("\\.", -1);
        if (parts.length != 4) {
            return false;
        }
        for (String p : parts) {
            if (p.isEmpty() || p.length() > 3 || !Protocol.allDigits(p)
                    || (p.length() > 1 && p.charAt(0) == '0') || Integer.parseInt(p) > 255) {
                return false;
            }
        }
        return true;
    }

    /** An IPv6 literal in its RFC 5952 compressed form, or null. */
    static String compressIpv6(String text) {
        if (text.isEmpty() || text.contains("%")) {
            return null; // zone ids are not accepted (as in Rust)
        }
        for (int i = 0; i < text.length(); i++) {
            char c = text.charAt(i);
            if (Character.digit(c, 16) < 0 && c != ':' && c != '.') {
                return null; // keeps getByName from ever looking a name up
            }
        }
        byte[] raw;
        try {
            InetAddress a = InetAddress.getByName("[" + text + "]");
            raw = a.getAddress();
            if (a instanceof Inet4Address) {
                // Java turns ::ffff:a.b.c.d into IPv4; keep it as the IPv6 it was.
                byte[] mapped = new byte[16];
                mapped[10] = (byte) 0xff;
                mapped[11] = (byte) 0xff;
                System.arraycopy(raw, 0, mapped, 12, 4);
                raw = mapped;
            } else if (!(a instanceof Inet6Address)) {
                return null;
            }
        } catch (UnknownHostException e) {
            return null;
        }
        int[] groups = new int[8];
        for (int i = 0; i < 8; i++) {
            groups[i] = ((raw[2 * i] & 0xff) << 8) | (raw[2 * i + 1] & 0xff);
        }
        int bestStart = -1;
        int bestLen = 0;
        for (int i = 0; i < 8; ) {
            if (groups[i] != 0) {
                i++;
                continue;
            }
            int j = i;
            while (j < 8 && groups[j] == 0) {
                j++;
            }
            if (j - i > bestLen) {
                bestStart = i;
                bestLen = j - i;
            }
            i = j;
        }
        if (bestLen < 2) {
            bestStart = -1;
        }
        StringBuilder out = new StringBuilder();
        for (int i = 0; i < 8; i++) {
            if (i == bestStart) {
                out.append("::");
                i += bestLen - 1;
                continue;
            }
            if (out.length() > 0 && out.charAt(out.length() - 1) != ':') {
                out.append(':');
            }
            out.append(Integer.toHexString(groups[i]));
        }
        return out.toString();
    }

    /** A port: decimal digits only, 1..65535. */
    static int parsePort(String text) throws BadAddress {
        if (text.isEmpty()) {
            throw new BadAddress("missing port");
        }
        if (!Protocol.allDigits(text)) {
            throw new BadAddress("port " + q(text) + " is not a number");
        }
        String digits = Protocol.stripLeading(text, '0');
        if (digits.length() > 5 || digits.isEmpty() || Integer.parseInt(digits) > 65535) {
            throw new BadAddress("port " + text + " is out of range 1..65535");
        }
        return Integer.parseInt(digits);
    }

    /** host:port (name, IPv4 or [IPv6]). */
    static Addr parseAddr(String text) throws BadAddress {
        String host;
        String portText;
        if (text.startsWith("[")) {
            int close = text.indexOf(']');
            if (close < 0) {
                throw new BadAddress("bad address " + q(text) + ": missing ']' after the IPv6 host");
            }
            String inside = text.substring(1, close);
            String after = text.substring(close + 1);
            if (!after.startsWith(":")) {
                throw new BadAddress("bad address " + q(text) + ": expected [IPv6]:PORT");
            }
            host = compressIpv6(inside);
            if (host == null) {
                throw new BadAddress("bad address " + q(text) + ": " + q(inside) + " is not an IPv6 address");
            }
            portText = after.substring(1);
        } else {
            int colon = text.lastIndexOf(':');
            if (colon < 0) {
                throw new BadAddress("bad address " + q(text) + ": expected HOST:PORT");
            }
            host = text.substring(0, colon);
            portText = text.substring(colon + 1);
            if (host.contains(":")) {
                throw new BadAddress("bad address " + q(text) + ": write an IPv6 host in brackets, as [::1]:PORT");
            }
            String why = checkHost(host);
            if (why != null) {
                throw new BadAddress("bad address " + q(text) + ": " + why);
            }
        }
        try {
            return new Addr(host, parsePort(portText));
        } catch (BadAddress e) {
            throw new BadAddress("bad address " + q(text) + ": " + e.getMessage());
        }
    }

    /** Python's str.split() white space, near enough: Unicode spaces and separators. */
    private static boolean pythonSpace(char c) {
        return Character.isWhitespace(c) || Character.isSpaceChar(c) || c == 0x85;
    }

    private static List<String> splitWords(String s) {
        List<String> out = new ArrayList<>();
        int i = 0;
        while (i < s.length()) {
            while (i < s.length() && pythonSpace(s.charAt(i))) {
                i++;
            }
            int start = i;
            while (i < s.length() && !pythonSpace(s.charAt(i))) {
                i++;
            }
            if (i > start) {
                out.add(s.substring(start, i));
            }
        }
        return out;
    }

    private static ServerSpec parseLine(List<String> fields, String source, int line) throws Cli.UsageError {
        String name = fields.get(0);
        String at = source + ":" + line + ": ";
        if (!NAME.matcher(name).matches()) {
            throw new Cli.UsageError(at + "bad server name " + q(name) + ": use letters, digits, '_' and '-'");
        }
        if (fields.size() < 2) {
            throw new Cli.UsageError(at + "server " + name + " has no client address");
        }
        Addr client;
        try {
            client = parseAddr(fields.get(1));
        } catch (BadAddress e) {
            throw new Cli.UsageError(at + name + ": " + e.getMessage());
        }
        Addr peer = null;
        List<String> neighbours = new ArrayList<>();
        for (String field : fields.subList(2, fields.size())) {
            if (field.startsWith("peer=")) {
                if (peer != null) {
                    throw new Cli.UsageError(at + name + ": peer= given twice");
                }
                try {
                    peer = parseAddr(field.substring(5));
                } catch (BadAddress e) {
                    throw new Cli.UsageError(at + name + ": peer " + e.getMessage());
                }
            } else if (field.contains("=")) {
                throw new Cli.UsageError(at + name + ": unknown setting " + q(field) + " (only peer=ADDR is known)");
            } else if (!NAME.matcher(field).matches()) {
                throw new Cli.UsageError(at + name + ": bad neighbour name " + q(field)
                        + ": use letters, digits, '_' and '-'");
            } else if (field.equals(name)) {
                throw new Cli.UsageError(at + name + " lists itself as a neighbour");
            } else if (neighbours.contains(field)) {
                throw new Cli.UsageError(at + name + " lists neighbour " + field + " twice");
            } else {
                neighbours.add(field);
            }
        }
        if (peer == null) {
            // The default peer port, as Redis Cluster does for its bus port.
            int port = client.port() + 10000;
            if (port > 65535) {
                throw new Cli.UsageError(at + name + ": the default peer port " + port
                        + " (client port + 10000) is above 65535; give one with peer=HOST:PORT");
            }
            peer = new Addr(client.host(), port);
        }
        return new ServerSpec(name, client, peer, List.copyOf(neighbours), line);
    }

    /** Parses and validates herd file text: every check of HerdConfig::parse. */
    static Map<String, ServerSpec> parse(String text, String source) throws Cli.UsageError {
        Map<String, ServerSpec> servers = new LinkedHashMap<>();
        String[] lines = text.split("\n", -1);
        for (int i = 0; i < lines.length; i++) {
            String raw = lines[i].endsWith("\r") ? lines[i].substring(0, lines[i].length() - 1) : lines[i];
            int hash = raw.indexOf('#');
            List<String> fields = splitWords(hash < 0 ? raw : raw.substring(0, hash));
            if (fields.isEmpty()) {
                continue;
            }
            ServerSpec spec = parseLine(fields, source, i + 1);
            ServerSpec first = servers.get(spec.name());
            if (first != null) {
                throw new Cli.UsageError(source + ":" + (i + 1) + ": duplicate server name " + spec.name()
                        + " (first on line " + first.line() + ")");
            }
            servers.put(spec.name(), spec);
        }
        if (servers.isEmpty()) {
            throw new Cli.UsageError(source + ": no servers in the herd file");
        }
        for (ServerSpec s : servers.values()) { // every link known, and written on both sides
            for (String n : s.neighbours()) {
                ServerSpec other = servers.get(n);
                if (other == null) {
                    throw new Cli.UsageError(source + ":" + s.line() + ": " + s.name() + " lists unknown neighbour "
                            + n + " (no server of that name in this file)");
                }
                if (!other.neighbours().contains(s.name())) {
                    throw new Cli.UsageError(source + ":" + s.line() + ": " + s.name() + " lists " + n
                            + " as a neighbour but " + n + " (line " + other.line() + ") does not list " + s.name()
                            + ": links are bidirectional, write them on both lines");
                }
            }
        }
        // Ports collide when hosts are equal as text (names case-insensitively).
        record Seen(ServerSpec spec, String kind, String host, int port) {}
        List<Seen> seen = new ArrayList<>();
        for (ServerSpec s : servers.values()) {
            for (int k = 0; k < 2; k++) {
                String kind = k == 0 ? "client" : "peer";
                Addr a = k == 0 ? s.client() : s.peer();
                String host = a.host().toLowerCase(java.util.Locale.ROOT);
                for (Seen x : seen) {
                    if (x.host().equals(host) && x.port() == a.port()) {
                        String whose = x.spec() == s ? "its own " + x.kind() + " address"
                                : "the " + x.kind() + " address of " + x.spec().name() + " (line " + x.spec().line() + ")";
                        throw new Cli.UsageError(source + ":" + s.line() + ": " + s.name() + ": " + kind + " address "
                                + a + " collides with " + whose);
                    }
                }
                seen.add(new Seen(s, kind, host, a.port()));
            }
        }
        return servers;
    }

    /** Reads and parses a herd file; every error names the file (and line). */
    static Map<String, ServerSpec> load(String path) throws Cli.UsageError {
        byte[] data;
        try {
            data = Files.readAllBytes(Path.of(path));
        } catch (NoSuchFileException e) {
            throw new Cli.UsageError(path + ": cannot read the herd file: No such file or directory");
        } catch (IOException | RuntimeException e) {
            throw new Cli.UsageError(path + ": cannot read the herd file: " + e.getMessage());
        }
        CharsetDecoder decoder = StandardCharsets.UTF_8.newDecoder()
                .onMalformedInput(CodingErrorAction.REPORT)
                .onUnmappableCharacter(CodingErrorAction.REPORT);
        String text;
        try {
            text = decoder.decode(ByteBuffer.wrap(data)).toString();
        } catch (CharacterCodingException e) {
            throw new Cli.UsageError(path + ":" + badUtf8Line(data) + ": the herd file is not valid UTF-8");
        }
        return parse(text, path);
    }

    /** The line of the first byte that is not valid UTF-8. */
    private static int badUtf8Line(byte[] data) {
        CharsetDecoder decoder = StandardCharsets.UTF_8.newDecoder()
                .onMalformedInput(CodingErrorAction.REPORT)
                .onUnmappableCharacter(CodingErrorAction.REPORT);
        ByteBuffer in = ByteBuffer.wrap(data);
        java.nio.CharBuffer out = java.nio.CharBuffer.allocate(data.length + 1);
        decoder.decode(in, out, true); // stops at the first bad byte
        int line = 1;
        for (int i = 0; i < in.position(); i++) {
            if (data[i] == '\n') {
                line++;
            }
        }
        return line;
    }
}
