package herd;

import java.nio.charset.StandardCharsets;
import java.util.Arrays;

/** Splits a byte stream into lines (LineReader in src/transport.rs; herd.py's LineBuffer). */
final class LineBuffer {
    /** Takes one complete line (without its "\n"); false stops the feed (the connection closed). */
    interface Handler {
        boolean line(String line);
    }

    private static final byte[] NONE = new byte[0];

    private final int limit;
    private byte[] partial = NONE; // the start of a line whose "\n" has not come yet
    private int len;

    /** Lines longer than {@code limit} bytes (without the "\n") are refused. */
    LineBuffer(int limit) {
        this.limit = limit;
    }

    /**
     * Feeds {@code n} bytes; every complete line goes to {@code handler}.
     * Returns true if a line is longer than the limit: the
     * lines before it were handled, and the connection is to be dropped.
     */
    boolean feed(byte[] data, int n, Handler handler) {
        int start = 0;
        for (int i = 0; i < n; i++) {
            if (data[i] != '\n') {
                continue;
            }
            if (len + (i - start) > limit) {
                return true;
            }
            String line;
            if (len == 0) {
                line = new String(data, start, i - start, StandardCharsets.ISO_8859_1);
            } else {
                append(data, start, i - start);
                line = new String(partial, 0, len, StandardCharsets.ISO_8859_1);
                clear();
            }
            start = i + 1;
            if (!handler.line(line)) {
                return false;
            }
        }
        append(data, start, n - start);
        return len > limit;
    }

    /** At end of file the last line, without its "\n", is still a line; null if there is none. */
    String finish() {
        if (len == 0) {
            return null;
        }
        String rest = new String(partial, 0, len, StandardCharsets.ISO_8859_1);
        clear();
        return rest;
    }

    private void append(byte[] data, int off, int n) {
        if (n == 0) {
            return;
        }
        if (len + n > partial.length) {
            partial = Arrays.copyOf(partial, Math.max(len + n, Math.max(256, partial.length * 2)));
        }
        System.arraycopy(data, off, partial, len, n);
        len += n;
    }

    private void clear() {
        len = 0;
        if (partial.length > 4096) {
            partial = NONE; // an idle connection keeps no large buffer
        }
    }
}
