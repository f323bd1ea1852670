//! A bounds-checked reader over `&[u8]` in either byte order.
//!
//! Every read returns a `Result`; nothing indexes or slices without a check, and every length and
//! count from the file goes through `checked_*` arithmetic (the crate denies
//! `clippy::indexing_slicing` and `clippy::arithmetic_side_effects`).

use crate::{Counted, Error};

#[derive(Debug, Clone)]
pub(crate) struct Cursor<'a> {
    data: &'a [u8],
    pos: usize,
    pub(crate) big_endian: bool,
    /// GGUF v1: counts, string and array lengths and dimensions are 32-bit.
    pub(crate) v1: bool,
}

impl<'a> Cursor<'a> {
    pub(crate) fn new(data: &'a [u8], pos: usize, big_endian: bool, v1: bool) -> Self {
        Self {
            data,
            pos,
            big_endian,
            v1,
        }
    }

    pub(crate) fn pos(&self) -> usize {
        self.pos
    }

    /// The position as a file offset for errors.
    pub(crate) fn offset(&self) -> u64 {
        self.pos as u64
    }

    /// `data[start..end]`, or empty when out of range.
    pub(crate) fn slice(&self, start: usize, end: usize) -> &'a [u8] {
        self.data.get(start..end).unwrap_or(&[])
    }

    pub(crate) fn remaining(&self) -> usize {
        self.data.len().saturating_sub(self.pos)
    }

    /// The next `n` bytes. On failure the cursor is left at the end, so nothing reads on.
    pub(crate) fn take(&mut self, n: u64) -> Result<&'a [u8], Error> {
        let available = self.remaining();
        let slice = usize::try_from(n)
            .ok()
            .and_then(|n| self.pos.checked_add(n).map(|end| (n, end)))
            .and_then(|(_, end)| self.data.get(self.pos..end).map(|s| (s, end)));
        if let Some((s, end)) = slice {
            self.pos = end;
            Ok(s)
        } else {
            let offset = self.offset();
            self.pos = self.data.len();
            Err(Error::UnexpectedEof {
                offset,
                needed: n,
                available: available as u64,
            })
        }
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], Error> {
        let s = self.take(N as u64)?;
        // `take` returned exactly N bytes.
        let mut out = [0; N];
        out.copy_from_slice(s);
        Ok(out)
    }

    pub(crate) fn u8(&mut self) -> Result<u8, Error> {
        Ok(self.array::<1>()?[0])
    }

    pub(crate) fn u16(&mut self) -> Result<u16, Error> {
        let b = self.array()?;
        Ok(if self.big_endian {
            u16::from_be_bytes(b)
        } else {
            u16::from_le_bytes(b)
        })
    }

    pub(crate) fn u32(&mut self) -> Result<u32, Error> {
        let b = self.array()?;
        Ok(if self.big_endian {
            u32::from_be_bytes(b)
        } else {
            u32::from_le_bytes(b)
        })
    }

    pub(crate) fn u64(&mut self) -> Result<u64, Error> {
        let b = self.array()?;
        Ok(if self.big_endian {
            u64::from_be_bytes(b)
        } else {
            u64::from_le_bytes(b)
        })
    }

    /// A count or length: 32-bit in GGUF v1, 64-bit after.
    pub(crate) fn size(&mut self) -> Result<u64, Error> {
        if self.v1 {
            self.u32().map(u64::from)
        } else {
            self.u64()
        }
    }

    /// A count of items each at least `min_size` bytes long, refused when the rest of the input
    /// cannot hold that many.
    pub(crate) fn count(&mut self, what: Counted, min_size: u64) -> Result<u64, Error> {
        let offset = self.offset();
        let count = self.size()?;
        let fits = count
            .checked_mul(min_size)
            .is_some_and(|need| need <= self.remaining() as u64);
        if fits {
            Ok(count)
        } else {
            Err(Error::TooMany {
                offset,
                what,
                count,
            })
        }
    }

    /// A length-prefixed string's bytes, without UTF-8 validation.
    pub(crate) fn string_bytes(&mut self) -> Result<(u64, &'a [u8]), Error> {
        let len_at = self.offset();
        let len = self.count(Counted::StringBytes, 1)?;
        if len > crate::gguf::MAX_STRING_LEN {
            return Err(Error::TooMany {
                offset: len_at,
                what: Counted::StringBytes,
                count: len,
            });
        }
        let offset = self.offset();
        Ok((offset, self.take(len)?))
    }

    /// A length-prefixed UTF-8 string.
    pub(crate) fn string(&mut self) -> Result<(u64, &'a str), Error> {
        let (offset, bytes) = self.string_bytes()?;
        Ok((offset, utf8(bytes, offset)?))
    }
}

/// `bytes` as UTF-8, or an error naming where they start.
pub(crate) fn utf8(bytes: &[u8], offset: u64) -> Result<&str, Error> {
    std::str::from_utf8(bytes).map_err(|e| Error::InvalidUtf8 {
        offset,
        valid_up_to: e.valid_up_to() as u64,
    })
}

/// `x` rounded up to a multiple of `align` (a power of two), or `None` on overflow.
pub(crate) fn align_up(x: u64, align: u64) -> Option<u64> {
    let mask = align.checked_sub(1)?;
    x.checked_add(mask).map(|v| v & !mask)
}
