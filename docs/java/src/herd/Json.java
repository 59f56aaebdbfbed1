package herd;

import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

/**
 * JSON with key order and number text kept, and Google's text style
 * (src/places/google_json.rs; herd.py's parse_json and google_style). The JDK
 * has no JSON library, so this is a small recursive-descent parser over a
 * sealed type: the compiler checks that every printer handles every kind.
 */
final class Json {
    private Json() {}

    /** A JSON value. */
    sealed interface Value permits Null, Bool, Num, Str, Arr, Obj {}

    record Null() implements Value {}

    record Bool(boolean value) implements Value {}

    /** A number kept as the text Google wrote: no float round trip. */
    record Num(String text) implements Value {}

    record Str(String value) implements Value {}

    record Arr(List<Value> items) implements Value {}

    /** Keys in the order they came; a repeated key keeps its first place and last value. */
    record Obj(LinkedHashMap<String, Value> fields) implements Value {
        Value get(String key) {
            return fields.get(key);
        }

        String text(String key) {
            return fields.get(key) instanceof Str s ? s.value() : null;
        }
    }

    static final Null NULL = new Null();

    /** Why a text is not JSON. */
    static final class ParseError extends Exception {
        private static final long serialVersionUID = 1L;

        ParseError(String message) {
            super(message);
        }
    }

    // Deeper nesting is refused rather than risking the thread's stack.
    private static final int MAX_DEPTH = 200;

    static Value parse(String text) throws ParseError {
        Parser p = new Parser(text);
        p.skipSpace();
        Value v = p.value(0);
        p.skipSpace();
        if (p.pos != text.length()) {
            throw p.error("Extra data");
        }
        return v;
    }

    private static final class Parser {
        final String s;
        int pos;

        Parser(String s) {
            this.s = s;
        }

        ParseError error(String what) {
            int line = 1;
            int col = 1;
            for (int i = 0; i < pos && i < s.length(); i++) {
                if (s.charAt(i) == '\n') {
                    line++;
                    col = 1;
                } else {
                    col++;
                }
            }
            return new ParseError(what + ": line " + line + " column " + col + " (char " + pos + ")");
        }

        void skipSpace() {
            while (pos < s.length()) {
                char c = s.charAt(pos);
                if (c != ' ' && c != '\t' && c != '\n' && c != '\r') {
                    return;
                }
                pos++;
            }
        }

        Value value(int depth) throws ParseError {
            if (depth > MAX_DEPTH) {
                throw error("nested too deeply");
            }
            if (pos >= s.length()) {
                throw error("Expecting value");
            }
            char c = s.charAt(pos);
            switch (c) {
                case '{':
                    return object(depth);
                case '[':
                    return array(depth);
                case '"':
                    return new Str(string());
                case 't':
                    return literal("true", new Bool(true));
                case 'f':
                    return literal("false", new Bool(false));
                case 'n':
                    return literal("null", NULL);
                default:
                    if (c == '-' || (c >= '0' && c <= '9')) {
                        return number();
                    }
                    throw error("Expecting value");
            }
        }

        Value literal(String word, Value v) throws ParseError {
            if (!s.startsWith(word, pos)) {
                throw error("Expecting value");
            }
            pos += word.length();
            return v;
        }

        Value object(int depth) throws ParseError {
            pos++; // {
            LinkedHashMap<String, Value> fields = new LinkedHashMap<>();
            skipSpace();
            if (pos < s.length() && s.charAt(pos) == '}') {
                pos++;
                return new Obj(fields);
            }
            while (true) {
                skipSpace();
                if (pos >= s.length() || s.charAt(pos) != '"') {
                    throw error("Expecting property name enclosed in double quotes");
                }
                String key = string();
                skipSpace();
                if (pos >= s.length() || s.charAt(pos) != ':') {
                    throw error("Expecting ':' delimiter");
                }
                pos++;
                skipSpace();
                fields.put(key, value(depth + 1));
                skipSpace();
                if (pos < s.length() && s.charAt(pos) == ',') {
                    pos++;
                    continue;
                }
                if (pos < s.length() && s.charAt(pos) == '}') {
                    pos++;
                    return new Obj(fields);
                }
                throw error("Expecting ',' delimiter");
            }
        }

        Value array(int depth) throws ParseError {
            pos++; // [
            List<Value> items = new ArrayList<>();
            skipSpace();
            if (pos < s.length() && s.charAt(pos) == ']') {
                pos++;
                return new Arr(items);
            }
            while (true) {
                skipSpace();
                items.add(value(depth + 1));
                skipSpace();
                if (pos < s.length() && s.charAt(pos) == ',') {
                    pos++;
                    continue;
                }
                if (pos < s.length() && s.charAt(pos) == ']') {
                    pos++;
                    return new Arr(items);
                }
                throw error("Expecting ',' delimiter");
            }
        }

        String string() throws ParseError {
            int start = pos;
            pos++; // "
            StringBuilder out = new StringBuilder();
            while (true) {
                if (pos >= s.length()) {
                    pos = start;
                    throw error("Unterminated string starting at");
                }
                char c = s.charAt(pos++);
                if (c == '"') {
                    return out.toString();
                }
                if (c < 0x20) {
                    pos--;
                    throw error("Invalid control character at");
                }
                if (c != '\\') {
                    out.append(c);
                    continue;
                }
                if (pos >= s.length()) {
                    pos = start;
                    throw error("Unterminated string starting at");
                }
                char e = s.charAt(pos++);
                switch (e) {
                    case '"' -> out.append('"');
                    case '\\' -> out.append('\\');
                    case '/' -> out.append('/');
                    case 'b' -> out.append('\b');
                    case 'f' -> out.append('\f');
                    case 'n' -> out.append('\n');
                    case 'r' -> out.append('\r');
                    case 't' -> out.append('\t');
                    case 'u' -> out.append(hex4());
                    default -> {
                        pos -= 2;
                        throw error("Invalid \\escape");
                    }
                }
            }
        }

        char hex4() throws ParseError {
            if (pos + 4 > s.length()) {
                throw error("Invalid \\uXXXX escape");
            }
            int v = 0;
            for (int i = 0; i < 4; i++) {
                int d = Character.digit(s.charAt(pos + i), 16);
                if (d < 0) {
                    throw error("Invalid \\uXXXX escape");
                }
                v = v * 16 + d;
            }
            pos += 4;
            return (char) v; // a surrogate pair comes as two escapes, two chars
        }

        Value number() throws ParseError {
            int start = pos;
            if (s.charAt(pos) == '-') {
                pos++;
            }
            if (pos >= s.length() || !isDigit(s.charAt(pos))) {
                pos = start;
                throw error("Expecting value");
            }
            if (s.charAt(pos) == '0') {
                pos++;
            } else {
                while (pos < s.length() && isDigit(s.charAt(pos))) {
                    pos++;
                }
            }
            if (pos + 1 < s.length() && s.charAt(pos) == '.' && isDigit(s.charAt(pos + 1))) {
                pos++;
                while (pos < s.length() && isDigit(s.charAt(pos))) {
                    pos++;
                }
            }
            if (pos < s.length() && (s.charAt(pos) == 'e' || s.charAt(pos) == 'E')) {
                int mark = pos;
                pos++;
                if (pos < s.length() && (s.charAt(pos) == '+' || s.charAt(pos) == '-')) {
                    pos++;
                }
                if (pos < s.length() && isDigit(s.charAt(pos))) {
                    while (pos < s.length() && isDigit(s.charAt(pos))) {
                        pos++;
                    }
                } else {
                    pos = mark; // "1e" is the number 1 and then junk, as Python sees it
                }
            }
            return keepNumber(s.substring(start, pos));
        }

        static boolean isDigit(char c) {
            return c >= '0' && c <= '9';
        }
    }

    private static final Pattern EXPONENT = Pattern.compile("([^eE]*)[eE]([+-]?)(\\d+)");

    /** serde_json writes an exponent as e with a sign (1E5 -> 1e+5); so do we, to print the same bytes. */
    static Num keepNumber(String text) {
        Matcher m = EXPONENT.matcher(text);
        if (m.matches()) {
            String sign = m.group(2).isEmpty() ? "+" : m.group(2);
            return new Num(m.group(1) + "e" + sign + m.group(3));
        }
        return new Num(text);
    }

    // ----- Google's text style ---------------------------------------------------

    static void googleString(StringBuilder out, String s) {
        out.append('"');
        for (int i = 0; i < s.length(); i++) {
            char c = s.charAt(i);
            switch (c) {
                case '"' -> out.append("\\\"");
                case '\\' -> out.append("\\\\");
                case '\n' -> out.append("\\n");
                case '\r' -> out.append("\\r");
                case '\t' -> out.append("\\t");
                case '\b' -> out.append("\\b");
                case '\f' -> out.append("\\f");
                case '<' -> out.append("\\u003c");
                case '>' -> out.append("\\u003e");
                default -> {
                    if (c < 0x20 || c == 0x7f) {
                        out.append(String.format("\\u%04x", (int) c));
                    } else {
                        out.append(c);
                    }
                }
            }
        }
        out.append('"');
    }

    private static boolean isScalar(Value v) {
        return !(v instanceof Arr) && !(v instanceof Obj);
    }

    /** v as Google prints it: 3-space indent, "key" : value, arrays of scalars inline. */
    static void googleStyle(StringBuilder out, Value v, int level) {
        if (v instanceof Null) {
            out.append("null");
        } else if (v instanceof Bool b) {
            out.append(b.value() ? "true" : "false");
        } else if (v instanceof Num n) {
            out.append(n.text());
        } else if (v instanceof Str s) {
            googleString(out, s.value());
        } else if (v instanceof Obj o) {
            if (o.fields().isEmpty()) {
                out.append("{}");
                return;
            }
            out.append("{\n");
            boolean first = true;
            for (Map.Entry<String, Value> e : o.fields().entrySet()) {
                if (!first) {
                    out.append(",\n");
                }
                first = false;
                indent(out, level + 1);
                googleString(out, e.getKey());
                out.append(" : ");
                googleStyle(out, e.getValue(), level + 1);
            }
            out.append('\n');
            indent(out, level);
            out.append('}');
        } else if (v instanceof Arr a) {
            List<Value> items = a.items();
            if (items.isEmpty()) {
                out.append("[]");
                return;
            }
            if (items.stream().allMatch(Json::isScalar)) {
                out.append("[ ");
                for (int i = 0; i < items.size(); i++) {
                    if (i > 0) {
                        out.append(", ");
                    }
                    googleStyle(out, items.get(i), level);
                }
                out.append(" ]");
                return;
            }
            out.append("[\n");
            for (int i = 0; i < items.size(); i++) {
                if (i > 0) {
                    out.append(",\n");
                }
                indent(out, level + 1);
                googleStyle(out, items.get(i), level + 1);
            }
            out.append('\n');
            indent(out, level);
            out.append(']');
        }
    }

    private static void indent(StringBuilder out, int level) {
        for (int i = 0; i < level; i++) {
            out.append("   ");
        }
    }

    /** Runs of newlines to one, trailing ones dropped, then the reply's "\n\n". */
    static String squeeze(String text) {
        StringBuilder out = new StringBuilder(text.length() + 2);
        for (int i = 0; i < text.length(); i++) {
            char c = text.charAt(i);
            if (c == '\n' && out.length() > 0 && out.charAt(out.length() - 1) == '\n') {
                continue;
            }
            out.append(c);
        }
        int end = out.length();
        while (end > 0 && out.charAt(end - 1) == '\n') {
            end--;
        }
        out.setLength(end);
        return out.append("\n\n").toString();
    }

    static String print(Value v) {
        StringBuilder out = new StringBuilder(4096);
        googleStyle(out, v, 0);
        return squeeze(out.toString());
    }
}
