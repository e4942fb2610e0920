//! The look-back window: which rows a round with a look-back has already
//! staged unchanged.
//!
//! A round with `look_back` starts at `last watermark - look_back`, so it
//! reads again every row of the window: rows staged by earlier rounds, and
//! rows committed late with a watermark older than the last staged one
//! (concurrent transactions on `updated_at`), which are what the window is
//! for. A row is staged again only if its key is new to the window or its
//! content changed.
//!
//! Bound: every round reads the whole window, so a key not read in a round
//! has left the window (or its row changed key or was deleted) and is
//! forgotten when the round ends. The map holds the keys of one window plus
//! the rows of one round.

use std::collections::HashMap;

/// Content hashes of the rows of the current window, by key.
#[derive(Debug, Default)]
pub struct Window {
    /// Key → (content hash, round that last read it).
    rows: HashMap<Vec<u8>, (u64, u64)>,
    round: u64,
}

impl Window {
    /// Whether a row read in this round is to be staged: its key is new to
    /// the window, or its content changed. Either way it is remembered as
    /// read in this round.
    pub fn admit(&mut self, key: Vec<u8>, content: u64) -> bool {
        match self.rows.insert(key, (content, self.round)) {
            Some((previous, _)) => previous != content,
            None => true,
        }
    }

    /// Remembers a row as staged (by an earlier process: the window is
    /// rebuilt from the stage after a restart, newest batch first, so a key
    /// already remembered keeps its newer version).
    pub fn remember(&mut self, key: Vec<u8>, content: u64) {
        self.rows.entry(key).or_insert((content, self.round));
    }

    /// Ends a round: keys it did not read are out of the window.
    pub fn end_round(&mut self) {
        let round = self.round;
        self.rows.retain(|_, (_, seen)| *seen == round);
        self.round += 1;
    }

    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }
}

/// A stable hash of a row's content (FNV-1a over its COPY text: the same
/// row reads as the same bytes under the pinned session settings). Stable
/// across processes, so a rebuilt window agrees with the one it replaces.
pub fn content_hash(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_row_read_again_unchanged_is_not_staged_again() {
        let mut w = Window::default();
        assert!(w.admit(b"1".to_vec(), 10));
        assert!(w.admit(b"2".to_vec(), 20));
        w.end_round();
        assert!(!w.admit(b"1".to_vec(), 10), "same key, same content: already staged");
        assert!(w.admit(b"2".to_vec(), 21), "same key, new content: staged");
        assert!(w.admit(b"3".to_vec(), 30), "a late row: staged");
        w.end_round();
        assert_eq!(w.len(), 3);
    }

    #[test]
    fn a_rebuilt_window_keeps_the_newest_version_it_was_given_first() {
        let mut w = Window::default();
        w.remember(b"1".to_vec(), 2);
        w.remember(b"1".to_vec(), 1);
        assert!(!w.admit(b"1".to_vec(), 2), "the newest staged version is known");
        assert!(w.admit(b"1".to_vec(), 1), "going back to an older content is a change");
    }

    #[test]
    fn keys_that_left_the_window_are_forgotten() {
        let mut w = Window::default();
        w.admit(b"old".to_vec(), 1);
        w.admit(b"kept".to_vec(), 2);
        w.end_round();
        w.admit(b"kept".to_vec(), 2);
        w.end_round();
        assert_eq!(w.len(), 1, "only what the last round read stays");
        assert!(w.admit(b"old".to_vec(), 1), "a forgotten key is new again");
    }

    #[test]
    fn the_hash_is_stable_and_tells_contents_apart() {
        assert_eq!(content_hash(b"1\tx"), content_hash(b"1\tx"));
        assert_ne!(content_hash(b"1\tx"), content_hash(b"1\ty"));
        assert_eq!(content_hash(b""), 0xcbf2_9ce4_8422_2325);
    }
}
