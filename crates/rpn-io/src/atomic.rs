//! Atomic output files: temporary file beside the destination, fsync, rename.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Why an output file could not be written. The destination is untouched in every case.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OutputError {
    /// The destination exists and is a device, directory, FIFO, socket or dangling link:
    /// replacing it by a regular file would destroy it, and writing into it is not atomic.
    #[error("{}: exists and is not a regular file ({kind}); refusing to replace it", path.display())]
    NotARegularFile {
        /// The destination.
        path: PathBuf,
        /// What it is instead.
        kind: &'static str,
    },
    /// The operating system refused (no directory, no permission, disk full, …).
    #[error("{}: {operation}", path.display())]
    Io {
        /// The destination (or the directory being checked).
        path: PathBuf,
        /// What was being done.
        operation: &'static str,
        /// The operating system's error.
        source: std::io::Error,
    },
}

impl OutputError {
    fn io<'a>(path: &'a Path, operation: &'static str) -> impl FnOnce(std::io::Error) -> Self + 'a {
        move |source| Self::Io { path: path.to_path_buf(), operation, source }
    }
}

/// What a non-regular file system entry is, for error messages.
pub(crate) fn kind_of(meta: &std::fs::Metadata) -> &'static str {
    let ft = meta.file_type();
    if ft.is_dir() {
        return "a directory";
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if ft.is_char_device() || ft.is_block_device() {
            return "a device";
        }
        if ft.is_fifo() {
            return "a FIFO";
        }
        if ft.is_socket() {
            return "a socket";
        }
    }
    "not a regular file"
}

/// The file an output to `path` really replaces: `path` itself, or the regular file a symbolic
/// link points to (the link stays a link). Refuses anything that exists and is not a regular
/// file, and dangling links. `Ok(None)` metadata: the destination does not exist yet.
fn resolve(path: &Path) -> Result<(PathBuf, Option<std::fs::Metadata>), OutputError> {
    let link = match std::fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok((path.to_path_buf(), None))
        }
        Err(e) => return Err(OutputError::io(path, "cannot inspect the destination")(e)),
    };
    let (target, meta) = if link.file_type().is_symlink() {
        let target = std::fs::canonicalize(path).map_err(|_| OutputError::NotARegularFile {
            path: path.to_path_buf(),
            kind: "a dangling symbolic link",
        })?;
        let meta = std::fs::metadata(&target)
            .map_err(OutputError::io(path, "cannot inspect the link's target"))?;
        (target, meta)
    } else {
        (path.to_path_buf(), link)
    };
    if !meta.file_type().is_file() {
        return Err(OutputError::NotARegularFile {
            path: path.to_path_buf(),
            kind: kind_of(&meta),
        });
    }
    Ok((target, Some(meta)))
}

/// Refuses `path` as an output before any work is done: it must be a regular file or not
/// exist, and its directory must exist and accept new files (checked by creating and removing
/// a temporary file there).
pub fn check_destination(path: &Path) -> Result<(), OutputError> {
    AtomicFile::create(path).map(drop)
}

/// Checks that `dir` exists (or can be created) and accepts new files: what a long run checks
/// before its first step, so that a read-only run directory is found in a second, not after
/// hours of training.
pub fn check_writable_dir(dir: &Path) -> Result<(), OutputError> {
    std::fs::create_dir_all(dir).map_err(OutputError::io(dir, "cannot create the directory"))?;
    let probe = temp_name(&dir.join("write-check"));
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&probe)
        .map_err(OutputError::io(dir, "cannot create files in the directory"))?;
    drop(file);
    let _ = std::fs::remove_file(&probe);
    Ok(())
}

/// Writes `bytes` to `path` atomically (see [`AtomicFile`]).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), OutputError> {
    let mut file = AtomicFile::create(path)?;
    file.write_all(bytes)?;
    file.commit()
}

/// Distinguishes temporary files of one process (several outputs staged at once).
static COUNTER: AtomicU64 = AtomicU64::new(0);

/// `.rpn-tmp-PID-N-NAME` beside `path`: hidden, unique per process and call, and ending in
/// the destination's extension (image encoders choose the format by it).
fn temp_name(path: &Path) -> PathBuf {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    path.with_file_name(format!(".rpn-tmp-{}-{n}-{name}", std::process::id()))
}

/// An output file being written: the bytes go to a temporary file in the destination's
/// directory; [`commit`](Self::commit) flushes it to disk and renames it over the destination.
/// Dropped without `commit` (an error, a panic, a second output that failed), the temporary
/// file is removed and the destination never changed.
///
/// The destination is checked when the file is created, before the caller computes anything
/// expensive: it must be a regular file or not exist (a symbolic link to a regular file is
/// followed, and stays a link), and its directory must accept new files. A replaced file
/// keeps its permission bits; a new one gets the usual `0666 & !umask`.
#[derive(Debug)]
pub struct AtomicFile {
    destination: PathBuf,
    temp: PathBuf,
    file: Option<File>,
    permissions: Option<std::fs::Permissions>,
}

impl AtomicFile {
    /// Checks `path` and opens the temporary file beside it.
    pub fn create(path: &Path) -> Result<Self, OutputError> {
        let (destination, existing) = resolve(path)?;
        let temp = temp_name(&destination);
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&temp)
            .map_err(OutputError::io(path, "cannot create a file in its directory"))?;
        Ok(Self {
            destination,
            temp,
            file: Some(file),
            permissions: existing.map(|m| m.permissions()),
        })
    }

    /// The temporary file, for writers that take a path (image encoders, `.npz` writers).
    /// Whatever is at this path when [`commit`](Self::commit) runs becomes the destination.
    pub fn temp_path(&self) -> &Path {
        &self.temp
    }

    /// The file being replaced or created (a symbolic link resolved).
    pub fn destination(&self) -> &Path {
        &self.destination
    }

    /// Appends `bytes` to the temporary file.
    pub fn write_all(&mut self, bytes: &[u8]) -> Result<(), OutputError> {
        let file = match &mut self.file {
            Some(f) => f,
            None => return Err(OutputError::io(&self.destination, "cannot write")(closed())),
        };
        file.write_all(bytes).map_err(OutputError::io(&self.destination, "cannot write"))
    }

    /// Flushes the temporary file to disk and renames it over the destination (then flushes
    /// the directory, so the rename survives a power cut on POSIX file systems).
    pub fn commit(mut self) -> Result<(), OutputError> {
        let path = self.destination.clone();
        let write_err = |op| OutputError::io(&path, op);
        // A writer that went through `temp_path` may have replaced the file: sync what is there.
        drop(self.file.take());
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&self.temp)
            .map_err(write_err("cannot reopen the temporary file"))?;
        if let Some(permissions) = self.permissions.take() {
            file.set_permissions(permissions).map_err(write_err("cannot keep the permissions"))?;
        }
        file.sync_all().map_err(write_err("cannot write (flush to disk)"))?;
        drop(file);
        std::fs::rename(&self.temp, &self.destination).map_err(write_err("cannot replace"))?;
        sync_directory(&self.destination);
        // Renamed: nothing left for `Drop` to remove.
        self.temp = PathBuf::new();
        Ok(())
    }
}

impl Drop for AtomicFile {
    fn drop(&mut self) {
        if !self.temp.as_os_str().is_empty() {
            drop(self.file.take());
            let _ = std::fs::remove_file(&self.temp);
        }
    }
}

fn closed() -> std::io::Error {
    std::io::Error::other("the temporary file is closed")
}

#[cfg(unix)]
fn sync_directory(file: &Path) {
    // Best effort: the data is already on disk; this makes the new name durable.
    if let Some(dir) = file.parent().filter(|d| !d.as_os_str().is_empty()) {
        if let Ok(d) = File::open(dir) {
            let _ = d.sync_all();
        }
    }
}

#[cfg(not(unix))]
fn sync_directory(_file: &Path) {}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("rpn-io-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        dir
    }

    fn entries(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .map(|r| r.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
            .unwrap_or_default();
        names.sort();
        names
    }

    #[test]
    fn an_uncommitted_file_leaves_the_old_one_and_no_temporary() -> Result<(), OutputError> {
        let dir = scratch("drop");
        let path = dir.join("out.json");
        write_atomic(&path, b"old")?;
        {
            let mut f = AtomicFile::create(&path)?;
            f.write_all(b"new but never committed")?;
        }
        assert_eq!(std::fs::read(&path).ok().as_deref(), Some(&b"old"[..]));
        assert_eq!(entries(&dir), ["out.json"]);
        Ok(())
    }

    #[test]
    fn commit_replaces_and_keeps_permissions() -> Result<(), OutputError> {
        let dir = scratch("perm");
        let path = dir.join("w.safetensors");
        write_atomic(&path, b"old")?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640))
                .map_err(OutputError::io(&path, "chmod"))?;
        }
        write_atomic(&path, b"new")?;
        assert_eq!(std::fs::read(&path).ok().as_deref(), Some(&b"new"[..]));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).map(|m| m.permissions().mode() & 0o777).ok();
            assert_eq!(mode, Some(0o640));
        }
        assert_eq!(entries(&dir), ["w.safetensors"]);
        Ok(())
    }

    #[cfg(unix)]
    #[test]
    fn new_files_get_the_umask_permissions_not_0600() -> Result<(), OutputError> {
        use std::os::unix::fs::PermissionsExt;
        let dir = scratch("umask");
        let path = dir.join("new.json");
        write_atomic(&path, b"x")?;
        let mode = std::fs::metadata(&path).map(|m| m.permissions().mode() & 0o777).unwrap_or(0);
        // Whatever the umask, a plain `File::create` gets the same bits.
        let plain = dir.join("plain");
        std::fs::write(&plain, b"x").map_err(OutputError::io(&plain, "write"))?;
        let expected = std::fs::metadata(&plain).map(|m| m.permissions().mode() & 0o777).ok();
        assert_eq!(Some(mode), expected);
        Ok(())
    }

    #[test]
    fn directories_and_devices_are_refused_untouched() {
        let dir = scratch("dir");
        let err = write_atomic(&dir, b"x").err();
        assert!(
            matches!(err, Some(OutputError::NotARegularFile { kind: "a directory", .. })),
            "{err:?}"
        );
        #[cfg(unix)]
        {
            let null = Path::new("/dev/null");
            let err = write_atomic(null, b"x").err();
            assert!(
                matches!(err, Some(OutputError::NotARegularFile { kind: "a device", .. })),
                "{err:?}"
            );
            let text = err.map(|e| e.to_string()).unwrap_or_default();
            assert!(text.contains("/dev/null") && text.contains("refusing"), "{text}");
        }
    }

    #[cfg(unix)]
    #[test]
    fn a_link_to_a_file_stays_a_link_and_a_dangling_link_is_refused() -> Result<(), OutputError> {
        let dir = scratch("link");
        let real = dir.join("real.json");
        write_atomic(&real, b"old")?;
        let link = dir.join("link.json");
        std::os::unix::fs::symlink(&real, &link).map_err(OutputError::io(&link, "symlink"))?;
        write_atomic(&link, b"new")?;
        assert_eq!(std::fs::read(&real).ok().as_deref(), Some(&b"new"[..]));
        assert!(std::fs::symlink_metadata(&link).is_ok_and(|m| m.file_type().is_symlink()));
        let dangling = dir.join("dangling.json");
        std::os::unix::fs::symlink(dir.join("nowhere"), &dangling)
            .map_err(OutputError::io(&dangling, "symlink"))?;
        assert!(matches!(
            write_atomic(&dangling, b"x"),
            Err(OutputError::NotARegularFile { kind: "a dangling symbolic link", .. })
        ));
        Ok(())
    }

    #[test]
    fn a_missing_directory_is_named() {
        let dir = scratch("missing");
        let path = dir.join("no/such/dir/out.json");
        let err = check_destination(&path).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err.contains("no/such/dir/out.json"), "{err}");
        assert!(check_writable_dir(&dir.join("made/by/check")).is_ok());
        assert!(dir.join("made/by/check").is_dir());
        assert!(entries(&dir.join("made/by/check")).is_empty());
    }

    #[test]
    fn writers_that_take_a_path_replace_the_temporary_file() -> Result<(), OutputError> {
        let dir = scratch("path");
        let path = dir.join("picture.png");
        let f = AtomicFile::create(&path)?;
        // Encoders often `File::create` their path, truncating what `create` opened.
        std::fs::write(f.temp_path(), b"encoded").map_err(OutputError::io(&path, "write"))?;
        assert!(!path.exists());
        f.commit()?;
        assert_eq!(std::fs::read(&path).ok().as_deref(), Some(&b"encoded"[..]));
        assert_eq!(entries(&dir), ["picture.png"]);
        Ok(())
    }
}
