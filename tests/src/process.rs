//! Process helpers shared by the fixtures.

use std::net::TcpListener;
use std::process::{Command, Stdio};

/// A free TCP port on 127.0.0.1 (bound, then released for the server).
pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("binding a loopback port");
    l.local_addr().expect("local address").port()
}

/// Runs `cleanup` (a shell snippet) once this process has exited, whatever
/// way it exits. The reaper is detached into its own session so it outlives
/// us, and polls our pid once a second.
pub fn reap_after_exit(cleanup: &str) {
    let pid = std::process::id();
    let script = format!("while kill -0 {pid} 2>/dev/null; do sleep 1; done; {cleanup}");
    let spawned = Command::new("setsid").args(["sh", "-c", &script]).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null()).spawn();
    if let Err(e) = spawned {
        eprintln!("warning: could not start the cleanup reaper ({e}); run `{cleanup}` by hand");
    }
}

/// Whether this process runs as root (PostgreSQL refuses to).
pub fn is_root() -> bool {
    Command::new("id").arg("-u").output().map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0").unwrap_or(false)
}

/// Single-quotes a string for `sh`.
pub fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}
