//! A bounds check of external term format bytes before they reach `eetf`.
//!
//! `eetf` 0.11 trusts the counts it reads: a 10-byte `LIST_EXT` claiming four
//! billion elements makes it reserve four billion `Term`s, a
//! `COMPRESSED_TERM` header makes it allocate the size it claims, and deep
//! nesting recurses without limit. A peer must not be able to take the node
//! down that way, so every frame is walked here first: each count must fit in
//! the bytes that remain (every element takes at least one byte), nesting is
//! bounded, and tags that never occur on a connection that did not negotiate
//! them (compressed terms, atom-cache references, fragments) are refused.
//! Atoms cost nothing beyond their bytes: `eetf` keeps them as strings, so
//! there is no atom table for a peer to exhaust.

/// Deepest nesting accepted.
pub const MAX_DEPTH: usize = 256;

/// Why a frame was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GuardError {
    /// The bytes end inside a term.
    #[error("truncated term")]
    Truncated,
    /// A tag we do not accept.
    #[error("unexpected tag {0}")]
    Tag(u8),
    /// Nesting deeper than [`MAX_DEPTH`].
    #[error("term nested too deeply")]
    TooDeep,
    /// Bytes left over, or more than two terms.
    #[error("trailing bytes after the terms")]
    Trailing,
}

struct Walker<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl Walker<'_> {
    fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }
    fn skip(&mut self, n: usize) -> Result<(), GuardError> {
        if self.remaining() < n {
            return Err(GuardError::Truncated);
        }
        self.pos += n;
        Ok(())
    }
    fn u8(&mut self) -> Result<u8, GuardError> {
        let b = *self.buf.get(self.pos).ok_or(GuardError::Truncated)?;
        self.pos += 1;
        Ok(b)
    }
    fn u16(&mut self) -> Result<usize, GuardError> {
        Ok(usize::from(u16::from_be_bytes([self.u8()?, self.u8()?])))
    }
    fn u32(&mut self) -> Result<usize, GuardError> {
        let b = [self.u8()?, self.u8()?, self.u8()?, self.u8()?];
        Ok(u32::from_be_bytes(b) as usize)
    }
    /// A count of items that each take at least `min` bytes.
    fn count(&mut self, n: usize, min: usize) -> Result<usize, GuardError> {
        if n.saturating_mul(min) > self.remaining() {
            return Err(GuardError::Truncated);
        }
        Ok(n)
    }
    fn terms(&mut self, n: usize, depth: usize) -> Result<(), GuardError> {
        for _ in 0..n {
            self.term(depth)?;
        }
        Ok(())
    }
    fn term(&mut self, depth: usize) -> Result<(), GuardError> {
        if depth > MAX_DEPTH {
            return Err(GuardError::TooDeep);
        }
        let d = depth + 1;
        match self.u8()? {
            97 => self.skip(1),
            98 => self.skip(4),
            70 => self.skip(8),
            99 => self.skip(31),
            100 | 118 => {
                let n = self.u16()?;
                self.skip(n)
            }
            115 | 119 => {
                let n = usize::from(self.u8()?);
                self.skip(n)
            }
            106 => Ok(()),
            107 => {
                let n = self.u16()?;
                self.skip(n)
            }
            109 => {
                let n = self.u32()?;
                self.skip(n)
            }
            77 => {
                let n = self.u32()?;
                self.skip(1)?;
                self.skip(n)
            }
            110 => {
                let n = usize::from(self.u8()?);
                self.skip(1 + n)
            }
            111 => {
                let n = self.u32()?;
                self.skip(1 + n)
            }
            104 => {
                let n = usize::from(self.u8()?);
                let n = self.count(n, 1)?;
                self.terms(n, d)
            }
            105 => {
                let n = self.u32()?;
                let n = self.count(n, 1)?;
                self.terms(n, d)
            }
            108 => {
                let n = self.u32()?;
                let n = self.count(n, 1)?;
                self.terms(n, d)?;
                self.term(d)
            }
            116 => {
                let n = self.u32()?;
                let n = self.count(n, 2)?;
                self.terms(2 * n, d)
            }
            88 => {
                self.term(d)?;
                self.skip(12)
            }
            103 => {
                self.term(d)?;
                self.skip(9)
            }
            89 => {
                self.term(d)?;
                self.skip(8)
            }
            102 => {
                self.term(d)?;
                self.skip(5)
            }
            120 => {
                self.term(d)?;
                self.skip(12)
            }
            101 => {
                self.term(d)?;
                self.skip(5)
            }
            90 | 114 => {
                let tag_newer = self.buf[self.pos - 1] == 90;
                let n = self.u16()?;
                if n > 5 {
                    return Err(GuardError::Tag(self.buf[self.pos - 3]));
                }
                self.term(d)?;
                self.skip(if tag_newer { 4 } else { 1 })?;
                self.skip(4 * n)
            }
            113 => self.terms(3, d),
            112 => {
                // NEW_FUN_EXT: Size Arity Uniq Index NumFree Module OldIndex OldUniq Pid Free...
                let start = self.pos - 1;
                let size = self.u32()?;
                if size < 4 || start + 1 + size > self.buf.len() {
                    return Err(GuardError::Truncated);
                }
                self.skip(1 + 16 + 4)?;
                let free = self.u32()?;
                let free = self.count(free, 1)?;
                self.terms(4 + free, d)?;
                if self.pos != start + 1 + size {
                    return Err(GuardError::Truncated);
                }
                Ok(())
            }
            117 => {
                let free = self.u32()?;
                let free = self.count(free, 1)?;
                self.terms(4 + free, d)
            }
            other => Err(GuardError::Tag(other)),
        }
    }
}

/// Checks that `buf` holds one or two complete terms, each with the version
/// byte 131 (a control message and an optional payload), and nothing else.
pub fn check_frame(buf: &[u8]) -> Result<(), GuardError> {
    let mut w = Walker { buf, pos: 0 };
    let mut terms = 0;
    while w.remaining() > 0 {
        if terms == 2 {
            return Err(GuardError::Trailing);
        }
        match w.u8()? {
            131 => w.term(0)?,
            other => return Err(GuardError::Tag(other)),
        }
        terms += 1;
    }
    if terms == 0 {
        Err(GuardError::Truncated)
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(t: &eetf::Term) -> Vec<u8> {
        let mut v = Vec::new();
        t.encode(&mut v).expect("encodes");
        v
    }

    #[test]
    fn accepts_what_eetf_encodes() {
        use eetf::*;
        let pid = Term::from(Pid::new("a@h", 1, 2, 3));
        let r = Term::from(Reference {
            node: Atom::from("a@h"),
            id: vec![1, 2, 3, 4, 5],
            creation: 9,
        });
        let t = Term::from(Tuple::from(vec![
            Term::from(Atom::from("hello")),
            Term::from(FixInteger::from(-5)),
            Term::from(Binary::from(vec![1, 2, 3])),
            Term::from(List::from(vec![pid.clone(), r])),
            Term::from(ImproperList::from((
                vec![Term::from(Atom::from("alias"))],
                pid,
            ))),
            Term::from(Float::try_from(1.5).expect("finite")),
            Term::from(Map::from([(
                Term::from(Atom::from("k")),
                Term::from(List::nil()),
            )])),
        ]));
        let mut frame = encode(&t);
        frame.extend(encode(&Term::from(Atom::from("payload"))));
        assert_eq!(check_frame(&frame), Ok(()));
    }

    #[test]
    fn refuses_lying_counts_compression_and_depth() {
        assert_eq!(
            check_frame(&[131, 108, 0xff, 0xff, 0xff, 0xff, 106]),
            Err(GuardError::Truncated)
        );
        assert_eq!(
            check_frame(&[131, 109, 0xff, 0xff, 0xff, 0xff]),
            Err(GuardError::Truncated)
        );
        assert_eq!(
            check_frame(&[131, 80, 0, 0, 0, 10, 1]),
            Err(GuardError::Tag(80))
        );
        assert_eq!(check_frame(&[131, 97]), Err(GuardError::Truncated));
        assert_eq!(
            check_frame(&[131, 97, 1, 131, 97, 1, 131, 97, 1]),
            Err(GuardError::Trailing)
        );
        let mut deep = vec![131];
        for _ in 0..1000 {
            deep.extend_from_slice(&[104, 1]);
        }
        deep.push(106);
        assert_eq!(check_frame(&deep), Err(GuardError::TooDeep));
    }
}
