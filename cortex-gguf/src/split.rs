//! [`SplitName`]: the file names of a split set, as llama.cpp's `gguf-split` writes them.

use std::path::{Path, PathBuf};

/// A shard's path read as `PREFIX-0000N-of-0000M.gguf` (`llama_split_path`'s
/// `%s-%05d-of-%05d.gguf`): five ASCII digits each (no sign, no other width), `1 ≤ N ≤ M`.
///
/// ```
/// use cortex_gguf::SplitName;
/// let name = SplitName::parse("/m/qwen-00002-of-00009.gguf").unwrap();
/// assert_eq!((name.prefix(), name.number(), name.count()), ("/m/qwen", 2, 9));
/// assert_eq!(name.shard(1), std::path::Path::new("/m/qwen-00001-of-00009.gguf"));
/// assert!(SplitName::parse("/m/qwen.gguf").is_none());
/// assert!(SplitName::parse("/m/q-+0001-of-00009.gguf").is_none());
/// assert!(SplitName::parse("/m/q-00010-of-00009.gguf").is_none());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SplitName {
    prefix: String,
    number: u32,
    count: u32,
}

impl SplitName {
    /// Reads `path` as a shard's name; `None` when it is not one.
    pub fn parse(path: impl AsRef<Path>) -> Option<Self> {
        let s = path.as_ref().to_str()?;
        let stem = s.strip_suffix(".gguf")?;
        let (rest, count) = stem.rsplit_once("-of-")?;
        let (prefix, number) = rest.rsplit_once('-')?;
        let digits = |d: &str| d.len() == 5 && d.bytes().all(|b| b.is_ascii_digit());
        if !digits(number) || !digits(count) {
            return None;
        }
        let (number, count) = (number.parse().ok()?, count.parse().ok()?);
        (number >= 1 && number <= count).then(|| Self {
            prefix: prefix.to_owned(),
            number,
            count,
        })
    }

    /// Everything before `-0000N-of-0000M.gguf`.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// This shard's number, from 1.
    pub fn number(&self) -> u32 {
        self.number
    }

    /// How many shards the set has.
    pub fn count(&self) -> u32 {
        self.count
    }

    /// The path of shard `number` of the same set.
    pub fn shard(&self, number: u32) -> PathBuf {
        PathBuf::from(format!(
            "{}-{number:05}-of-{:05}.gguf",
            self.prefix, self.count
        ))
    }
}
