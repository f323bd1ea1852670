//! Split sets (`name-00001-of-00003.gguf`, …) opened from any shard, and each way a set can be broken.

use std::path::{Path, PathBuf};

use cortex_gguf::{GgmlType, GgufBuilder, GgufModel, OpenError};

struct Dir(PathBuf);

impl Dir {
    fn new(name: &str) -> Self {
        let dir =
            std::env::temp_dir().join(format!("cortex-gguf-split-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    fn shard(&self, no: u32, count: u32) -> PathBuf {
        self.0.join(format!("model-{no:05}-of-{count:05}.gguf"))
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Shard `no` (from 1) of `count`, holding `tensors`; the first also the model's metadata.
fn shard(no: u32, count: u32, total_tensors: u64, tensors: &[&str]) -> GgufBuilder {
    let mut b = GgufBuilder::new()
        .kv("split.no", u16::try_from(no - 1).unwrap())
        .kv("split.count", u16::try_from(count).unwrap())
        .kv("split.tensors.count", i32::try_from(total_tensors).unwrap());
    if no == 1 {
        b = b
            .kv("general.architecture", "llama")
            .kv("llama.block_count", 2u32);
    }
    for t in tensors {
        b = b.tensor(*t, [32, 4], GgmlType::Q8_0);
    }
    b
}

fn write(path: &Path, b: &GgufBuilder) {
    std::fs::write(path, b.build()).unwrap();
}

fn valid_set(dir: &Dir) {
    write(&dir.shard(1, 3), &shard(1, 3, 5, &["token_embd.weight"]));
    write(
        &dir.shard(2, 3),
        &shard(2, 3, 5, &["blk.0.attn_q.weight", "blk.0.attn_k.weight"]),
    );
    write(
        &dir.shard(3, 3),
        &shard(3, 3, 5, &["blk.1.attn_q.weight", "output.weight"]),
    );
}

#[test]
fn opens_from_any_shard_with_one_tensor_view() {
    let dir = Dir::new("ok");
    valid_set(&dir);
    for no in 1..=3 {
        let model = GgufModel::open(dir.shard(no, 3)).unwrap();
        assert_eq!(model.shard_count(), 3);
        assert_eq!(model.tensors().count(), 5);
        assert_eq!(
            model.tensor("output.weight").unwrap().0,
            2,
            "in the third shard"
        );
        assert_eq!(
            model.gguf().architecture(),
            Some("llama"),
            "metadata of the first shard"
        );
        let info = model.info();
        assert_eq!(info.parameters, 5 * 32 * 4, "parameters of every shard");
        assert_eq!(info.tensor_types, [(GgmlType::Q8_0, 5)]);
    }
}

#[test]
fn a_missing_shard_is_named() {
    let dir = Dir::new("missing");
    valid_set(&dir);
    std::fs::remove_file(dir.shard(2, 3)).unwrap();
    let err = GgufModel::open(dir.shard(3, 3)).unwrap_err();
    assert!(
        matches!(&err, OpenError::MissingShard { missing, count: 3, .. } if *missing == dir.shard(2, 3)),
        "{err}"
    );
    assert!(
        err.to_string()
            .contains("model-00002-of-00003.gguf is missing"),
        "{err}"
    );
}

#[test]
fn shards_that_disagree_are_refused() {
    type Break = Box<dyn Fn(&Dir)>;
    let cases: [(&str, Break, &str); 4] = [
        (
            "wrong-no",
            Box::new(|d: &Dir| {
                write(
                    &d.shard(2, 3),
                    &shard(3, 3, 5, &["blk.0.attn_q.weight", "blk.0.attn_k.weight"]),
                );
            }),
            "split.no is 2, the name says 1",
        ),
        (
            "wrong-count",
            Box::new(|d: &Dir| {
                write(
                    &d.shard(3, 3),
                    &shard(3, 4, 5, &["blk.1.attn_q.weight", "output.weight"]),
                );
            }),
            "split.count is 4, the name says 3",
        ),
        (
            "wrong-total",
            Box::new(|d: &Dir| write(&d.shard(1, 3), &shard(1, 3, 9, &["token_embd.weight"]))),
            "split.tensors.count is 9, but the shards hold 5 tensors",
        ),
        (
            "duplicate",
            Box::new(|d: &Dir| {
                write(
                    &d.shard(3, 3),
                    &shard(3, 3, 5, &["blk.0.attn_q.weight", "output.weight"]),
                );
            }),
            "tensor \"blk.0.attn_q.weight\" is also in shard 2",
        ),
    ];
    for (name, break_it, expected) in cases {
        let dir = Dir::new(name);
        valid_set(&dir);
        break_it(&dir);
        let err = GgufModel::open(dir.shard(1, 3)).unwrap_err();
        assert!(matches!(err, OpenError::BadShard { .. }), "{name}: {err}");
        assert!(err.to_string().contains(expected), "{name}: {err}");
    }
}

#[test]
fn a_shard_renamed_as_a_single_file_is_refused() {
    let dir = Dir::new("renamed");
    let path = dir.0.join("model.gguf");
    write(&path, &shard(1, 3, 5, &["token_embd.weight"]));
    let err = GgufModel::open(&path).unwrap_err();
    assert!(
        err.to_string()
            .contains("split.count is 3, but the name is not of the form"),
        "{err}"
    );
}

#[test]
fn unreadable_and_invalid_files_name_the_file() {
    let dir = Dir::new("bad");
    let missing = dir.0.join("nope.gguf");
    let err = GgufModel::open(&missing).unwrap_err();
    assert!(matches!(err, OpenError::Io { .. }));
    assert!(err.to_string().contains("nope.gguf"));
    let empty = dir.0.join("empty.gguf");
    std::fs::write(&empty, b"").unwrap();
    let err = GgufModel::open(&empty).unwrap_err();
    assert!(
        matches!(err, OpenError::Parse { .. } | OpenError::Io { .. }),
        "{err}"
    );
    let junk = dir.0.join("junk.gguf");
    std::fs::write(&junk, b"GGUF\x03\x00\x00\x00").unwrap();
    let err = GgufModel::open(&junk).unwrap_err();
    let source = std::error::Error::source(&err).unwrap().to_string();
    assert_eq!(
        source,
        "unexpected end of input at byte 8: 8 bytes needed, 0 left"
    );
}
