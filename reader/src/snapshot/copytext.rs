//! COPY's text format: rows end with `\n`, fields are separated by tabs,
//! `\N` alone is NULL, and backslash escapes the rest (`\\`, `\t`, `\n`,
//! `\r`, `\b`, `\f`, `\v`, octal `\ooo` and hex `\xhh`). Unescaped, a field
//! is the value's text output form, the same one pgoutput sends.

use std::borrow::Cow;

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

    /// Calls `f` on every complete row buffered (without its newline) and
    /// keeps the incomplete rest for the next chunk.
    pub fn for_each<E>(&mut self, mut f: impl FnMut(&[u8]) -> Result<(), E>) -> Result<(), E> {
        let mut start = 0;
        let mut result = Ok(());
        for end in memchr::memchr_iter(b'\n', &self.buf) {
            result = f(&self.buf[start..end]);
            start = end + 1;
            if result.is_err() {
                break;
            }
        }
        self.buf.advance(start);
        result
    }

    /// Bytes of an unterminated row left at the end (an error once the COPY ended).
    pub fn remainder(&self) -> usize {
        self.buf.remaining()
    }
}

/// The fields of one row, unescaped; `None` is NULL. A field without
/// escapes borrows the line.
pub type Fields<'a> = Vec<Option<Cow<'a, [u8]>>>;

pub fn fields(line: &[u8]) -> Result<Fields<'_>, String> {
    line.split(|&b| b == b'\t').map(field).collect()
}

fn field(raw: &[u8]) -> Result<Option<Cow<'_, [u8]>>, String> {
    if raw == b"\\N" {
        return Ok(None);
    }
    if !raw.contains(&b'\\') {
        return Ok(Some(Cow::Borrowed(raw)));
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
    Ok(Some(Cow::Owned(out)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_rows_across_chunks() {
        let mut l = Lines::default();
        let mut seen: Vec<Vec<u8>> = Vec::new();
        l.push(b"1\ta\n2\t");
        l.for_each(|line| {
            seen.push(line.to_vec());
            Ok::<_, ()>(())
        })
        .unwrap();
        assert_eq!(seen, [b"1\ta".to_vec()]);
        assert_eq!(l.remainder(), 2);
        l.push(b"b\n\n3\n");
        l.for_each(|line| {
            seen.push(line.to_vec());
            Ok::<_, ()>(())
        })
        .unwrap();
        assert_eq!(seen, [b"1\ta".to_vec(), b"2\tb".to_vec(), b"".to_vec(), b"3".to_vec()]);
        assert_eq!(l.remainder(), 0);
        // An error stops at that row; the rows after it stay buffered.
        l.push(b"x\ny\n");
        assert_eq!(l.for_each(|line| if line == b"x" { Err("bad x") } else { Ok(()) }), Err("bad x"));
        assert_eq!(l.remainder(), 2);
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
