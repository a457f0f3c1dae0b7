//! `--spawn-workers N`: local `meta-worker` child processes on loopback (the single-node
//! multi-process mode). The children are killed and reaped when the guard drops: at the end
//! of training, on error and after SIGINT.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use anyhow::{Context, anyhow};

/// Running child workers.
pub struct SpawnedWorkers {
    children: Vec<Child>,
}

/// The `meta-worker` binary: next to this executable, else on `PATH`.
pub fn worker_binary() -> PathBuf {
    let name = format!("meta-worker{}", std::env::consts::EXE_SUFFIX);
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|d| d.join(&name)))
        .filter(|p| p.exists())
        .unwrap_or_else(|| PathBuf::from(name))
}

impl SpawnedWorkers {
    /// Starts `n` workers connecting to `addr` with `token`, `threads` engine threads each, on
    /// `device` (`cpu`, `emu`, or `cuda`: worker `i` on `cuda:i`).
    pub fn start(n: usize, addr: &str, token: &str, threads: usize, device: &str) -> anyhow::Result<Self> {
        let bin = worker_binary();
        let mut children = Vec::with_capacity(n);
        for i in 0..n {
            let child = Command::new(&bin)
                .args(["--coord", addr, "--threads", &threads.to_string(), "--give-up-after", "30"])
                .args(["--name", &format!("local-{i}")])
                .args(["--device", &if device == "cuda" { format!("cuda:{i}") } else { device.to_string() }])
                .env("METASCHED_TOKEN", token)
                .stdin(Stdio::null())
                .spawn()
                .with_context(|| {
                    format!(
                        "cannot start {} (build it with `cargo build -p metasched-worker`)",
                        bin.display()
                    )
                })?;
            children.push(child);
        }
        tracing::info!(n, bin = %bin.display(), "spawned local workers");
        Ok(Self { children })
    }

    /// Checks that no child has exited with an error yet.
    pub fn check(&mut self) -> anyhow::Result<()> {
        for c in &mut self.children {
            if let Some(status) = c.try_wait()?
                && !status.success()
            {
                return Err(anyhow!("a spawned worker exited with {status}"));
            }
        }
        Ok(())
    }
}

impl Drop for SpawnedWorkers {
    fn drop(&mut self) {
        for c in &mut self.children {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
            // Give a worker that was told to stop a moment to exit by itself.
            while std::time::Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
