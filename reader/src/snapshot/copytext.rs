//! COPY's text format: rows end with `\n`, fields are separated by tabs,
//! `\N` alone is NULL, and backslash escapes the rest (`\\`, `\t`, `\n`,
//! `\r`, `\b`, `\f`, `\v`, octal `\ooo` and hex `\xhh`). Unescaped, a field
//! is the value's text output form, the same one pgoutput sends.

use bytes::{Buf, BytesMut};

/// Splits a stream of COPY data chunks into complete rows.
#[derive(Default)]
pub struct Lines {
    buf: BytesMut,
}

impl Lines {
    pub fn push(&mut self, chunk: &[u8]) {
        self.buf.extend_from_slice(chunk);
    }

    /// The next complete row, without its newline.
    pub fn next_line(&mut self) -> Option<BytesMut> {
        let at = memchr(b'\n', &self.buf)?;
        let mut line = self.buf.split_to(at + 1);
        line.truncate(at);
        Some(line)
    }

    /// Bytes of an unterminated row left at the end (an error once the COPY ended).
    pub fn remainder(&self) -> usize {
        self.buf.remaining()
    }
}

fn memchr(needle: u8, haystack: &[u8]) -> Option<usize> {
    haystack.iter().position(|&b| b == needle)
}

/// The fields of one row, unescaped; `None` is NULL.
pub type Fields = Vec<Option<Vec<u8>>>;

pub fn fields(line: &[u8]) -> Result<Fields, String> {
    line.split(|&b| b == b'\t').map(field).collect()
}

fn field(raw: &[u8]) -> Result<Option<Vec<u8>>, String> {
    if raw == b"\\N" {
        return Ok(None);
    }
    if !raw.contains(&b'\\') {
        return Ok(Some(raw.to_vec()));
    }
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        let b = raw[i];
        i += 1;
        if b != b'\\' {
            out.push(b);
            continue;
        }
        let Some(&e) = raw.get(i) else {
            return Err("field ends with a lone backslash".to_owned());
        };
        i += 1;
        out.push(match e {
            b'b' => 0x08,
            b'f' => 0x0c,
            b'n' => b'\n',
            b'r' => b'\r',
            b't' => b'\t',
            b'v' => 0x0b,
            b'0'..=b'7' => {
                let mut v = u32::from(e - b'0');
                for _ in 0..2 {
                    match raw.get(i) {
                        Some(&d @ b'0'..=b'7') => {
                            v = v * 8 + u32::from(d - b'0');
                            i += 1;
                        }
                        _ => break,
                    }
                }
                (v & 0xff) as u8
            }
            b'x' if raw.get(i).is_some_and(u8::is_ascii_hexdigit) => {
                let mut v = 0u32;
                for _ in 0..2 {
                    match raw.get(i).and_then(|d| (*d as char).to_digit(16)) {
                        Some(d) => {
                            v = v * 16 + d;
                            i += 1;
                        }
                        None => break,
                    }
                }
                v as u8
            }
            other => other,
        });
    }
    Ok(Some(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_rows_across_chunks() {
        let mut l = Lines::default();
        l.push(b"1\ta\n2\t");
        assert_eq!(l.next_line().as_deref(), Some(&b"1\ta"[..]));
        assert_eq!(l.next_line(), None);
        l.push(b"b\n");
        assert_eq!(l.next_line().as_deref(), Some(&b"2\tb"[..]));
        assert_eq!(l.remainder(), 0);
    }

    #[test]
    fn unescapes_every_form() {
        let row = fields(b"\\N\t\tplain\ta\\tb\\nc\\\\d\\101\\x41\\x4\\b\\f\\r\\v\\q").unwrap();
        assert_eq!(row[0], None);
        assert_eq!(row[1].as_deref(), Some(&b""[..]));
        assert_eq!(row[2].as_deref(), Some(&b"plain"[..]));
        assert_eq!(row[3].as_deref(), Some(&b"a\tb\nc\\dAA\x04\x08\x0c\r\x0bq"[..]));
        // `\N` is NULL only as a whole field.
        assert_eq!(fields(b"\\\\N").unwrap()[0].as_deref(), Some(&b"\\N"[..]));
        assert!(fields(b"bad\\").is_err());
    }
}
