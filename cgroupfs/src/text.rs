//! Names from the kernel and from processes are bytes, not text: a process
//! can rename itself (`/proc/self/comm`, `prctl(PR_SET_NAME)`) to any 15
//! bytes but NUL, and a cgroup directory can be named with any bytes but
//! `/`. This module gives the one printable form every output uses.
//!
//! The printable form: valid UTF-8 as is; every byte that is not part of
//! valid UTF-8, and every character that could steer a terminal (C0 and C1
//! controls, DEL, the Unicode bidirectional overrides and isolates, line and
//! paragraph separators), as `\xNN` per byte, the way the kernel log and
//! `dmesg` show them. The form never holds a control character, so it is
//! safe to print to a terminal and to put in a log line.
//!
//! It is reversible with its companion raw form: [`escape`] says whether it
//! changed anything, and where it did the event also carries the exact bytes
//! in hex (`comm_hex`), so `x\x01\xffy` from bytes `78 01 ff 79` is never
//! confused with a name that holds a literal backslash.

use std::{borrow::Cow, fmt::Write};

/// True for characters a terminal may act on instead of showing.
fn steers_a_terminal(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{061c}'
                | '\u{200e}'
                | '\u{200f}'
                | '\u{2028}'
                | '\u{2029}'
                | '\u{202a}'..='\u{202e}'
                | '\u{2066}'..='\u{2069}'
        )
}

fn push_hex(out: &mut String, bytes: &[u8]) {
    for b in bytes {
        // Writing to a String cannot fail.
        let _ = write!(out, "\\x{b:02x}");
    }
}

/// The printable form of `bytes` (see the module's doc), and whether it
/// differs from the bytes (then only the raw form gives them back).
pub fn escape(bytes: &[u8]) -> (String, bool) {
    let mut out = String::with_capacity(bytes.len());
    let mut changed = false;
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            if steers_a_terminal(c) {
                let mut buf = [0; 4];
                push_hex(&mut out, c.encode_utf8(&mut buf).as_bytes());
                changed = true;
            } else {
                out.push(c);
            }
        }
        if !chunk.invalid().is_empty() {
            push_hex(&mut out, chunk.invalid());
            changed = true;
        }
    }
    (out, changed)
}

/// A task's `comm` (NUL-terminated, at most `TASK_COMM_LEN` bytes) as its
/// printable form and, when that is not the exact bytes, the bytes as
/// lowercase hex (two digits per byte, no separator).
pub fn comm(raw: &[u8]) -> (String, Option<String>) {
    let end = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
    let bytes = &raw[..end];
    let (text, changed) = escape(bytes);
    (text, changed.then(|| hex(bytes)))
}

/// `bytes` as lowercase hex, two digits per byte.
pub fn hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(out, "{b:02x}");
    }
    out
}

/// Any text made safe for a terminal: characters that could steer it are
/// written `\xNN` per UTF-8 byte, everything else is kept. Borrowed when
/// nothing needed escaping (the common case).
pub fn terminal_safe(text: &str) -> Cow<'_, str> {
    if text.chars().any(steers_a_terminal) {
        Cow::Owned(escape(text.as_bytes()).0)
    } else {
        Cow::Borrowed(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads the printable form back: `\xNN` gives byte NN.
    fn unescape(text: &str) -> Vec<u8> {
        let mut out = Vec::new();
        let bytes = text.as_bytes();
        let mut i = 0;
        while i < bytes.len() {
            if bytes[i] == b'\\' && bytes.get(i + 1) == Some(&b'x') && i + 4 <= bytes.len() {
                if let Ok(b) = u8::from_str_radix(&text[i + 2..i + 4], 16) {
                    out.push(b);
                    i += 4;
                    continue;
                }
            }
            out.push(bytes[i]);
            i += 1;
        }
        out
    }

    fn unhex(hex: &str) -> Vec<u8> {
        (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
            .collect()
    }

    fn assert_printable(text: &str) {
        assert!(
            !text.chars().any(steers_a_terminal),
            "{text:?} holds a control character"
        );
    }

    #[test]
    fn every_byte_value_alone_and_in_a_name_is_printable_and_reversible() {
        for b in 0..=255u8 {
            for bytes in [vec![b], vec![b'x', b, b'y'], vec![b, b, b'z']] {
                let (text, changed) = escape(&bytes);
                assert_printable(&text);
                assert_eq!(unescape(&text), bytes, "byte {b:#04x}: {text:?}");
                let plain = b.is_ascii() && !b.is_ascii_control();
                assert_eq!(changed, !plain, "byte {b:#04x}: {text:?}");
                if !changed {
                    assert_eq!(text.as_bytes(), &bytes[..]);
                }
                let mut raw = [0u8; 16];
                raw[..bytes.len()].copy_from_slice(&bytes);
                let (comm_text, comm_hex) = comm(&raw);
                let kept = bytes.split(|&c| c == 0).next().unwrap();
                // The exact bytes: the hex where there is one, else the text.
                let back = comm_hex.map_or_else(|| comm_text.as_bytes().to_vec(), |h| unhex(&h));
                assert_eq!(back, kept, "byte {b:#04x}");
                assert_printable(&comm_text);
            }
        }
    }

    #[test]
    fn every_pair_of_bytes_is_printable_and_reversible() {
        for a in 0..=255u8 {
            for b in 0..=255u8 {
                let (text, _) = escape(&[a, b]);
                assert_printable(&text);
                assert_eq!(unescape(&text), [a, b], "{text:?}");
            }
        }
    }

    #[test]
    fn the_issues_names_read_like_the_kernel_log() {
        assert_eq!(
            comm(b"x\x01\xffy\0\0\0\0\0\0\0\0\0\0\0\0"),
            ("x\\x01\\xffy".to_string(), Some("7801ff79".to_string()))
        );
        // 0xfe and 0xff stay apart (a lossy decode made both U+FFFD).
        assert_ne!(escape(b"\xfe").0, escape(b"\xff").0);
        assert_eq!(
            escape(b"\x1b[2J\x1b[H fake").0,
            "\\x1b[2J\\x1b[H fake",
            "no escape sequence survives"
        );
        assert_eq!(comm(b"celery-worker\0\0\0"), ("celery-worker".into(), None));
        assert_eq!(escape("naïve €".as_bytes()), ("naïve €".into(), false));
        // C1 CSI and a right-to-left override are written as their bytes.
        assert_eq!(escape("a\u{9b}b".as_bytes()).0, "a\\xc2\\x9bb");
        assert_eq!(escape("a\u{202e}b".as_bytes()).0, "a\\xe2\\x80\\xaeb");
    }

    #[test]
    fn terminal_safe_keeps_plain_text_and_systemd_escapes() {
        let path = "/system.slice/system-serial\\x2dgetty.slice";
        assert!(matches!(terminal_safe(path), Cow::Borrowed(p) if p == path));
        assert_eq!(terminal_safe("a\u{1b}]0;title\u{7}"), "a\\x1b]0;title\\x07");
    }
}
