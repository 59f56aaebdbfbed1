//! Lines in, lines out: the client protocol ([`client`]) and the peer messages
//! ([`peer`]), parsed and formatted as pure functions. No sockets here: the event
//! loop feeds these functions bytes and writes what they return.

pub mod client;
pub mod peer;

/// White space as docs/spec.md defines it: space, `\t`, `\r`, `\n`, form feed and
/// vertical tab. (`u8::is_ascii_whitespace` leaves out vertical tab.)
pub fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n' | 0x0b | 0x0c)
}

/// The fields of a line: runs of non-white-space bytes.
pub fn fields(line: &[u8]) -> impl Iterator<Item = &[u8]> {
    line.split(|&b| is_space(b)).filter(|f| !f.is_empty())
}

/// Splits a line into exactly `N` fields, or `None` if it has another count.
pub fn split_exact<const N: usize>(line: &[u8]) -> Option<[&[u8]; N]> {
    let mut out: [&[u8]; N] = [&[]; N];
    let mut it = fields(line);
    for slot in out.iter_mut() {
        *slot = it.next()?;
    }
    it.next().is_none().then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn white_space_includes_vertical_tab_and_form_feed() {
        let f: Vec<&[u8]> = fields(b" a\x0bb\x0cc\t\r d\n").collect();
        assert_eq!(f, vec![&b"a"[..], b"b", b"c", b"d"]);
    }

    #[test]
    fn split_exact_counts_fields() {
        assert_eq!(split_exact::<2>(b" x  y "), Some([&b"x"[..], b"y"]));
        assert_eq!(split_exact::<2>(b"x"), None);
        assert_eq!(split_exact::<2>(b"x y z"), None);
    }
}
