//! Child processes of a control plane, and the reaper that guarantees none outlives the test
//! binary that started it.
//!
//! Every control-plane process is started in one process group whose leader is a small `sh`
//! reaper. The reaper polls the parent (the test binary) and, once the parent is gone, signals the
//! whole group (SIGTERM, then SIGKILL) and removes the control plane's temporary directory. That
//! covers what `Drop` cannot: a shared control plane lives in a `static`, which is never dropped,
//! and a test binary that panics or is killed runs no destructor at all.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;

use crate::Error;

const REAPER: &str = r#"
trap '' TERM INT HUP
parent=$1; dir=$2
while kill -0 "$parent" 2>/dev/null; do sleep 0.3; done
kill -TERM -$$ 2>/dev/null
sleep 2
rm -rf "$dir" 2>/dev/null
kill -KILL -$$ 2>/dev/null
"#;

/// The reaper process: the leader of the control plane's process group.
#[derive(Debug)]
pub struct Reaper {
    child: Child,
}

impl Reaper {
    /// Starts a reaper that tears down its process group and `dir` when this process exits.
    pub fn start(dir: &Path) -> Result<Self, Error> {
        let child = Command::new("sh")
            .arg("-c")
            .arg(REAPER)
            .arg("epslice-envtest-reaper")
            .arg(std::process::id().to_string())
            .arg(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .map_err(|e| Error::Io("starting the reaper (sh)".into(), e))?;
        Ok(Reaper { child })
    }

    /// The process group every component joins.
    pub fn pgid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Stops the reaper (after the components were stopped by their owner).
    pub fn stop(&mut self) {
        let _ = kill(Pid::from_raw(self.child.id() as i32), Signal::SIGKILL);
        let _ = self.child.wait();
    }
}

impl Drop for Reaper {
    fn drop(&mut self) {
        self.stop();
    }
}

/// One running control-plane process (etcd, kube-apiserver, kwok, kube-controller-manager …).
///
/// Dropping it stops the process: SIGTERM, then SIGKILL after a grace period.
#[derive(Debug)]
pub struct Component {
    name: String,
    child: Option<Child>,
    log: PathBuf,
}

impl Component {
    /// Spawns `cmd` into the reaper's process group, with stdout and stderr appended to `log`
    /// (or inherited when `attach` is set).
    pub fn spawn(name: &str, mut cmd: Command, log: PathBuf, pgid: i32, attach: bool) -> Result<Self, Error> {
        if attach {
            cmd.stdout(Stdio::inherit()).stderr(Stdio::inherit());
        } else {
            let out = File::options()
                .create(true)
                .append(true)
                .open(&log)
                .map_err(|e| Error::Io(format!("opening {}", log.display()), e))?;
            let err = out.try_clone().map_err(|e| Error::Io("dup log file".into(), e))?;
            cmd.stdout(out).stderr(err);
        }
        cmd.stdin(Stdio::null()).process_group(pgid);
        let child = cmd.spawn().map_err(|e| Error::Io(format!("starting {name} ({:?})", cmd.get_program()), e))?;
        Ok(Component { name: name.to_string(), child: Some(child), log })
    }

    /// The component's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The log file.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// The last `max_bytes` of the log, for error messages.
    pub fn log_tail(&self, max_bytes: u64) -> String {
        log_tail(&self.log, max_bytes)
    }

    /// `Some(status)` if the process has exited.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.as_mut().and_then(|c| c.try_wait().ok().flatten())
    }

    /// Stops the process: SIGTERM, up to `grace`, then SIGKILL. Idempotent.
    pub fn stop_with(&mut self, grace: Duration) {
        let Some(mut child) = self.child.take() else { return };
        let pid = Pid::from_raw(child.id() as i32);
        if child.try_wait().ok().flatten().is_none() {
            let _ = kill(pid, Signal::SIGTERM);
            let deadline = Instant::now() + grace;
            while Instant::now() < deadline {
                if child.try_wait().ok().flatten().is_some() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = kill(pid, Signal::SIGKILL);
        }
        let _ = child.wait();
    }

    /// Stops the process at once with SIGKILL (a crash, for failover tests).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops the process gracefully (5 s grace).
    pub fn stop(&mut self) {
        self.stop_with(Duration::from_secs(5));
    }
}

impl Drop for Component {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Kills a whole process group (used when a control plane is dropped).
pub fn kill_group(pgid: i32) {
    let _ = killpg(Pid::from_raw(pgid), Signal::SIGKILL);
}

/// The last `max_bytes` of a file, lossily decoded.
pub fn log_tail(path: &Path, max_bytes: u64) -> String {
    let Ok(mut f) = File::open(path) else { return format!("(no log at {})", path.display()) };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = f.seek(SeekFrom::Start(len.saturating_sub(max_bytes)));
    let mut buf = Vec::new();
    let _ = f.read_to_end(&mut buf);
    String::from_utf8_lossy(&buf).into_owned()
}
