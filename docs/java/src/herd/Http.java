package herd;

import java.io.ByteArrayOutputStream;
import java.io.EOFException;
import java.io.IOException;
import java.io.InputStream;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

/**
 * HTTP/1.1 for Places, by hand (src/places/http.rs; herd.py's Endpoint and
 * read_response): the endpoint URL taken apart, requests written, responses
 * read with Content-Length, chunked or read-to-close bodies.
 */
final class Http {
    private Http() {}

    static final int MAX_BODY = 16 * 1024 * 1024;
    private static final int MAX_LINE = 64 * 1024;

    /** A response that breaks HTTP/1.1 framing. */
    static final class HttpError extends IOException {
        private static final long serialVersionUID = 1L;

        HttpError(String message) {
            super(message);
        }
    }

    record Response(int status, byte[] body, boolean keepAlive) {}

    /** An https:// URL taken apart (http.rs: Endpoint::parse). */
    static final class Endpoint {
        private static final Pattern AUTHORITY =
                Pattern.compile("\\[([0-9A-Fa-f:.]+)\\](?::(\\d+))?|([A-Za-z0-9._-]+)(?::(\\d+))?");

        final String host;
        final int port;
        final String path;
        final String query;
        final String authority;

        Endpoint(String url) throws IllegalArgumentException {
            int sep = url.indexOf("://");
            if (sep < 0 || !url.substring(0, sep).toLowerCase(Locale.ROOT).equals("https")) {
                throw bad(url, "only https:// is supported");
            }
            String rest = url.substring(sep + 3);
            int hash = rest.indexOf('#');
            if (hash >= 0) {
                rest = rest.substring(0, hash);
            }
            int split = rest.length();
            for (char c : new char[] {'/', '?'}) {
                int i = rest.indexOf(c);
                if (i >= 0 && i < split) {
                    split = i;
                }
            }
            String auth = rest.substring(0, split);
            String pathQuery = rest.substring(split);
            if (auth.contains("@")) {
                throw bad(url, "user information is not supported");
            }
            Matcher m = AUTHORITY.matcher(auth);
            if (!m.matches()) {
                throw bad(url, "bad host or port");
            }
            host = m.group(1) != null ? m.group(1) : m.group(3);
            String portText = m.group(2) != null ? m.group(2) : m.group(4);
            String digits = portText == null ? "443" : Protocol.stripLeading(portText, '0');
            if (digits.isEmpty() || digits.length() > 5 || Integer.parseInt(digits) > 65535) {
                throw bad(url, "port out of range");
            }
            port = Integer.parseInt(digits);
            int q = pathQuery.indexOf('?');
            String p = q < 0 ? pathQuery : pathQuery.substring(0, q);
            String qs = q < 0 ? "" : pathQuery.substring(q + 1);
            for (char c : (p + qs).toCharArray()) {
                if (c < 0x21 || c > 0x7e) {
                    throw bad(url, "the path and query must be printable ASCII without spaces");
                }
            }
            path = p.isEmpty() ? "/" : p;
            query = qs;
            String h = host.contains(":") ? "[" + host + "]" : host;
            authority = port == 443 ? h : h + ":" + port;
        }

        private static IllegalArgumentException bad(String url, String why) {
            return new IllegalArgumentException("bad Places URL " + HerdFile.q(url) + ": " + why);
        }

        String legacyTarget(String lat, String lon, String radius, String keyText) {
            StringBuilder target = new StringBuilder(path).append('?');
            if (!query.isEmpty()) {
                target.append(query);
                if (!query.endsWith("&")) {
                    target.append('&');
                }
            }
            return target.append("location=").append(percentEncode(lat)).append(',').append(percentEncode(lon))
                    .append("&radius=").append(percentEncode(radius)).append("&key=").append(keyText).toString();
        }

        String newTarget() {
            return query.isEmpty() ? path : path + "?" + query;
        }
    }

    /** Everything but RFC 3986 unreserved characters as %XX. */
    static String percentEncode(String text) {
        StringBuilder out = new StringBuilder();
        for (byte b : text.getBytes(StandardCharsets.UTF_8)) {
            int c = b & 0xff;
            if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9')
                    || c == '-' || c == '.' || c == '_' || c == '~') {
                out.append((char) c);
            } else {
                out.append('%').append(String.format("%02X", c));
            }
        }
        return out.toString();
    }

    /** Any key= parameter's value shown as ***, even one written into the URL. */
    static String redactKeys(String target) {
        int q = target.indexOf('?');
        if (q < 0) {
            return target;
        }
        List<String> params = new ArrayList<>();
        for (String p : target.substring(q + 1).split("&", -1)) {
            int eq = p.indexOf('=');
            if (eq >= 0 && p.substring(0, eq).toLowerCase(Locale.ROOT).equals("key")) {
                params.add(p.substring(0, eq) + "=***");
            } else {
                params.add(p);
            }
        }
        return target.substring(0, q) + "?" + String.join("&", params);
    }

    private static final Pattern JSON_NUMBER = Pattern.compile("-?(0|[1-9]\\d*)(\\.\\d+)?([eE][+-]?\\d+)?");

    /** A number's text as JSON accepts it: no '+', no leading zeros (else a JSON string). */
    static String jsonNumber(String text) {
        String t = text.startsWith("+") ? text.substring(1) : text;
        String sign = t.startsWith("-") ? "-" : "";
        String digits = sign.isEmpty() ? t : t.substring(1);
        int whole = 0;
        while (whole < digits.length() && digits.charAt(whole) >= '0' && digits.charAt(whole) <= '9') {
            whole++;
        }
        int zeros = 0;
        while (zeros < whole - 1 && digits.charAt(zeros) == '0') {
            zeros++;
        }
        String candidate = sign + digits.substring(zeros);
        if (JSON_NUMBER.matcher(candidate).matches()) {
            return candidate;
        }
        StringBuilder out = new StringBuilder();
        Json.googleString(out, text);
        return out.toString();
    }

    /** Counts the bytes read, so a failure can tell whether any answer came. */
    static final class CountingInput extends InputStream {
        private final InputStream in;
        long count;

        CountingInput(InputStream in) {
            this.in = in;
        }

        @Override
        public int read() throws IOException {
            int b = in.read();
            if (b >= 0) {
                count++;
            }
            return b;
        }

        @Override
        public int read(byte[] buf, int off, int len) throws IOException {
            int n = in.read(buf, off, len);
            if (n > 0) {
                count += n;
            }
            return n;
        }

        @Override
        public int available() throws IOException {
            return in.available();
        }
    }

    /** One line, "\n" included (without it only at end of file); empty at end of file. */
    private static byte[] readLine(InputStream in) throws IOException {
        ByteArrayOutputStream line = new ByteArrayOutputStream(128);
        while (true) {
            int b = in.read();
            if (b < 0) {
                return line.toByteArray();
            }
            line.write(b);
            if (b == '\n') {
                return line.toByteArray();
            }
            if (line.size() > MAX_LINE) {
                throw new HttpError("line too long");
            }
        }
    }

    private static boolean isBlankLine(byte[] line) {
        return (line.length == 2 && line[0] == '\r' && line[1] == '\n') || (line.length == 1 && line[0] == '\n');
    }

    private static final Pattern STATUS_LINE = Pattern.compile("HTTP/1\\.([01]) (\\d{3})(?: .*)?\\r?\\n", Pattern.DOTALL);

    private static byte[] readExactly(InputStream in, int n) throws IOException {
        byte[] out = in.readNBytes(n);
        if (out.length < n) {
            throw new EOFException(out.length + " bytes read on a total of " + n + " expected bytes");
        }
        return out;
    }

    private static String latin1(byte[] b) {
        return new String(b, StandardCharsets.ISO_8859_1);
    }

    /** Reads one response; 1xx interim responses are skipped. {@code in} should be buffered. */
    static Response readResponse(InputStream in) throws IOException {
        int version;
        int status;
        Map<String, List<String>> headers;
        while (true) {
            byte[] statusLine = readLine(in);
            if (statusLine.length == 0) {
                throw new HttpError("connection closed before the response");
            }
            Matcher m = STATUS_LINE.matcher(latin1(statusLine));
            if (!m.matches()) {
                String shown = latin1(statusLine);
                throw new HttpError("bad status line " + Protocol.esc(shown.substring(0, Math.min(80, shown.length()))));
            }
            version = Integer.parseInt(m.group(1));
            status = Integer.parseInt(m.group(2));
            headers = new HashMap<>();
            while (true) {
                byte[] raw = readLine(in);
                if (isBlankLine(raw)) {
                    break;
                }
                String line = latin1(raw);
                int colon = line.indexOf(':');
                if (!line.endsWith("\n") || colon < 0) {
                    throw new HttpError("bad header line");
                }
                String name = Protocol.trim(line.substring(0, colon)).toLowerCase(Locale.ROOT);
                headers.computeIfAbsent(name, k -> new ArrayList<>()).add(Protocol.trim(line.substring(colon + 1)));
                if (headers.size() > 100) {
                    throw new HttpError("too many header fields");
                }
            }
            if (status >= 100 && status < 200 && status != 101) {
                continue;
            }
            break;
        }
        if (status == 101) {
            throw new HttpError("unexpected 101 Switching Protocols");
        }
        String connection = String.join(",", headers.getOrDefault("connection", List.of())).toLowerCase(Locale.ROOT);
        boolean keepAlive = version == 1 && !connection.contains("close");
        List<String> te = headers.get("transfer-encoding");
        List<String> cl = headers.get("content-length");
        if (te != null && cl != null) {
            throw new HttpError("both Content-Length and Transfer-Encoding");
        }
        if (status == 204 || status == 304) {
            return new Response(status, new byte[0], keepAlive);
        }
        if (te != null) {
            if (!Protocol.trim(String.join(",", te).toLowerCase(Locale.ROOT)).equals("chunked") || version == 0) {
                throw new HttpError("unsupported Transfer-Encoding");
            }
            ByteArrayOutputStream body = new ByteArrayOutputStream();
            while (true) {
                String sizeLine = latin1(readLine(in));
                int semi = sizeLine.indexOf(';');
                String hex = Protocol.trim(semi < 0 ? sizeLine : sizeLine.substring(0, semi));
                long size;
                try {
                    if (hex.isEmpty() || hex.length() > 15 || hex.startsWith("+") || hex.startsWith("-")) {
                        throw new NumberFormatException(hex);
                    }
                    size = Long.parseLong(hex, 16);
                } catch (NumberFormatException e) {
                    throw new HttpError("bad chunk size");
                }
                if (size == 0) {
                    while (true) { // trailers are dropped
                        byte[] t = readLine(in);
                        if (t.length == 0 || isBlankLine(t)) {
                            break;
                        }
                    }
                    return new Response(status, body.toByteArray(), keepAlive);
                }
                if (body.size() + size > MAX_BODY) {
                    throw new HttpError("body too large");
                }
                body.write(readExactly(in, (int) size));
                if (!Protocol.trim(latin1(readLine(in))).isEmpty()) {
                    throw new HttpError("bad chunk ending");
                }
            }
        }
        if (cl != null) {
            String first = cl.get(0);
            boolean same = cl.stream().allMatch(first::equals);
            String digits = Protocol.stripLeading(first, '0');
            if (!same || first.isEmpty() || !Protocol.allDigits(first) || digits.length() > 9
                    || (!digits.isEmpty() && Integer.parseInt(digits) > MAX_BODY)) {
                throw new HttpError("bad Content-Length");
            }
            return new Response(status, readExactly(in, digits.isEmpty() ? 0 : Integer.parseInt(digits)), keepAlive);
        }
        byte[] body = in.readNBytes(MAX_BODY + 1); // close-delimited
        if (body.length > MAX_BODY) {
            throw new HttpError("body too large");
        }
        return new Response(status, body, false);
    }
}
