//! A bulkhead around the Parquet reader, for data files nobody vouches for
//! (anyone who can write the stage can place one).
//!
//! - [`check_footer`] and [`check_page_headers`] walk the file's Thrift
//!   structures before the reader parses them, refusing a list, set or map
//!   that declares more elements than bytes are left. The reader skips an
//!   unknown field element by element, and takes no byte for a Boolean
//!   element (the protocol spends one), so one list header could keep it
//!   busy for 2^31 steps, and every page header could do it again
//!   (`fuzz/regressions/parquet/thrift-list-of-booleans.parquet`). The walk
//!   skips as the reader does, Booleans included, so that it reads each
//!   header where the reader will; and since the reader reads a field it
//!   knows as the type it expects, whatever type the bytes declare, a page
//!   header field of a known number but another type is refused
//!   ([`PAGE_HEADER`]). The footer is walked without such a schema: it is
//!   parsed once per file, not once per page.
//! - [`contained`] runs a call into the reader so that a panic inside it
//!   (an assertion in its decoders on malformed levels,
//!   `fuzz/regressions/parquet/definition-levels-out-of-bounds.parquet`) becomes
//!   an error, not the end of the process.

use std::panic::{AssertUnwindSafe, catch_unwind};

use parquet::file::metadata::ColumnChunkMetaData;

/// A field of a Thrift struct the reader knows: its number, its compact
/// type (Booleans as 1), and the fields of a struct-typed one.
struct Field(i16, u8, &'static [Field]);

/// Compact protocol types.
const BOOL: u8 = 1;
const I32: u8 = 5;
const I64: u8 = 6;
const BINARY: u8 = 8;
const STRUCT: u8 = 12;

/// `Statistics` in parquet.thrift.
const STATISTICS: &[Field] = &[
    Field(1, BINARY, &[]),
    Field(2, BINARY, &[]),
    Field(3, I64, &[]),
    Field(4, I64, &[]),
    Field(5, BINARY, &[]),
    Field(6, BINARY, &[]),
    Field(7, BOOL, &[]),
    Field(8, BOOL, &[]),
];

/// `PageHeader` in parquet.thrift, with `DataPageHeader`, `IndexPageHeader`,
/// `DictionaryPageHeader` and `DataPageHeaderV2`.
const PAGE_HEADER: &[Field] = &[
    Field(1, I32, &[]),
    Field(2, I32, &[]),
    Field(3, I32, &[]),
    Field(4, I32, &[]),
    Field(5, STRUCT, &[Field(1, I32, &[]), Field(2, I32, &[]), Field(3, I32, &[]), Field(4, I32, &[]), Field(5, STRUCT, STATISTICS)]),
    Field(6, STRUCT, &[]),
    Field(7, STRUCT, &[Field(1, I32, &[]), Field(2, I32, &[]), Field(3, BOOL, &[])]),
    Field(
        8,
        STRUCT,
        &[
            Field(1, I32, &[]),
            Field(2, I32, &[]),
            Field(3, I32, &[]),
            Field(4, I32, &[]),
            Field(5, I32, &[]),
            Field(6, I32, &[]),
            Field(7, BOOL, &[]),
            Field(8, STRUCT, STATISTICS),
        ],
    ),
];

/// Thrift structures nest this deep at most here (Parquet's own nest a few
/// levels); deeper is refused rather than recursed into.
const MAX_DEPTH: u32 = 32;

/// Walks the footer of a Parquet file in `bytes`, if it has one; a file
/// too short or without the magic is left to the reader to refuse.
pub(super) fn check_footer(bytes: &[u8]) -> Result<(), String> {
    let Some(body) = bytes.len().checked_sub(8) else { return Ok(()) };
    if &bytes[body + 4..] != b"PAR1" {
        return Ok(());
    }
    let len = u32::from_le_bytes([bytes[body], bytes[body + 1], bytes[body + 2], bytes[body + 3]]) as usize;
    let Some(start) = body.checked_sub(len) else { return Ok(()) };
    Walker::new(&bytes[start..body]).structure(0, None, None).map(|_| ()).map_err(|e| format!("the footer: {e}"))
}

/// Walks the page headers of column chunk `c` as the reader will find
/// them: a header, then the page's `compressed_page_size` bytes, until the
/// chunk's bytes are used up. Its range must already be known to be
/// non-negative.
pub(super) fn check_page_headers(bytes: &[u8], c: &ColumnChunkMetaData) -> Result<(), String> {
    let (start, len) = c.byte_range();
    let range = usize::try_from(start).ok().zip(usize::try_from(start.saturating_add(len)).ok());
    let Some(chunk) = range.and_then(|(s, e)| bytes.get(s..e)) else { return Err("lies outside the file".to_owned()) };
    let mut pos = 0;
    while pos < chunk.len() {
        let mut w = Walker::new(&chunk[pos..]);
        let size = w.structure(0, Some(PAGE_HEADER), Some(3)).map_err(|e| format!("a page header at byte {pos}: {e}"))?;
        let size = size.and_then(|s| usize::try_from(s).ok()).ok_or_else(|| format!("a page header at byte {pos} has no valid page size"))?;
        pos = pos.saturating_add(w.pos).saturating_add(size);
    }
    Ok(())
}

/// Runs `f`, a call into the Parquet reader; a panic inside it is returned
/// as an error saying so (`what` names the call).
pub(super) fn contained<T>(what: &str, f: impl FnOnce() -> Result<T, String>) -> Result<T, String> {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|panic| {
        let message = panic.downcast_ref::<&str>().map(|s| s.to_string()).or_else(|| panic.downcast_ref::<String>().cloned()).unwrap_or_default();
        Err(format!("the Parquet reader failed {what} on malformed data: {message}"))
    })
}

/// A reader of Thrift's compact protocol that only skips, checking sizes.
struct Walker<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Walker<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Walker { buf, pos: 0 }
    }

    fn left(&self) -> usize {
        self.buf.len() - self.pos
    }

    fn byte(&mut self) -> Result<u8, String> {
        let b = *self.buf.get(self.pos).ok_or("ends early")?;
        self.pos += 1;
        Ok(b)
    }

    fn skip(&mut self, n: usize) -> Result<(), String> {
        if n > self.left() {
            return Err(format!("a value of {n} bytes with {} left", self.left()));
        }
        self.pos += n;
        Ok(())
    }

    fn varint(&mut self) -> Result<u64, String> {
        let mut value = 0u64;
        for shift in (0..70).step_by(7) {
            let b = self.byte()?;
            value |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err("a varint longer than 10 bytes".to_owned())
    }

    fn zigzag(&mut self) -> Result<i64, String> {
        let v = self.varint()?;
        Ok((v >> 1) as i64 ^ -((v & 1) as i64))
    }

    /// Skips a struct's fields up to its stop byte, checking the types of
    /// the fields `schema` knows; returns the value of integer field
    /// `want`, if asked for and present.
    fn structure(&mut self, depth: u32, schema: Option<&[Field]>, want: Option<i16>) -> Result<Option<i64>, String> {
        if depth > MAX_DEPTH {
            return Err(format!("structures nested over {MAX_DEPTH} deep"));
        }
        let (mut id, mut found) = (0i16, None);
        loop {
            let header = self.byte()?;
            if header == 0 {
                return Ok(found);
            }
            let delta = i16::from(header >> 4);
            id = if delta == 0 { i16::try_from(self.zigzag()?).map_err(|_| "a field id out of range")? } else { id.wrapping_add(delta) };
            let kind = header & 0x0f;
            let known = schema.and_then(|fields| fields.iter().find(|f| f.0 == id));
            if let Some(field) = known {
                let wire = if kind == 2 { BOOL } else { kind };
                if wire != field.1 {
                    return Err(format!("field {id} is of type {kind}, not {}", field.1));
                }
                if kind == STRUCT {
                    self.structure(depth + 1, Some(field.2), None)?;
                    continue;
                }
            }
            if want == Some(id) && matches!(kind, 4..=6) {
                found = Some(self.zigzag()?);
            } else {
                self.value(kind, depth)?;
            }
        }
    }

    /// Skips one value of compact type `kind`. A Boolean element of a
    /// collection is skipped without a byte, as the reader skips it.
    fn value(&mut self, kind: u8, depth: u32) -> Result<(), String> {
        match kind {
            // Booleans in a field header carry their value in the type.
            1 | 2 => Ok(()),
            3 => self.skip(1),
            4..=6 => self.varint().map(|_| ()),
            7 => self.skip(8),
            8 => {
                let n = self.varint()?;
                self.skip(usize::try_from(n).unwrap_or(usize::MAX))
            }
            9 | 10 => {
                let header = self.byte()?;
                let n = match header >> 4 {
                    15 => self.varint()?,
                    n => u64::from(n),
                };
                self.elements(n, 1)?;
                (0..n).try_for_each(|_| self.value(header & 0x0f, depth + 1))
            }
            11 => {
                let n = self.varint()?;
                if n == 0 {
                    return Ok(());
                }
                let kinds = self.byte()?;
                self.elements(n, 2)?;
                (0..n).try_for_each(|_| self.value(kinds >> 4, depth + 1).and_then(|()| self.value(kinds & 0x0f, depth + 1)))
            }
            12 => self.structure(depth + 1, None, None).map(|_| ()),
            // UUID.
            13 => self.skip(16),
            k => Err(format!("an unknown type {k}")),
        }
    }

    /// Refuses `n` elements of at least `bytes_each` byte(s) each when fewer
    /// bytes are left: an encoder spends at least one on every element of
    /// every type (the reader skips Booleans without one, but no honest
    /// list of them is longer than the bytes that encode it).
    fn elements(&self, n: u64, bytes_each: u64) -> Result<(), String> {
        if n.saturating_mul(bytes_each) > self.left() as u64 {
            return Err(format!("a collection of {n} elements with {} bytes left", self.left()));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_list_longer_than_the_bytes_left_is_refused() {
        // Field 1, a list (type 9) of 2^31 - 1 Booleans (15 = size follows; 1 = bool).
        let mut buf = vec![0x19, 0xf1, 0xff, 0xff, 0xff, 0xff, 0x07];
        buf.extend([1; 64]);
        let e = Walker::new(&buf).structure(0, None, None).unwrap_err();
        assert!(e.contains("2147483647 elements with 64 bytes left"), "{e}");
    }

    #[test]
    fn a_well_formed_structure_is_walked_and_its_field_read() {
        // Field 1: i32 7; field 3: i32 -300; field 9: a list of 2 i32s;
        // field 10: a binary of 3 bytes; field 11: a struct with field 1
        // true; field 12: a map of one i32 -> i32; field 13: a list of two
        // Booleans, skipped without their bytes as the Parquet reader does
        // (so the bytes 1, 2 read as fields 1 and 2, both true); stop.
        let buf = [0x15, 14, 0x25, 0xd7, 0x04, 0x69, 0x25, 2, 4, 0x18, 3, b'a', b'b', b'c', 0x1c, 0x11, 0, 0x1b, 1, 0x55, 2, 4, 0x19, 0x21, 0x11, 0x11, 0];
        let mut w = Walker::new(&buf);
        assert_eq!(w.structure(0, Some(PAGE_HEADER), Some(3)), Ok(Some(-300)));
        assert_eq!(w.pos, buf.len());
    }

    #[test]
    fn nesting_too_deep_is_refused() {
        // A struct in field 1 of a struct in field 1 of … 40 deep.
        let buf = vec![0x1c; 40];
        let e = Walker::new(&buf).structure(0, None, None).unwrap_err();
        assert!(e.contains("nested over"), "{e}");
    }

    #[test]
    fn a_page_header_field_of_another_type_is_refused() {
        // Field 1: i32 0; field 2: i32 7; field 3 (compressed_page_size)
        // declared a Boolean, which the reader would read as an i32 anyway.
        let buf = [0x15, 0, 0x15, 14, 0x11, 14, 0];
        let e = Walker::new(&buf).structure(0, Some(PAGE_HEADER), Some(3)).unwrap_err();
        assert!(e.contains("field 3 is of type 1, not 5"), "{e}");
    }

    #[test]
    fn a_panic_inside_becomes_an_error() {
        let e = contained::<()>("reading rows", || panic!("offset + len out of bounds")).unwrap_err();
        assert!(e.contains("reading rows") && e.contains("offset + len out of bounds"), "{e}");
    }
}
