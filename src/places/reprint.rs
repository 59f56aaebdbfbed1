//! The streaming re-printer: a legacy Places answer from body bytes straight
//! to the reply's text, with no `serde_json::Value` in between.
//!
//! [`super::google_json`] prints a parsed `Value`; [`super::reply`] decides
//! what a reply is. Building the `Value` (an allocation per key, string and
//! number, IndexMap inserts) was most of a WHATSAT's cost, so for the common
//! case, a legacy answer on HTTP 2xx, [`render_legacy`] validates the JSON
//! and prints Google's style in one pass over the bytes.
//!
//! It is a fast path and nothing more. Its contract, tested against
//! generated documents and their mutations: when it returns `Some`, the
//! reply is exactly what the Value path (`serde_json::from_slice`, cut,
//! `to_google_style`, `squeeze`) gives. Wherever the two could differ it
//! returns `None` and the caller takes the Value path:
//!
//! - the body is not JSON as serde_json reads it (the log quotes serde_json's
//!   own error text, with its line and column);
//! - the top level is not an object;
//! - an object repeats a key (serde_json keeps the last value in the first
//!   key's place) or has more than `MAX_KEYS` (64) keys (so that checking for
//!   repeats stays linear);
//! - the top level has an `error` key (Google's API error shape, which
//!   [`super::reply`] turns into a legacy error reply).
//!
//! Being stricter than serde_json only costs speed; accepting something it
//! rejects would change a reply, so every rule below is serde_json's.

use super::google_json::push_escaped;

/// serde_json's nesting limit: its 128th nested container is an error.
const MAX_DEPTH: usize = 128;

/// Keys per object beyond which the repeat check would go quadratic; Google's objects have about 15.
const MAX_KEYS: usize = 64;

/// Indentation for 16 levels at a time (Google's style: 3 spaces a level).
const SPACES: &str = "                                                ";

/// A legacy answer's reply (results cut to `bound`), or `None` if the Value path must decide.
pub fn render_legacy(body: &[u8], bound: usize) -> Option<Reprinted> {
    reprint(body, bound).ok()
}

/// Why the fast path gave up (tests check that `Invalid` is only said of what serde_json rejects).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Bail {
    /// Not JSON by serde_json's rules.
    Invalid,
    /// Maybe valid, but the Value path shapes the reply (see the module docs).
    Unsupported,
}

/// The printed reply and what the log needs from the answer.
#[derive(Debug)]
pub struct Reprinted {
    /// Google-style text, squeezed, ending with `"\n\n"`.
    pub json: String,
    /// How many results were printed (0 if `results` is missing or not a list).
    pub sent: usize,
    /// The top-level `status`, if it is a string.
    pub status: Option<String>,
    /// The top-level `error_message`, if it is a string.
    pub error_message: Option<String>,
}

fn reprint(body: &[u8], bound: usize) -> Result<Reprinted, Bail> {
    // serde_json rejects invalid UTF-8 anywhere in a body: inside a string
    // as an invalid code point, elsewhere as a syntax error. One check up
    // front is the same rule, and lets the printer copy `&str` runs cut at
    // ASCII bytes.
    let text = std::str::from_utf8(body).map_err(|_| Bail::Invalid)?;
    let mut p = Printer {
        text,
        bytes: body,
        pos: 0,
        // Google's own bodies are already in this style, so the reply is
        // about the body's size; compact bodies grow once.
        out: String::with_capacity(body.len() + 64),
        depth: 0,
        keys: Vec::new(),
        sent: 0,
        status: None,
        error_message: None,
    };
    p.skip_ws();
    if p.peek() != Some(b'{') {
        return Err(Bail::Unsupported);
    }
    p.object(0, Some(bound))?;
    p.skip_ws();
    if p.pos != p.bytes.len() {
        return Err(Bail::Invalid);
    }
    let status = p.decode(p.status)?;
    let error_message = p.decode(p.error_message)?;
    // The squeeze rule, for free: the printer writes a newline only before
    // an indentation of at least one level or before the closing bracket
    // of a container, never two in a row, never first or last, and strings
    // carry theirs as `\n`. So squeezing changes nothing and "\n\n" is all
    // it adds (the equivalence test compares with `squeeze` itself).
    p.out.push_str("\n\n");
    Ok(Reprinted {
        json: p.out,
        sent: p.sent,
        status,
        error_message,
    })
}

/// One pass over the body: `pos` reads, `out` is the reply so far.
struct Printer<'a> {
    text: &'a str,
    /// `text` as bytes, for the scanning.
    bytes: &'a [u8],
    pos: usize,
    out: String,
    /// Containers open now, counting the one being entered.
    depth: usize,
    /// Where in `out` the keys of every open object were printed, for the repeat check.
    keys: Vec<(usize, usize)>,
    /// Top-level facts the outcome needs.
    sent: usize,
    status: Option<(usize, usize)>,
    error_message: Option<(usize, usize)>,
}

impl Printer<'_> {
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    fn next(&mut self) -> Option<u8> {
        let b = self.peek()?;
        self.pos += 1;
        Some(b)
    }

    /// JSON's four white space bytes; serde_json allows nothing else (no BOM, no form feed).
    fn skip_ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.peek() {
            self.pos += 1;
        }
    }

    fn indent(&mut self, level: usize) {
        let mut width = 3 * level;
        while width > 0 {
            let chunk = width.min(SPACES.len());
            self.out.push_str(&SPACES[..chunk]);
            width -= chunk;
        }
    }

    /// Copies `text[from..to]`; the cuts are always at ASCII bytes, but a bad cut is an error, not a panic.
    fn copy(&mut self, from: usize, to: usize) -> Result<(), Bail> {
        let run = self.text.get(from..to).ok_or(Bail::Unsupported)?;
        self.out.push_str(run);
        Ok(())
    }

    fn enter(&mut self) -> Result<(), Bail> {
        self.depth += 1;
        if self.depth >= MAX_DEPTH {
            return Err(Bail::Invalid);
        }
        self.pos += 1;
        Ok(())
    }

    /// A value at `pos` (white space skipped); a container's closing bracket goes at `level`.
    fn value(&mut self, level: usize) -> Result<(), Bail> {
        match self.peek() {
            Some(b'{') => self.object(level, None),
            Some(b'[') => self.array(level, usize::MAX).map(drop),
            Some(b'"') => self.string(),
            Some(b't') => self.literal("true"),
            Some(b'f') => self.literal("false"),
            Some(b'n') => self.literal("null"),
            Some(b'-' | b'0'..=b'9') => self.number(),
            _ => Err(Bail::Invalid),
        }
    }

    fn literal(&mut self, word: &str) -> Result<(), Bail> {
        let rest = self.bytes.get(self.pos..).unwrap_or_default();
        if !rest.starts_with(word.as_bytes()) {
            return Err(Bail::Invalid);
        }
        self.pos += word.len();
        self.out.push_str(word);
        Ok(())
    }

    /// An object; `bound` is `Some` only for the top level, whose `results` are cut.
    fn object(&mut self, level: usize, bound: Option<usize>) -> Result<(), Bail> {
        self.enter()?;
        self.skip_ws();
        if self.peek() == Some(b'}') {
            self.pos += 1;
            self.out.push_str("{}");
            self.depth -= 1;
            return Ok(());
        }
        self.out.push_str("{\n");
        let first_key = self.keys.len();
        loop {
            self.indent(level + 1);
            if self.peek() != Some(b'"') {
                return Err(Bail::Invalid);
            }
            let start = self.out.len();
            self.string()?;
            let key = (start, self.out.len());
            self.new_key(first_key, key)?;
            self.skip_ws();
            if self.next() != Some(b':') {
                return Err(Bail::Invalid);
            }
            self.out.push_str(" : ");
            self.skip_ws();
            match bound {
                Some(bound) => self.top_level_value(key, bound)?,
                None => self.value(level + 1)?,
            }
            self.skip_ws();
            match self.next() {
                Some(b',') => {
                    self.out.push_str(",\n");
                    self.skip_ws();
                }
                Some(b'}') => break,
                _ => return Err(Bail::Invalid),
            }
        }
        self.keys.truncate(first_key);
        self.out.push('\n');
        self.indent(level);
        self.out.push('}');
        self.depth -= 1;
        Ok(())
    }

    /// Refuses a key already in this object. Keys are compared as printed:
    /// the escaping is one-to-one, so equal text means equal keys however
    /// the body spelled them (`"a"`, `"\u0061"`).
    fn new_key(&mut self, first_key: usize, key: (usize, usize)) -> Result<(), Bail> {
        let open = self.keys.get(first_key..).unwrap_or_default();
        if open.len() >= MAX_KEYS {
            return Err(Bail::Unsupported);
        }
        let text = self.out.get(key.0..key.1);
        if open.iter().any(|&(a, b)| self.out.get(a..b) == text) {
            return Err(Bail::Unsupported);
        }
        self.keys.push(key);
        Ok(())
    }

    /// A value of the top-level object, noting what the outcome needs.
    fn top_level_value(&mut self, key: (usize, usize), bound: usize) -> Result<(), Bail> {
        let name = self.out.get(key.0..key.1).unwrap_or_default();
        match (name, self.peek()) {
            // Google's API error: the Value path builds that reply.
            ("\"error\"", _) => Err(Bail::Unsupported),
            ("\"results\"", Some(b'[')) => {
                self.sent = self.array(1, bound)?;
                Ok(())
            }
            ("\"status\"" | "\"error_message\"", Some(b'"')) => {
                let status = name == "\"status\"";
                let start = self.out.len();
                self.string()?;
                let span = Some((start, self.out.len()));
                if status {
                    self.status = span;
                } else {
                    self.error_message = span;
                }
                Ok(())
            }
            _ => self.value(1),
        }
    }

    /// A printed string back to its text (only `status` and `error_message`, once per reply).
    fn decode(&self, span: Option<(usize, usize)>) -> Result<Option<String>, Bail> {
        let Some((a, b)) = span else {
            return Ok(None);
        };
        let printed = self.out.get(a..b).ok_or(Bail::Unsupported)?;
        serde_json::from_str(printed).map_err(|_| Bail::Unsupported)
    }

    /// An array whose items past `limit` are validated but not printed; returns the items printed.
    fn array(&mut self, level: usize, limit: usize) -> Result<usize, Bail> {
        self.enter()?;
        self.skip_ws();
        if self.peek() == Some(b']') {
            self.pos += 1;
            self.out.push_str("[]");
            self.depth -= 1;
            return Ok(0);
        }
        let inline = self.scalars_only(limit);
        let mut count = 0;
        loop {
            if count < limit {
                self.out.push_str(match (count, inline) {
                    (0, true) => "[ ",
                    (0, false) => "[\n",
                    (_, true) => ", ",
                    (_, false) => ",\n",
                });
                if inline {
                    // The look-ahead is exact on valid JSON; this keeps a
                    // mistake in it from becoming a wrong reply.
                    if let Some(b'[' | b'{') = self.peek() {
                        return Err(Bail::Unsupported);
                    }
                    self.value(level)?;
                } else {
                    self.indent(level + 1);
                    self.value(level + 1)?;
                }
            } else {
                // Cut by the bound: serde_json still reads (and may reject)
                // it, so it is checked, printed and thrown away.
                let mark = self.out.len();
                self.value(level + 1)?;
                self.out.truncate(mark);
            }
            count += 1;
            self.skip_ws();
            match self.next() {
                Some(b',') => self.skip_ws(),
                Some(b']') => break,
                _ => return Err(Bail::Invalid),
            }
        }
        let printed = count.min(limit);
        if printed == 0 {
            self.out.push_str("[]");
        } else if inline {
            self.out.push_str(" ]");
        } else {
            self.out.push('\n');
            self.indent(level);
            self.out.push(']');
        }
        self.depth -= 1;
        Ok(printed)
    }

    /// Whether the first `limit` items of the array starting at `pos` are all
    /// scalars, which Google prints on one line. A look-ahead rather than a
    /// buffer: it stops at the first `[` or `{` outside a string, which for
    /// a list of objects (`results`) is its first byte. It trusts the syntax;
    /// the printing pass that follows checks it.
    fn scalars_only(&self, limit: usize) -> bool {
        let rest = self.bytes.get(self.pos..).unwrap_or_default();
        let mut items = 0;
        let mut i = 0;
        while let Some(&b) = rest.get(i) {
            match b {
                b'[' | b'{' => return false,
                b']' => return true,
                b',' => {
                    items += 1;
                    if items >= limit {
                        return true;
                    }
                }
                b'"' => {
                    // To the closing quote, stepping over escaped bytes.
                    i += 1;
                    while let Some(&c) = rest.get(i) {
                        match c {
                            b'"' => break,
                            b'\\' => i += 2,
                            _ => i += 1,
                        }
                    }
                }
                _ => {}
            }
            i += 1;
        }
        true
    }

    /// A string at `pos`, re-escaped as `google_json::write_string` prints its decoded text.
    fn string(&mut self) -> Result<(), Bail> {
        self.pos += 1;
        self.out.push('"');
        loop {
            let rest = self.bytes.get(self.pos..).unwrap_or_default();
            let Some(n) = rest.iter().position(|&b| SPECIAL[b as usize]) else {
                return Err(Bail::Invalid);
            };
            let at = self.pos + n;
            self.copy(self.pos, at)?;
            self.pos = at + 1;
            match rest[n] {
                b'"' => {
                    self.out.push('"');
                    return Ok(());
                }
                b'\\' => self.escape()?,
                b'<' => self.out.push_str("\\u003c"),
                b'>' => self.out.push_str("\\u003e"),
                0x7f => self.out.push_str("\\u007f"),
                // A raw control character: serde_json refuses it.
                _ => return Err(Bail::Invalid),
            }
        }
    }

    /// The escape after a backslash, decoded and printed again.
    fn escape(&mut self) -> Result<(), Bail> {
        let c = match self.next() {
            Some(b'"') => '"',
            Some(b'\\') => '\\',
            Some(b'/') => '/',
            Some(b'b') => '\u{08}',
            Some(b'f') => '\u{0c}',
            Some(b'n') => '\n',
            Some(b'r') => '\r',
            Some(b't') => '\t',
            Some(b'u') => self.unicode_escape()?,
            _ => return Err(Bail::Invalid),
        };
        push_escaped(&mut self.out, c);
        Ok(())
    }

    /// `\uXXXX` (after the `u`), with a surrogate pair as one character.
    /// serde_json refuses lone surrogates when it builds a `String`: a
    /// trailing one, or a leading one not followed by `\u` and a trailing one.
    fn unicode_escape(&mut self) -> Result<char, Bail> {
        let first = self.hex4()?;
        let code = match first {
            0xDC00..=0xDFFF => return Err(Bail::Invalid),
            0xD800..=0xDBFF => {
                if self.next() != Some(b'\\') || self.next() != Some(b'u') {
                    return Err(Bail::Invalid);
                }
                let second = self.hex4()?;
                if !(0xDC00..=0xDFFF).contains(&second) {
                    return Err(Bail::Invalid);
                }
                0x1_0000 + (((first - 0xD800) << 10) | (second - 0xDC00))
            }
            _ => first,
        };
        char::from_u32(code).ok_or(Bail::Invalid)
    }

    fn hex4(&mut self) -> Result<u32, Bail> {
        let mut n = 0;
        for _ in 0..4 {
            let digit = match self.next() {
                Some(b @ b'0'..=b'9') => b - b'0',
                Some(b @ b'a'..=b'f') => b - b'a' + 10,
                Some(b @ b'A'..=b'F') => b - b'A' + 10,
                _ => return Err(Bail::Invalid),
            };
            n = n * 16 + u32::from(digit);
        }
        Ok(n)
    }

    /// A number, copied as written except the exponent, which serde_json's
    /// `arbitrary_precision` scanner keeps as `e` with an explicit sign
    /// (`1E5` becomes `1e+5`). Its grammar: `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`.
    /// A digit after a leading `0` ends the number here and is refused by
    /// the container that expects a `,`, as serde_json refuses it.
    fn number(&mut self) -> Result<(), Bail> {
        let start = self.pos;
        if self.peek() == Some(b'-') {
            self.pos += 1;
        }
        match self.next() {
            Some(b'0') => {}
            Some(b'1'..=b'9') => {
                self.digits();
            }
            _ => return Err(Bail::Invalid),
        }
        if self.peek() == Some(b'.') {
            self.pos += 1;
            if self.digits() == 0 {
                return Err(Bail::Invalid);
            }
        }
        self.copy(start, self.pos)?;
        if let Some(b'e' | b'E') = self.peek() {
            self.pos += 1;
            self.out.push('e');
            match self.peek() {
                Some(sign @ (b'+' | b'-')) => {
                    self.pos += 1;
                    self.out.push(char::from(sign));
                }
                _ => self.out.push('+'),
            }
            let exponent = self.pos;
            if self.digits() == 0 {
                return Err(Bail::Invalid);
            }
            self.copy(exponent, self.pos)?;
        }
        Ok(())
    }

    /// Steps over ASCII digits; returns how many.
    fn digits(&mut self) -> usize {
        let start = self.pos;
        while let Some(b'0'..=b'9') = self.peek() {
            self.pos += 1;
        }
        self.pos - start
    }
}

/// Bytes that end a run copied verbatim inside a string: the closing quote,
/// an escape, what Google escapes (`<`, `>`, DEL) and the control characters
/// JSON forbids raw.
static SPECIAL: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 0x20 {
        table[b] = true;
        b += 1;
    }
    table[b'"' as usize] = true;
    table[b'\\' as usize] = true;
    table[b'<' as usize] = true;
    table[b'>' as usize] = true;
    table[0x7f] = true;
    table
};

#[cfg(test)]
mod tests {
    use super::*;
    use crate::places::google_json::{squeeze, to_google_style};
    use crate::places::http::Api;
    use crate::places::reply::{render_reply, render_via_value, Rendered};
    use crate::places::TestRng;
    use serde_json::Value;

    /// The old pipeline's text: parse, cut `results`, print, squeeze (`None` if serde_json rejects the body).
    fn old_text(body: &[u8], bound: usize) -> Option<String> {
        let mut v: Value = serde_json::from_slice(body).ok()?;
        if let Some(Value::Array(results)) = v.get_mut("results") {
            results.truncate(bound);
        }
        Some(squeeze(&to_google_style(&v)))
    }

    /// Checks one body and bound against the Value path; returns the fast path's verdict.
    fn check(body: &[u8], bound: usize) -> Result<(), Bail> {
        let fast = reprint(body, bound);
        let old = old_text(body, bound);
        match (&fast, &old) {
            (Ok(printed), Some(text)) => {
                assert_eq!(
                    &printed.json,
                    text,
                    "body {:?}",
                    String::from_utf8_lossy(body)
                )
            }
            (Ok(_), None) => panic!(
                "accepted what serde_json rejects: {:?}",
                String::from_utf8_lossy(body)
            ),
            (Err(Bail::Invalid), Some(_)) => panic!(
                "rejected what serde_json accepts: {:?}",
                String::from_utf8_lossy(body)
            ),
            (Err(_), _) => {}
        }
        // And the whole reply, outcome included, for every status class.
        for http in [200, 403] {
            assert_eq!(
                render_reply(Api::Legacy, http, body, bound),
                render_via_value(Api::Legacy, http, body, bound),
                "HTTP {http}, body {:?}",
                String::from_utf8_lossy(body)
            );
        }
        fast.map(drop)
    }

    const WS: &[&str] = &["", "", "", " ", "\n", "\t", "\r\n", "  \n   "];

    const NUMBERS: &[&str] = &[
        "0",
        "-0",
        "7",
        "-12",
        "1.50",
        "-118.4451811",
        "34.068930000000000001",
        "1e5",
        "1E-7",
        "2.50E+3",
        "0e0",
        "-0.0e-0",
        "123456789012345678901234567890",
        "-9223372036854775808",
        "-9223372036854775809",
        "18446744073709551615",
        "18446744073709551616",
        "1e400",
        "4.0",
    ];

    const STRING_PIECES: &[&str] = &[
        "plain",
        " ",
        "Caf\u{e9}",
        "\u{2615}",
        "\u{1F600}",
        "<a href=\\\"x\\\">",
        ">",
        "\\\"",
        "\\\\",
        "\\/",
        "/",
        "\\b\\f\\n\\r\\t",
        "\\u00e9",
        "\\u00E9",
        "\\u003C",
        "\\u003e",
        "\\u0000",
        "\\u001f",
        "\\u007F",
        "\\u2028",
        "\\uD83D\\uDE00",
        "\\ud83d\\ude00",
        "\u{7f}",
        "'",
        "\\u0041",
    ];

    const KEYS: &[&str] = &[
        "name",
        "geometry",
        "lat",
        "lng",
        "types",
        "photos",
        "<k>",
        "caf\\u00e9",
        "caf\u{e9}",
        "a\\\"b",
        "",
        "results",
        "status",
    ];

    fn ws(rng: &mut TestRng, out: &mut String) {
        out.push_str(rng.pick(WS));
    }

    fn string(rng: &mut TestRng, out: &mut String) {
        out.push('"');
        for _ in 0..rng.below(5) {
            out.push_str(rng.pick(STRING_PIECES));
        }
        out.push('"');
    }

    fn scalar(rng: &mut TestRng, out: &mut String) {
        match rng.below(6) {
            0 | 1 => string(rng, out),
            2 | 3 => out.push_str(rng.pick(NUMBERS)),
            4 => out.push_str(rng.pick(&["true", "false"])),
            _ => out.push_str("null"),
        }
    }

    fn value(rng: &mut TestRng, out: &mut String, depth: usize) {
        match if depth > 4 { 9 } else { rng.below(10) } {
            0..=2 => object(rng, out, depth + 1),
            3..=4 => {
                // Sometimes all scalars, sometimes mixed.
                let mixed = rng.below(2) == 0;
                let len = rng.below(5);
                array(rng, out, len, |rng, out| {
                    if mixed {
                        value(rng, out, depth + 1)
                    } else {
                        scalar(rng, out)
                    }
                })
            }
            _ => scalar(rng, out),
        }
    }

    fn array(
        rng: &mut TestRng,
        out: &mut String,
        len: usize,
        mut item: impl FnMut(&mut TestRng, &mut String),
    ) {
        out.push('[');
        ws(rng, out);
        for i in 0..len {
            if i > 0 {
                out.push(',');
                ws(rng, out);
            }
            item(rng, out);
            ws(rng, out);
        }
        out.push(']');
    }

    fn object(rng: &mut TestRng, out: &mut String, depth: usize) {
        out.push('{');
        ws(rng, out);
        let mut used = Vec::new();
        for i in 0..rng.below(5) {
            // Distinct keys: a repeat sends the body down the Value path,
            // which the dedicated test covers.
            let key = format!("{}{}", rng.pick(KEYS), i);
            if i > 0 {
                out.push(',');
                ws(rng, out);
            }
            out.push('"');
            out.push_str(&key);
            out.push('"');
            ws(rng, out);
            out.push(':');
            ws(rng, out);
            value(rng, out, depth);
            ws(rng, out);
            used.push(key);
        }
        out.push('}');
    }

    /// A legacy-looking answer: top-level keys in some order, `results` of 0 to 24 items.
    fn document(rng: &mut TestRng) -> String {
        let mut parts: Vec<String> = Vec::new();
        parts.push("\"html_attributions\":[]".into());
        let mut results = String::from("\"results\":");
        match rng.below(8) {
            // Rarely not a list, or a list of scalars and lists.
            0 => value(rng, &mut results, 3),
            1 => {
                let len = rng.below(25);
                array(rng, &mut results, len, |rng, out| value(rng, out, 2))
            }
            _ => {
                let len = rng.below(25);
                array(rng, &mut results, len, |rng, out| object(rng, out, 1))
            }
        }
        parts.push(results);
        if rng.below(4) > 0 {
            let status = rng.pick(&[
                "\"OK\"",
                "\"ZERO_RESULTS\"",
                "\"REQUEST_DENIED\"",
                "\"<odd>\\u00e9\"",
                "42",
                "null",
            ]);
            parts.push(format!("\"status\":{status}"));
        }
        if rng.below(3) == 0 {
            let mut message = String::from("\"error_message\":");
            scalar(rng, &mut message);
            parts.push(message);
        }
        if rng.below(2) == 0 {
            let mut extra = String::from("\"next_page_token\":");
            value(rng, &mut extra, 2);
            parts.push(extra);
        }
        for i in (1..parts.len()).rev() {
            parts.swap(i, rng.below(i + 1));
        }
        let mut out = String::new();
        ws(rng, &mut out);
        out.push('{');
        for (i, part) in parts.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            ws(rng, &mut out);
            out.push_str(part);
            ws(rng, &mut out);
        }
        out.push('}');
        ws(rng, &mut out);
        out
    }

    const BOUNDS: &[usize] = &[0, 1, 2, 3, 5, 20, usize::MAX];

    #[test]
    fn generated_documents_print_as_the_value_path_does() {
        let mut rng = TestRng(0x5EED_1234_ABCD_0001);
        for _ in 0..1500 {
            let doc = document(&mut rng);
            for &bound in BOUNDS {
                assert_eq!(check(doc.as_bytes(), bound), Ok(()), "{doc}");
            }
        }
    }

    #[test]
    fn mutated_documents_are_judged_as_serde_json_judges_them() {
        const BYTES: &[u8] = b"\"\\{}[],: \t0e-.+u\x00\x1f\x7f\xff\xc3\xa9nxE";
        let mut rng = TestRng(0x5EED_1234_ABCD_0002);
        let (mut accepted, mut rejected) = (0, 0);
        for _ in 0..800 {
            let doc = document(&mut rng).into_bytes();
            let mut bodies = Vec::new();
            for _ in 0..6 {
                bodies.push(doc[..rng.below(doc.len() + 1)].to_vec());
                let at = rng.below(doc.len());
                let byte = BYTES[rng.below(BYTES.len())];
                let mut replaced = doc.clone();
                replaced[at] = byte;
                bodies.push(replaced);
                let mut inserted = doc.clone();
                inserted.insert(at, byte);
                bodies.push(inserted);
                let mut removed = doc.clone();
                removed.remove(at);
                bodies.push(removed);
            }
            for body in bodies {
                let bound = BOUNDS[rng.below(BOUNDS.len())];
                match check(&body, bound) {
                    Ok(()) => accepted += 1,
                    Err(_) => rejected += 1,
                }
            }
        }
        // Both kinds were exercised.
        assert!(accepted > 1000 && rejected > 1000, "{accepted} {rejected}");
    }

    #[test]
    fn strings_and_numbers_edge_cases() {
        let fine = [
            r#"{"a":"\u00e9\/\u003C\u003e\u0000\u001F\u007f\uD83D\uDE00\"\\"}"#,
            "{\"a\":\"<>\u{7f}\",\"<\\n>\":1}",
            r#"{"n":[1E5,1e-7,2.50E+3,-0,0.5e0,1e400,-9223372036854775809]}"#,
            "{\"a\":\"caf\u{e9} \u{2615} \u{7f}\"}",
            " \r\n\t{ \"a\" : [ ] , \"b\" : { } } \n",
        ];
        for body in fine {
            assert_eq!(check(body.as_bytes(), 5), Ok(()), "{body}");
        }
        let bad: &[&[u8]] = &[
            br#"{"a":"\uD83D"}"#,
            br#"{"a":"\uDE00"}"#,
            br#"{"a":"\uD83Dx"}"#,
            br#"{"a":"\uD83D\n"}"#,
            br#"{"a":"\uD83D\u0041"}"#,
            br#"{"a":"\x"}"#,
            br#"{"a":"\u12"}"#,
            b"{\"a\":\"\x01\"}",
            b"{\"a\":\"\xff\"}",
            b"{\"a\":\"\xc3\"}",
            br#"{"a":01}"#,
            br#"{"a":1.}"#,
            br#"{"a":.5}"#,
            br#"{"a":+1}"#,
            br#"{"a":1e}"#,
            br#"{"a":1e+}"#,
            br#"{"a":-}"#,
            br#"{"a":tru}"#,
            br#"{"a":nulls}"#,
            br#"{"a":1,}"#,
            br#"{"a":[1,]}"#,
            br#"{"a":[1 2]}"#,
            br#"{"a" 1}"#,
            br#"{a:1}"#,
            br#"{"a":1}x"#,
            br#"{"a":1}{}"#,
            b"{\"a\":1}\x0c",
            br#"{"results":[{},{"a":}]}"#,
            br#"{"results":[{},{"a":"\q"}]}"#,
        ];
        for body in bad {
            assert_eq!(check(body, 1), Err(Bail::Invalid), "{body:?}");
        }
        // A byte-order mark is no object: the Value path words the rejection.
        assert_eq!(check(b"\xef\xbb\xbf{}", 1), Err(Bail::Unsupported));
    }

    #[test]
    fn nesting_limit_is_serde_jsons() {
        for depth in 120..136 {
            let body = format!("{{\"a\":{}{}}}", "[".repeat(depth), "]".repeat(depth));
            let verdict = check(body.as_bytes(), 5);
            // The object counts as one level: 127 containers are fine, 128 are not.
            assert_eq!(verdict.is_ok(), depth < 127, "{depth}");
        }
    }

    #[test]
    fn results_cut_to_the_bound() {
        // Cut first, then the inline rule: `[1, {}, 2]` cut to one is `[ 1 ]`.
        let r = reprint(br#"{"results":[1,{},2],"status":"OK"}"#, 1).unwrap();
        assert_eq!(
            r.json,
            "{\n   \"results\" : [ 1 ],\n   \"status\" : \"OK\"\n}\n\n"
        );
        assert_eq!(r.sent, 1);
        let r = reprint(br#"{"results":[{"a":1}],"status":"OK"}"#, 0).unwrap();
        assert_eq!(
            r.json,
            "{\n   \"results\" : [],\n   \"status\" : \"OK\"\n}\n\n"
        );
        assert_eq!(r.sent, 0);
        // Only the top level's results are cut.
        let body = br#"{"x":{"results":[1,2,3]},"results":[[1],[2],[3]]}"#;
        assert_eq!(check(body, 2), Ok(()));
        assert!(reprint(body, 2).unwrap().json.contains("[ 1, 2, 3 ]"));
    }

    #[test]
    fn value_path_cases_are_left_to_it() {
        let cases: &[&[u8]] = &[
            br#"{"a":1,"a":2}"#,
            br#"{"a":1,"\u0061":2}"#,
            br#"{"results":[],"status":"OK","results":[{"x":1}]}"#,
            br#"{"error":{"code":403,"message":"denied","status":"PERMISSION_DENIED"}}"#,
            br#"[{"a":1}]"#,
            br#""OK""#,
        ];
        for body in cases {
            assert_eq!(check(body, 5), Err(Bail::Unsupported), "{body:?}");
        }
        // Repeats deeper down, and an object too wide to check cheaply.
        assert_eq!(
            check(br#"{"results":[{"b":[{"k":1,"k":1}]}]}"#, 5),
            Err(Bail::Unsupported)
        );
        let wide: Vec<String> = (0..MAX_KEYS + 1).map(|i| format!("\"k{i}\":{i}")).collect();
        let wide = format!("{{{}}}", wide.join(","));
        assert_eq!(check(wide.as_bytes(), 5), Err(Bail::Unsupported));
        // A repeat cut away with the results costs only the fast path.
        assert_eq!(
            check(br#"{"results":[{},{"k":1,"k":2}],"status":"OK"}"#, 1),
            Err(Bail::Unsupported)
        );
    }

    #[test]
    fn golden_answers_take_the_fast_path() {
        let body = include_str!("../../tests/data/legacy_nearby.json");
        let golden = include_str!("../../tests/data/legacy_nearby.google.txt");
        let r = reprint(body.as_bytes(), 20).unwrap();
        assert_eq!(r.json, golden);
        assert_eq!((r.sent, r.status.as_deref()), (3, Some("OK")));
        // Google sends its bodies in this very style.
        assert_eq!(reprint(golden.as_bytes(), 20).unwrap().json, golden);
        for bound in 0..5 {
            assert_eq!(check(body.as_bytes(), bound), Ok(()));
            assert_eq!(check(golden.as_bytes(), bound), Ok(()));
        }
        let error = br#"{"error_message":"The key is <bad> \u00e9","html_attributions":[],"results":[],"status":"REQUEST_DENIED"}"#;
        assert_eq!(check(error, 5), Ok(()));
        assert_eq!(
            Some(render_reply(crate::places::http::Api::Legacy, 200, error, 5).outcome),
            Some(Err(
                "REQUEST_DENIED: The key is <bad> \u{e9} (HTTP 200)".into()
            ))
        );
    }

    /// A realistic 20-result answer: the test data's three results, repeated, in Google's style.
    fn twenty_results() -> String {
        let body = include_str!("../../tests/data/legacy_nearby.json");
        let mut v: Value = serde_json::from_str(body).unwrap();
        if let Some(Value::Array(results)) = v.get_mut("results") {
            let three = results.clone();
            *results = three.iter().cycle().take(20).cloned().collect();
        }
        to_google_style(&v)
    }

    /// `cargo test --release --lib reprint -- --ignored --nocapture`
    #[test]
    #[ignore = "a timing, meaningful only in release mode"]
    fn time_render_reply() {
        let pretty = twenty_results();
        let compact =
            serde_json::to_string(&serde_json::from_str::<Value>(&pretty).unwrap()).unwrap();
        for (name, body) in [("Google style", &pretty), ("compact", &compact)] {
            let body = body.as_bytes();
            for bound in [20, 5] {
                assert_eq!(
                    render_reply(Api::Legacy, 200, body, bound),
                    render_via_value(Api::Legacy, 200, body, bound)
                );
                let time = |f: &dyn Fn() -> Rendered| {
                    let runs = 2000;
                    let mut best = f64::MAX;
                    for _ in 0..5 {
                        let start = std::time::Instant::now();
                        for _ in 0..runs {
                            std::hint::black_box(f());
                        }
                        best = best.min(start.elapsed().as_secs_f64() * 1e6 / runs as f64);
                    }
                    best
                };
                let old = time(&|| render_via_value(Api::Legacy, 200, body, bound));
                let new = time(&|| render_reply(Api::Legacy, 200, body, bound));
                println!(
                    "{name} body, {} bytes, bound {bound}: Value path {old:.1} µs, streaming {new:.1} µs ({:.1}x)",
                    body.len(),
                    old / new
                );
            }
        }
    }
}
