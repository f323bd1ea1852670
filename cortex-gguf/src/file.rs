//! Opening GGUF files by memory map: [`GgufFile`] and split sets as [`GgufModel`].

use std::fs::File;
use std::path::{Path, PathBuf};

use memmap2::Mmap;

use crate::gguf::Header;
use crate::{Error, Gguf, ModelInfo, TensorInfo};

/// Why a file or split set could not be opened.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// The file could not be opened or mapped.
    #[error("cannot read {}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The file is not a valid GGUF file.
    #[error("{} is not a valid GGUF file", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// What is wrong, and where.
        #[source]
        source: Error,
    },
    /// A shard of a split set does not exist.
    #[error("split set of {count} shards starting at {}: {} is missing", first.display(), missing.display())]
    MissingShard {
        /// The first shard's path.
        first: PathBuf,
        /// The missing shard's path.
        missing: PathBuf,
        /// Shards in the set.
        count: u32,
    },
    /// A shard's `split.*` metadata disagrees with its name or with the other shards.
    #[error("split set shard {}: {problem}", path.display())]
    BadShard {
        /// The shard.
        path: PathBuf,
        /// What disagrees.
        problem: String,
    },
}

/// A GGUF file opened by memory map, its header parsed once.
///
/// ```no_run
/// use cortex_gguf::GgufFile;
///
/// let file = GgufFile::open("models/gemma-3-270m-q4_k_m.gguf")?;
/// let gguf = file.gguf();
/// println!("{} tensors, {} keys", gguf.tensor_count(), gguf.kv_count());
/// # Ok::<(), cortex_gguf::OpenError>(())
/// ```
#[derive(Debug)]
pub struct GgufFile {
    path: PathBuf,
    map: Mmap,
    header: Header,
}

// === impl GgufFile ===

impl GgufFile {
    /// Maps `path` read-only and parses its header; only the pages the header occupies are read.
    ///
    /// Like every memory-mapped reader, this assumes the file is not truncated or rewritten while
    /// mapped; another process doing so can make later reads fault (`SIGBUS`).
    ///
    /// # Errors
    ///
    /// [`OpenError::Io`] when the file cannot be opened or mapped, [`OpenError::Parse`] when it is
    /// not valid GGUF.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, OpenError> {
        let path = path.as_ref().to_owned();
        let io = |source| OpenError::Io {
            path: path.clone(),
            source,
        };
        let file = File::open(&path).map_err(io)?;
        let map = map(&file).map_err(io)?;
        let header = Gguf::parse(&map)
            .map_err(|source| OpenError::Parse {
                path: path.clone(),
                source,
            })?
            .into_header();
        Ok(Self { path, map, header })
    }

    /// The parsed header, borrowing the map.
    pub fn gguf(&self) -> Gguf<'_> {
        Gguf::from_parts(&self.map, &self.header)
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The file's length.
    pub fn len(&self) -> u64 {
        self.map.len() as u64
    }

    /// Whether the file is empty (it never is once opened).
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

/// The one unsafe operation of this crate.
#[allow(unsafe_code)]
fn map(file: &File) -> std::io::Result<Mmap> {
    // SAFETY: the map is read-only and private to this process; memmap2 requires that the file is
    // not modified or truncated while mapped, which is documented on `GgufFile::open` as the
    // caller's assumption, as for every memory-mapped reader. All reads of the map are
    // bounds-checked by the parser.
    unsafe { Mmap::map(file) }
}

/// A model in one file or in a split set (`name-00001-of-00003.gguf`, …), opened from any shard.
///
/// For a split set every shard is opened and checked: each exists, its `split.no` matches its
/// name, all agree on `split.count`, the first one's `split.tensors.count` equals the tensors of
/// all shards, and no tensor name repeats across shards. Metadata comes from the first shard, as
/// llama.cpp reads it.
#[derive(Debug)]
pub struct GgufModel {
    first: GgufFile,
    rest: Vec<GgufFile>,
}

// === impl GgufModel ===

impl GgufModel {
    /// Opens the model `path` belongs to.
    ///
    /// # Errors
    ///
    /// Any [`OpenError`] of any shard, naming the shard.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, OpenError> {
        let path = path.as_ref();
        let Some(name) = crate::SplitName::parse(path) else {
            let file = GgufFile::open(path)?;
            if let Ok(n) = file.gguf().get::<u32>("split.count") {
                if n > 1 {
                    return Err(OpenError::BadShard {
                        path: path.to_owned(),
                        problem: format!(
                            "split.count is {n}, but the name is not of the form NAME-00001-of-{n:05}.gguf"
                        ),
                    });
                }
            }
            return Ok(Self {
                first: file,
                rest: Vec::new(),
            });
        };
        let count = name.count();
        let first = name.shard(1);
        let mut shards = Vec::new();
        for no in 1..=count {
            let shard = name.shard(no);
            if !shard.exists() {
                return Err(OpenError::MissingShard {
                    first,
                    missing: shard,
                    count,
                });
            }
            shards.push(GgufFile::open(&shard)?);
        }
        {
            let views: Vec<(&Path, Gguf<'_>)> =
                shards.iter().map(|s| (s.path(), s.gguf())).collect();
            check_split_set(&views, count)?;
        }
        let mut shards = shards.into_iter();
        let Some(first_file) = shards.next() else {
            return Err(OpenError::MissingShard {
                first: first.clone(),
                missing: first,
                count,
            });
        };
        let model = Self {
            first: first_file,
            rest: shards.collect(),
        };
        Ok(model)
    }

    /// How many shards there are (1 for a single file).
    pub fn shard_count(&self) -> usize {
        self.rest.len().saturating_add(1)
    }

    /// The shards, in order (one for a single file).
    pub fn shards(&self) -> impl Iterator<Item = &GgufFile> {
        std::iter::once(&self.first).chain(self.rest.iter())
    }

    /// The metadata: the first shard's header.
    pub fn gguf(&self) -> Gguf<'_> {
        self.first.gguf()
    }

    /// Every tensor of every shard, with its shard's index.
    pub fn tensors(&self) -> impl Iterator<Item = (usize, TensorInfo<'_>)> + '_ {
        self.shards()
            .enumerate()
            .flat_map(|(i, s)| s.gguf().into_tensors().map(move |t| (i, t)))
    }

    /// The tensor called `name`, in whichever shard holds it.
    pub fn tensor(&self, name: &str) -> Option<(usize, TensorInfo<'_>)> {
        self.shards()
            .enumerate()
            .find_map(|(i, s)| s.gguf().tensor(name).map(|t| (i, t)))
    }

    /// The model's summary, counting the tensors of every shard.
    pub fn info(&self) -> ModelInfo {
        ModelInfo::from_parts(&self.gguf(), self.tensors().map(|(_, t)| t))
    }
}

/// Checks that `shards`, in order, form one split set of `count` shards: each one's `split.no`
/// matches its place, all agree on `split.count`, the first one's `split.tensors.count` equals
/// the tensors of all, and no tensor name repeats across shards.
pub(crate) fn check_split_set(shards: &[(&Path, Gguf<'_>)], count: u32) -> Result<(), OpenError> {
    let bad = |path: &Path, problem: String| OpenError::BadShard {
        path: path.to_owned(),
        problem,
    };
    if shards.len() != count as usize {
        let path = shards.first().map_or(Path::new(""), |s| s.0);
        return Err(bad(
            path,
            format!("{} shards for a set of {count}", shards.len()),
        ));
    }
    for (no, (path, gguf)) in (0u32..).zip(shards) {
        match gguf.get::<u32>("split.no") {
            Ok(n) if n == no => {}
            Ok(n) => return Err(bad(path, format!("split.no is {n}, the name says {no}"))),
            Err(e) => return Err(bad(path, e.to_string())),
        }
        match gguf.get::<u32>("split.count") {
            Ok(n) if n == count => {}
            Ok(n) => {
                return Err(bad(
                    path,
                    format!("split.count is {n}, the name says {count}"),
                ));
            }
            Err(e) => return Err(bad(path, e.to_string())),
        }
    }
    let Some((first, head)) = shards.first() else {
        return Ok(());
    };
    let total: u64 = shards.iter().map(|(_, g)| g.tensor_count() as u64).sum();
    match head.get::<u64>("split.tensors.count") {
        Ok(n) if n == total => {}
        Ok(n) => {
            return Err(bad(
                first,
                format!("split.tensors.count is {n}, but the shards hold {total} tensors"),
            ));
        }
        Err(e) => return Err(bad(first, e.to_string())),
    }
    // Names are unique within each shard (the parser checks); check across shards.
    let mut names: Vec<(&str, usize)> = shards
        .iter()
        .enumerate()
        .flat_map(|(i, (_, g))| g.clone().into_tensors().map(move |t| (t.name(), i)))
        .collect();
    names.sort_unstable();
    for pair in names.windows(2) {
        if let [(name, a), (other, b)] = *pair {
            if name == other {
                let path = shards.get(b).map_or(Path::new(""), |s| s.0);
                return Err(bad(
                    path,
                    format!("tensor {name:?} is also in shard {}", a.saturating_add(1)),
                ));
            }
        }
    }
    Ok(())
}

/// Entry points for the fuzz targets (`fuzz/`), compiled only under `cfg(fuzzing)`.
#[cfg(fuzzing)]
pub mod fuzzing {
    use std::path::PathBuf;

    use crate::Gguf;

    /// Cuts `data` into shards at each `SHARD` separator, parses each, and checks them as one
    /// split set (whatever its `split.count` says about the length).
    pub fn split_set(data: &[u8]) {
        const SEPARATOR: &[u8] = b"\xffSHARD\xff";
        let mut shards = Vec::new();
        let mut rest = data;
        while let Some(at) = rest.windows(SEPARATOR.len()).position(|w| w == SEPARATOR) {
            let (head, tail) = rest.split_at(at);
            shards.push(head);
            rest = tail.get(SEPARATOR.len()..).unwrap_or(&[]);
        }
        shards.push(rest);
        let paths: Vec<PathBuf> = (1..=shards.len())
            .map(|i| PathBuf::from(format!("m-{i:05}.gguf")))
            .collect();
        let parsed: Vec<_> = shards.iter().map(|s| Gguf::parse(s)).collect();
        if parsed.iter().all(Result::is_ok) {
            let views: Vec<_> = paths
                .iter()
                .map(PathBuf::as_path)
                .zip(parsed.into_iter().flatten())
                .collect();
            let count = u32::try_from(views.len()).unwrap_or(u32::MAX);
            let _ = super::check_split_set(&views, count);
        }
    }
}
