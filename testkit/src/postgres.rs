//! A real PostgreSQL server for a test: Debian's binaries (installed by `scripts/setup`), a new
//! cluster in a temporary directory, a free loopback port; killed (the whole process group) and
//! removed when dropped.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The user the server runs as when the tests run as root (PostgreSQL refuses to run as root):
/// the one Debian's package creates.
const SERVER_USER: &str = "postgres";

/// A PostgreSQL server of its own. See the [module docs](self).
#[derive(Debug)]
pub struct Postgres {
    bin: PathBuf,
    dir: PathBuf,
    port: u16,
    as_user: bool,
    server: Option<Child>,
}

/// The directory of the newest installed PostgreSQL's programs.
fn bin_dir() -> PathBuf {
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("postgres").exists().then_some((version, bin))
        })
        .collect();
    found.sort();
    found.pop().map_or_else(
        || panic!("no /usr/lib/postgresql/*/bin/postgres: run scripts/setup (the README's test command does) to install the test parts"),
        |(_, bin)| bin,
    )
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.trim_ascii() == b"0")
}

impl Postgres {
    /// Creates a cluster (user `cortex`, trust authentication on loopback) and starts it.
    ///
    /// # Panics
    ///
    /// When PostgreSQL is not installed, or the cluster cannot be made or started.
    pub fn start() -> Self {
        let bin = bin_dir();
        let dir = std::env::temp_dir().join(format!(
            "cortex-pg-{}-{}",
            std::process::id(),
            crate::free_port()
        ));
        std::fs::create_dir_all(&dir).expect("a temporary directory");
        let as_user = is_root();
        if as_user {
            let status = Command::new("chown")
                .arg(format!("{SERVER_USER}:"))
                .arg(&dir)
                .status()
                .expect("chown");
            assert!(
                status.success(),
                "cannot give {} to {SERVER_USER}",
                dir.display()
            );
        }
        let mut this = Self {
            bin,
            dir,
            port: crate::free_port(),
            as_user,
            server: None,
        };
        let data = this.dir.join("data");
        let out = this
            .command("initdb")
            .args(["-U", "cortex", "--auth=trust", "-E", "UTF8", "-D"])
            .arg(&data)
            .output()
            .expect("initdb runs");
        assert!(
            out.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        this.restart();
        this
    }

    /// A program of the server's, run as the server's user.
    fn command(&self, program: &str) -> Command {
        let path = self.bin.join(program);
        if self.as_user {
            let mut c = Command::new("runuser");
            c.args(["-u", SERVER_USER, "--"]).arg(path);
            c
        } else {
            Command::new(path)
        }
    }

    /// Connection parameters for the `postgres` crate (`host=… port=… user=… dbname=…`).
    pub fn params(&self) -> String {
        format!(
            "host=127.0.0.1 port={} user=cortex dbname=postgres",
            self.port
        )
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The cluster's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Kills the server at once (SIGKILL to the postmaster, as a crash would).
    pub fn kill(&mut self) {
        let Some(mut server) = self.server.take() else {
            return;
        };
        // The postmaster itself, by the pid in its lock file: its parent (runuser, when root)
        // then exits and is reaped here. Killing runuser's group instead would orphan the
        // postmaster, and where nothing reaps orphans (a container's init) its zombie would look
        // alive to the next postmaster. Its children (in sessions of their own) see it die and
        // exit.
        let postmaster = std::fs::read_to_string(self.dir.join("data/postmaster.pid"))
            .ok()
            .and_then(|text| text.lines().next()?.trim().parse::<i32>().ok())
            .filter(|pid| *pid > 1);
        for pid in postmaster
            .into_iter()
            .chain(i32::try_from(server.id()).ok())
        {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        let _ = server.wait();
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok()
            && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Starts the server (again, after [`kill`](Self::kill): it recovers from its log) and
    /// waits until it accepts connections.
    ///
    /// # Panics
    ///
    /// When it does not accept connections within 60 s.
    pub fn restart(&mut self) {
        self.kill();
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut server = self.spawn();
        loop {
            let ready = Command::new(self.bin.join("pg_isready"))
                .args(["-q", "-h", "127.0.0.1", "-p", &self.port.to_string()])
                .status()
                .is_ok_and(|s| s.success());
            if ready {
                self.server = Some(server);
                return;
            }
            assert!(
                Instant::now() < deadline,
                "postgres did not accept connections in 60 s: {}",
                std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default()
            );
            // Refused at start (the killed server's children had not yet let go of its shared
            // memory, say): again, shortly.
            if server.try_wait().ok().flatten().is_some() {
                std::thread::sleep(Duration::from_millis(200));
                server = self.spawn();
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn spawn(&self) -> Child {
        let log = std::fs::File::create(self.dir.join("server.log")).expect("a log file");
        self.command("postgres")
            .arg("-D")
            .arg(self.dir.join("data"))
            .args(["-p", &self.port.to_string(), "-k"])
            .arg(&self.dir)
            // Only processes are killed here, never the machine: the OS keeps what was written.
            .args(["-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("postgres starts")
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
