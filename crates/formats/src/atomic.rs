//! Atomic file replacement: a reader of the target path sees the old file or the new one,
//! never a half-written one, whatever happens to the writer.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Distinguishes temporary files of concurrent writers within one process.
static COUNTER: AtomicU64 = AtomicU64::new(0);

/// Writes `bytes` to `path` atomically.
///
/// The bytes go to a new temporary file `.<name>.tmp.<pid>.<counter>` in the same directory
/// (so the final rename never crosses file systems), which is flushed to disk and then renamed
/// over `path`; the directory is synced afterwards where the platform allows. On any failure
/// the temporary file is removed and an existing `path` is left untouched.
pub fn write_atomic(path: impl AsRef<Path>, bytes: &[u8]) -> io::Result<()> {
    let path = path.as_ref();
    let name = path.file_name().ok_or_else(|| {
        io::Error::new(io::ErrorKind::InvalidInput, format!("`{}` does not name a file", path.display()))
    })?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    remove_stale_temps(&dir, &name.to_string_lossy());
    let (tmp, file) = create_temp(&dir, &name.to_string_lossy())?;
    match fill_and_rename(file, &tmp, path, bytes) {
        Ok(()) => {
            sync_dir(&dir);
            Ok(())
        }
        Err(e) => {
            // Best effort: the write already failed, a failed clean-up must not hide why.
            let _ = fs::remove_file(&tmp);
            Err(e)
        }
    }
}

/// Removes the temporary files `.<name>.tmp.<pid>.<n>` of the same target left by writers
/// that died before renaming them (a SIGKILL during a checkpoint write): those of a process
/// that no longer exists (Linux: no `/proc/<pid>`; elsewhere: older than a day). Another
/// live process's, and this process's own, are left alone. Best effort: a failure to list or
/// remove never fails the write.
pub fn remove_stale_temps(dir: &Path, name: &str) {
    let prefix = format!(".{name}.tmp.");
    let own = std::process::id();
    let Ok(entries) = fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let file_name = entry.file_name();
        let Some(rest) = file_name.to_str().and_then(|n| n.strip_prefix(&prefix)) else { continue };
        let mut parts = rest.split('.');
        let (Some(pid), Some(n), None) = (parts.next(), parts.next(), parts.next()) else { continue };
        let (Ok(pid), Ok(_)) = (pid.parse::<u32>(), n.parse::<u64>()) else { continue };
        if pid != own && !process_alive(pid, &entry) {
            let _ = fs::remove_file(entry.path());
        }
    }
}

/// Whether the writer `pid` of the temporary file `entry` may still be running.
fn process_alive(pid: u32, entry: &fs::DirEntry) -> bool {
    if cfg!(target_os = "linux") {
        return Path::new("/proc").join(pid.to_string()).exists();
    }
    let age = entry.metadata().and_then(|m| m.modified()).ok().and_then(|t| t.elapsed().ok());
    age.is_none_or(|a| a < std::time::Duration::from_secs(24 * 3600))
}

/// Creates a fresh temporary file next to the target, never reusing an existing name.
fn create_temp(dir: &Path, name: &str) -> io::Result<(PathBuf, File)> {
    let pid = std::process::id();
    loop {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let tmp = dir.join(format!(".{name}.tmp.{pid}.{n}"));
        match OpenOptions::new().write(true).create_new(true).open(&tmp) {
            Ok(f) => return Ok((tmp, f)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
}

fn fill_and_rename(mut file: File, tmp: &Path, path: &Path, bytes: &[u8]) -> io::Result<()> {
    file.write_all(bytes)?;
    file.sync_all()?;
    drop(file);
    fs::rename(tmp, path)
}

/// Makes the rename durable (Unix); directories cannot be opened for syncing everywhere, and
/// the data itself is already on disk, so failures are ignored.
fn sync_dir(dir: &Path) {
    #[cfg(unix)]
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
    #[cfg(not(unix))]
    let _ = dir;
}
