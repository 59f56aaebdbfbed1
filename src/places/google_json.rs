//! Google's JSON text style: the printer every WHATSAT reply goes through.
//!
//! This module owns only the text: [`to_google_style`] prints a
//! `serde_json::Value` the way the legacy Places API does (docs/spec.md §4),
//! [`squeeze`] applies the reply's newline rule, and [`error_json`] builds the
//! error object the herd sends when Places fails. Deciding *what* to print
//! (cutting results, converting Places API (New) answers, mapping HTTP
//! failures) lives in [`super::reply`]; the HTTP exchange in [`super::http`].
//!
//! `serde_json` is built with `preserve_order` (keys stay in Google's order)
//! and `arbitrary_precision` (a number keeps the digits Google wrote, so
//! `-118.4451811` and `1.50` never go through an `f64`). One caveat, pinned by
//! a test: its parser writes an exponent as `e` with an explicit sign, so
//! `1E5` comes back as `1e+5`; nothing else about a number's text changes.

use serde_json::{Map, Value};

/// One level of indentation, as Google prints it.
const INDENT: &str = "   ";

/// Prints `v` in Google's style, without squeezing and without a trailing newline.
pub fn to_google_style(v: &Value) -> String {
    let mut out = String::new();
    write_value(&mut out, v, 0);
    out
}

/// Squeezes runs of two or more newlines to one, drops trailing newlines, then appends `"\n\n"`.
pub fn squeeze(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    for c in text.chars() {
        // A newline directly after a newline would make an empty line, which
        // ends the reply for a client reading up to the blank line.
        if c == '\n' && out.ends_with('\n') {
            continue;
        }
        out.push(c);
    }
    while out.ends_with('\n') {
        out.pop();
    }
    out.push_str("\n\n");
    out
}

/// The herd's own error answer, in Google's legacy shape and style, squeezed (ends with `"\n\n"`).
pub fn error_json(message: &str, status: &str) -> String {
    let mut obj = Map::new();
    obj.insert("error_message".into(), Value::String(message.into()));
    obj.insert("html_attributions".into(), Value::Array(Vec::new()));
    obj.insert("results".into(), Value::Array(Vec::new()));
    obj.insert("status".into(), Value::String(status.into()));
    squeeze(&to_google_style(&Value::Object(obj)))
}

fn write_indent(out: &mut String, level: usize) {
    for _ in 0..level {
        out.push_str(INDENT);
    }
}

/// Writes `v` whose first character goes at the current position and whose
/// closing bracket, if on its own line, is indented to `level`.
fn write_value(out: &mut String, v: &Value, level: usize) {
    match v {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        // With `arbitrary_precision` this is the text as parsed: `1.50`, `1e5`.
        Value::Number(n) => out.push_str(n.as_str()),
        Value::String(s) => write_string(out, s),
        Value::Array(items) => write_array(out, items, level),
        Value::Object(map) => write_object(out, map, level),
    }
}

fn write_object(out: &mut String, map: &Map<String, Value>, level: usize) {
    if map.is_empty() {
        out.push_str("{}");
        return;
    }
    out.push_str("{\n");
    for (i, (key, value)) in map.iter().enumerate() {
        if i > 0 {
            out.push_str(",\n");
        }
        write_indent(out, level + 1);
        write_string(out, key);
        out.push_str(" : ");
        write_value(out, value, level + 1);
    }
    out.push('\n');
    write_indent(out, level);
    out.push('}');
}

fn write_array(out: &mut String, items: &[Value], level: usize) {
    if items.is_empty() {
        out.push_str("[]");
        return;
    }
    let nested = items
        .iter()
        .any(|item| matches!(item, Value::Array(_) | Value::Object(_)));
    if !nested {
        // Scalars stay on one line, however long: docs/spec.md's rule.
        out.push_str("[ ");
        for (i, item) in items.iter().enumerate() {
            if i > 0 {
                out.push_str(", ");
            }
            write_value(out, item, level);
        }
        out.push_str(" ]");
        return;
    }
    out.push_str("[\n");
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push_str(",\n");
        }
        write_indent(out, level + 1);
        write_value(out, item, level + 1);
    }
    out.push('\n');
    write_indent(out, level);
    out.push(']');
}

/// JSON string escaping as Google does it: `<` and `>` as `\u003c` / `\u003e`
/// (so a reply can be pasted into HTML), other non-ASCII left as UTF-8.
fn write_string(out: &mut String, s: &str) {
    out.push('"');
    write_string_body(out, s);
    out.push('"');
}

/// The inside of a JSON string in Google's escaping (see `write_string`).
/// Text that needs no escape, nearly every name, is copied in one piece.
/// The one escaping rule of the project: places-offline and the streaming
/// re-printer use it too.
pub fn write_string_body(out: &mut String, s: &str) {
    let needs_escape = |b: u8| matches!(b, b'"' | b'\\' | b'<' | b'>' | 0x7f) || b < 0x20;
    if !s.bytes().any(needs_escape) {
        out.push_str(s);
        return;
    }
    for c in s.chars() {
        push_escaped(out, c);
    }
}

/// One character in Google's escaping.
pub fn push_escaped(out: &mut String, c: char) {
    match c {
        '"' => out.push_str("\\\""),
        '\\' => out.push_str("\\\\"),
        '\n' => out.push_str("\\n"),
        '\r' => out.push_str("\\r"),
        '\t' => out.push_str("\\t"),
        '\u{08}' => out.push_str("\\b"),
        '\u{0c}' => out.push_str("\\f"),
        '<' => out.push_str("\\u003c"),
        '>' => out.push_str("\\u003e"),
        c if (c as u32) < 0x20 || c == '\u{7f}' => {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            let n = c as usize;
            out.push_str("\\u00");
            out.push(char::from(HEX[n >> 4]));
            out.push(char::from(HEX[n & 0xf]));
        }
        c => out.push(c),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Value {
        serde_json::from_str(text).expect("test JSON parses")
    }

    fn reprint(text: &str) -> String {
        to_google_style(&parse(text))
    }

    #[test]
    fn prints_the_spec_example() {
        let input = r#"{"html_attributions":[],"results":[{"geometry":{"location":
            {"lat":34.0689254,"lng":-118.4451811}},"name":"UCLA",
            "types":["university","point_of_interest","establishment"]}],"status":"OK"}"#;
        let expected = r#"{
   "html_attributions" : [],
   "results" : [
      {
         "geometry" : {
            "location" : {
               "lat" : 34.0689254,
               "lng" : -118.4451811
            }
         },
         "name" : "UCLA",
         "types" : [ "university", "point_of_interest", "establishment" ]
      }
   ],
   "status" : "OK"
}"#;
        assert_eq!(reprint(input), expected);
    }

    #[test]
    fn golden_legacy_answer() {
        let input = include_str!("../../tests/data/legacy_nearby.json");
        let expected = include_str!("../../tests/data/legacy_nearby.google.txt");
        let printed = squeeze(&reprint(input));
        assert_eq!(printed, expected);
        // The styled text printed again is unchanged.
        assert_eq!(squeeze(&reprint(expected)), expected);
    }

    #[test]
    fn numbers_keep_their_text() {
        let input = r#"[1.50, -118.4451811, 0, -0, 12345678901234567890123, 4.0, 1.5e-7]"#;
        assert_eq!(
            reprint(input),
            "[ 1.50, -118.4451811, 0, -0, 12345678901234567890123, 4.0, 1.5e-7 ]"
        );
        let obj = reprint(r#"{"lat":34.068930000000000001}"#);
        assert_eq!(obj, "{\n   \"lat\" : 34.068930000000000001\n}");
    }

    #[test]
    fn exponents_come_back_normalised() {
        // serde_json's `arbitrary_precision` scanner keeps every digit but
        // writes the exponent as `e` with an explicit sign, so these are the
        // only number texts that change. Google prints coordinates, ratings
        // and counts without exponents. If serde_json ever keeps the text
        // verbatim, this test says so.
        assert_eq!(reprint("[1e5, 1E-7, 2.50E+3]"), "[ 1e+5, 1e-7, 2.50e+3 ]");
    }

    #[test]
    fn escapes_angle_brackets_and_controls_keeps_utf8() {
        let input = r#"{"a":"<a href=\"x\">Café ☕</a>","b":"tab\there\u0001\n\\/"}"#;
        let expected =
            "{\n   \"a\" : \"\\u003ca href=\\\"x\\\"\\u003eCafé ☕\\u003c/a\\u003e\",\n   \
                        \"b\" : \"tab\\there\\u0001\\n\\\\/\"\n}";
        assert_eq!(reprint(input), expected);
        // Keys are escaped the same way.
        assert_eq!(reprint(r#"{"<k>":1}"#), "{\n   \"\\u003ck\\u003e\" : 1\n}");
    }

    #[test]
    fn empty_containers() {
        assert_eq!(reprint("{}"), "{}");
        assert_eq!(reprint("[]"), "[]");
        assert_eq!(
            reprint(r#"{"a":[],"b":{},"c":[{}]}"#),
            "{\n   \"a\" : [],\n   \"b\" : {},\n   \"c\" : [\n      {}\n   ]\n}"
        );
    }

    #[test]
    fn nested_arrays() {
        let input = r#"{"m":[[1,2],[],["x",[true,null]]],"s":[1,"two",false,null]}"#;
        let expected = r#"{
   "m" : [
      [ 1, 2 ],
      [],
      [
         "x",
         [ true, null ]
      ]
   ],
   "s" : [ 1, "two", false, null ]
}"#;
        assert_eq!(reprint(input), expected);
    }

    #[test]
    fn keys_keep_their_order() {
        assert_eq!(
            reprint(r#"{"z":1,"a":2,"m":3}"#),
            "{\n   \"z\" : 1,\n   \"a\" : 2,\n   \"m\" : 3\n}"
        );
    }

    #[test]
    fn scalars_at_top_level() {
        assert_eq!(reprint("\"<\""), "\"\\u003c\"");
        assert_eq!(reprint("1.0"), "1.0");
        assert_eq!(reprint("null"), "null");
    }

    #[test]
    fn printing_is_idempotent() {
        let inputs = [
            include_str!("../../tests/data/legacy_nearby.json"),
            r#"{"m":[[1,2],[],["x",[true,null]]],"s":[1,"<two>",false,null],"e":{}}"#,
            r#"[{"a":[{"b":[[]]}]}, 1.50, "\u2603"]"#,
        ];
        for input in inputs {
            let once = reprint(input);
            let twice = reprint(&once);
            assert_eq!(once, twice);
            assert_eq!(parse(&once), parse(input));
        }
    }

    #[test]
    fn squeeze_rules() {
        assert_eq!(squeeze("a\n\n\nb\n"), "a\nb\n\n");
        assert_eq!(squeeze("a\nb"), "a\nb\n\n");
        assert_eq!(squeeze(""), "\n\n");
        assert_eq!(squeeze("\n\n{}\n\n\n\n"), "\n{}\n\n");
        // Only newlines are squeezed; other white space is the JSON's own.
        assert_eq!(squeeze("a \n \nb"), "a \n \nb\n\n");
    }

    #[test]
    fn error_json_shape() {
        let text = error_json("Places answered HTTP 500 <oops>", "UNKNOWN_ERROR");
        assert_eq!(
            text,
            "{\n   \"error_message\" : \"Places answered HTTP 500 \\u003coops\\u003e\",\n   \
             \"html_attributions\" : [],\n   \"results\" : [],\n   \"status\" : \"UNKNOWN_ERROR\"\n}\n\n"
        );
    }
}
