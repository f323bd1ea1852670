//! A zero-copy GGUF reader that never panics on bad input.
//!
//! The [`estimate`] module predicts what llama.cpp's `llama-server` allocates on each GPU and on
//! the host, buffer by buffer, for a model and the llama-server flags a user would pass; the GPUs
//! come from a [`GpuInventory`] (a [`StaticInventory`] written down, or `NvmlInventory` with the
//! `nvml` feature).
//!
//! # Overview
//!
//! [`Gguf::parse`] takes the bytes of a GGUF file (any `&[u8]`: a memory map, a `Vec`, a fuzzer's
//! input) and returns borrowed views: keys and strings as `&str`, arrays iterated lazily without
//! allocating, tensor infos with their names, dimensions, ggml types and offsets. Everything is
//! validated while parsing, at least as strictly as llama.cpp's own reader; a malformed file gives
//! an [`Error`] naming the byte offset and what was found there — never a panic, never an
//! allocation larger than the input, never recursion.
//!
//! With the `mmap` feature, [`GgufFile::open`] maps a file and [`GgufModel::open`] opens a split
//! set (`name-00001-of-00009.gguf`) from any of its shards, checking every shard. [`ModelInfo`]
//! summarizes a model as llama.cpp describes it. [`GgufBuilder`] writes files (for tests, fuzz
//! seeds and benchmarks).
//!
//! ```
//! use cortex_gguf::{Gguf, GgufBuilder, GgmlType, OwnedValue};
//!
//! let bytes = GgufBuilder::new()
//!     .kv("general.architecture", "llama")
//!     .kv("llama.context_length", 8192u32)
//!     .kv("tokenizer.ggml.tokens", OwnedValue::strings(["<unk>", "<s>", "</s>"]))
//!     .tensor("token_embd.weight", [4096, 3], GgmlType::F16)
//!     .build();
//!
//! let gguf = Gguf::parse(&bytes)?;
//! assert_eq!(gguf.arch_get::<u64>("context_length")?, 8192);
//! let tokens = gguf.get::<cortex_gguf::Array<'_>>("tokenizer.ggml.tokens")?;
//! let tokens: Vec<&str> = tokens.typed::<&str>().flatten().collect();
//! assert_eq!(tokens, ["<unk>", "<s>", "</s>"]);
//!
//! // Truncated anywhere: an error with an offset, never a panic.
//! let err = Gguf::parse(&bytes[..40]).unwrap_err();
//! assert!(err.to_string().contains("at byte"));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Safety
//!
//! The parser is safe code that reads through a bounds-checked cursor, with
//! `clippy::indexing_slicing` and `clippy::arithmetic_side_effects` denied in this crate, the
//! estimator included (no module allows either): hostile metadata or options are an error naming
//! the key or flag, in debug and release alike. The only `unsafe` is the memory map of the `mmap`
//! feature (see [`GgufFile::open`]).
//!
//! # Feature flags
//!
//! | feature | default | what it adds |
//! |---------|---------|--------------|
//! | `mmap`  | no      | `GgufFile` and `GgufModel`, opening files and split sets by memory map (memmap2) |
//! | `nvml`  | no      | `NvmlInventory`: GPUs from the NVIDIA driver (nvml-wrapper; the library is loaded at run time) |
//! | `serde` | no      | `Serialize`/`Deserialize` for `Gpu` and `StaticInventory` (an inventory in a config file) |
//! | `full`  | no      | every feature above |
//!
//! # Minimum supported Rust version
//!
//! Rust 1.85, rolling, at least six months behind stable.

#![cfg_attr(docsrs, feature(doc_cfg))]
#![deny(clippy::indexing_slicing, clippy::arithmetic_side_effects)]

mod cursor;
mod error;
pub mod estimate;
#[cfg(feature = "mmap")]
#[cfg_attr(docsrs, doc(cfg(feature = "mmap")))]
mod file;
mod gguf;
mod info;
mod inventory;
mod split;
mod types;
mod writer;

pub use error::{Counted, Error};
#[cfg(all(fuzzing, feature = "mmap"))]
pub use file::fuzzing;
#[cfg(feature = "mmap")]
pub use file::{GgufFile, GgufModel, OpenError};
pub use gguf::{
    Array, ArrayIter, ByteOrder, DEFAULT_ALIGNMENT, FromValue, GetError, Gguf, Kv, MAX_ARRAY_LEN,
    MAX_DIMS, MAX_STRING_LEN, MAX_TENSOR_NAME, TensorInfo, Value,
};
pub use info::{FileType, ModelInfo, PerLayer, Rope, SwaPattern, ftype_name};
#[cfg(feature = "nvml")]
#[cfg_attr(docsrs, doc(cfg(feature = "nvml")))]
pub use inventory::NvmlInventory;
pub use inventory::{Gpu, GpuBackend, GpuInventory, InventoryError, StaticInventory};
pub use split::SplitName;
pub use types::{BlockLayout, GgmlType, ValueType};
pub use writer::{GgufBuilder, OwnedValue};
