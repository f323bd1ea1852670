//! What the process runtime knows about its engines on disk, and what `/proc` says about them.
//!
//! A state directory holds one record per started engine (`<instance>.json`: pid, process group,
//! the leader's start time and boot, labels, address, log files), written before the start returns
//! and removed when the instance is stopped. A later runtime on the same directory (after a crash
//! or `SIGKILL` of the manager) reads them back, so nothing it started goes unnoticed. A process is
//! recognised as the recorded one only if its start time (clock ticks since boot, from
//! `/proc/PID/stat`) and the boot id match: a recycled pid is never taken for an engine.
//!
//! Written by hand: reading two fields of `/proc/PID/stat` does not justify a `/proc` crate.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};

/// Why a [`ProcessRuntime`](super::ProcessRuntime) could not use its state directory.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StateDirError {
    /// The directory, its lock or a record could not be created or read.
    #[error("cannot use {} as the process runtime's state directory: {source}", path.display())]
    Io {
        /// The directory.
        path: PathBuf,
        /// What failed.
        #[source]
        source: io::Error,
    },
    /// Another runtime holds the directory.
    #[error(
        "{} is in use by another manager{}; give each manager its own state directory",
        path.display(),
        holder.map(|p| format!(" (pid {p})")).unwrap_or_default()
    )]
    Locked {
        /// The directory.
        path: PathBuf,
        /// The holder's pid, as it wrote it in the lock file.
        holder: Option<u32>,
    },
    /// [`outlive_manager`](super::ProcessRuntimeBuilder::outlive_manager) was asked for without a
    /// state directory: nothing could find the engines again.
    #[error("engines that outlive the manager need a state directory to be found again")]
    NoStateDir,
}

/// A state directory, locked for one runtime while it lives.
pub(super) struct StateDir {
    pub(super) path: PathBuf,
    _lock: Flock<File>,
}

/// What is written about one engine.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct Record {
    pub(super) id: String,
    pub(super) pid: i32,
    pub(super) start_ticks: u64,
    pub(super) boot_id: String,
    pub(super) program: PathBuf,
    pub(super) base_url: String,
    pub(super) labels: BTreeMap<String, String>,
    /// Where its standard output and error go, when not to the manager's pipes.
    pub(super) logs: Option<[PathBuf; 2]>,
    /// Seconds since the Unix epoch.
    pub(super) started_at: u64,
}

impl StateDir {
    /// Creates (mode 0700) and locks `path`.
    pub(super) fn open(path: &Path) -> Result<Self, StateDirError> {
        use std::os::unix::fs::DirBuilderExt as _;
        let io = |source| StateDirError::Io {
            path: path.to_owned(),
            source,
        };
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(path)
            .map_err(io)?;
        let lock_path = path.join("lock");
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&lock_path)
            .map_err(io)?;
        let mut lock = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => lock,
            Err((_, nix::errno::Errno::EWOULDBLOCK)) => {
                let holder = std::fs::read_to_string(&lock_path)
                    .ok()
                    .and_then(|s| s.trim().parse().ok());
                return Err(StateDirError::Locked {
                    path: path.to_owned(),
                    holder,
                });
            }
            Err((_, e)) => return Err(io(e.into())),
        };
        lock.set_len(0).map_err(io)?;
        writeln!(lock, "{}", std::process::id()).map_err(io)?;
        Ok(Self {
            path: path.to_owned(),
            _lock: lock,
        })
    }

    fn record_path(&self, id: &str) -> PathBuf {
        self.path.join(format!("{id}.json"))
    }

    /// Where an engine's standard output and error go when it outlives the manager.
    pub(super) fn log_paths(&self, id: &str) -> [PathBuf; 2] {
        [
            self.path.join(format!("{id}.out")),
            self.path.join(format!("{id}.err")),
        ]
    }

    /// Writes `record` atomically (a temporary file renamed over the record).
    pub(super) fn write(&self, record: &Record) -> io::Result<()> {
        let path = self.record_path(&record.id);
        let temporary = path.with_extension("json.tmp");
        let mut file = File::create(&temporary)?;
        serde_json::to_writer_pretty(&mut file, record)?;
        file.sync_all()?;
        std::fs::rename(temporary, path)
    }

    /// Removes an engine's record and log files.
    pub(super) fn remove(&self, id: &str) -> io::Result<()> {
        for logs in self.log_paths(id) {
            match std::fs::remove_file(logs) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        match std::fs::remove_file(self.record_path(id)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    /// Every record in the directory; one that cannot be read is reported and left in place.
    pub(super) fn records(&self) -> Vec<Record> {
        let Ok(entries) = std::fs::read_dir(&self.path) else {
            return Vec::new();
        };
        let mut records = Vec::new();
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().is_none_or(|e| e != "json") {
                continue;
            }
            let read = std::fs::read(&path)
                .map_err(|e| e.to_string())
                .and_then(|bytes| {
                    serde_json::from_slice::<Record>(&bytes).map_err(|e| e.to_string())
                });
            match read {
                Ok(record) => records.push(record),
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "an unreadable engine record is left in place");
                }
            }
        }
        records
    }
}

/// This boot's id (`/proc/sys/kernel/random/boot_id`), empty where unreadable.
pub(super) fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

/// A process as `/proc/PID/stat` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Stat {
    pub(super) pgrp: i32,
    pub(super) start_ticks: u64,
    pub(super) zombie: bool,
}

/// Reads `/proc/PID/stat`: `None` when there is no such process.
pub(super) fn stat(pid: i32) -> Option<Stat> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(&text)
}

/// Parses a `/proc/PID/stat` line (the command name, in parentheses, may hold anything).
fn parse_stat(text: &str) -> Option<Stat> {
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_ascii_whitespace().collect();
    // Counting from field 3 (state): pgrp is field 5, starttime field 22.
    Some(Stat {
        zombie: matches!(*fields.first()?, "Z" | "X"),
        pgrp: fields.get(2)?.parse().ok()?,
        start_ticks: fields.get(19)?.parse().ok()?,
    })
}

/// Whether `pid` is the process that started at `start_ticks` in this boot, and not a zombie.
pub(super) fn is_alive(pid: i32, start_ticks: u64) -> bool {
    stat(pid).is_some_and(|s| s.start_ticks == start_ticks && !s.zombie)
}

/// The live members of process group `pgid` that started no earlier than its leader did: what
/// an engine left behind (its leader's children keep the group's id, which cannot be reused while
/// they live).
pub(super) fn members(pgid: i32, leader_start: u64) -> Vec<Pid> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| {
            stat(pid).is_some_and(|s| s.pgrp == pgid && s.start_ticks >= leader_start && !s.zombie)
        })
        .map(Pid::from_raw)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_lines_with_odd_command_names_parse() {
        let line = "4242 (llama (server) x) S 1 4242 4242 0 -1 4194560 1 0 0 0 0 0 0 0 20 0 3 0 987654 1000 100 0";
        assert_eq!(
            parse_stat(line),
            Some(Stat {
                pgrp: 4242,
                start_ticks: 987_654,
                zombie: false
            })
        );
        assert_eq!(
            parse_stat("7 (x) Z 1 9 9 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 5 0 0 0").map(|s| s.zombie),
            Some(true)
        );
        assert_eq!(parse_stat("garbage"), None);
        assert_eq!(parse_stat("1 (x) S 1"), None);
    }

    #[test]
    fn this_process_is_alive_and_alone_in_no_foreign_group() {
        let me = std::process::id().cast_signed();
        let s = stat(me).unwrap();
        assert!(is_alive(me, s.start_ticks));
        assert!(
            !is_alive(me, s.start_ticks + 1),
            "another start time is another process"
        );
        assert!(members(s.pgrp, 0).contains(&Pid::from_raw(me)));
    }

    #[test]
    fn a_directory_is_held_by_one_runtime_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let held = StateDir::open(dir.path()).unwrap();
        let err = StateDir::open(dir.path()).err().unwrap();
        assert!(
            matches!(&err, StateDirError::Locked { holder: Some(p), .. } if *p == std::process::id()),
            "{err}"
        );
        drop(held);
        StateDir::open(dir.path()).unwrap();
    }
}
