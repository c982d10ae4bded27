//! Reading input files: regular files only, read to their length.
//!
//! `std::fs::read` on `/dev/zero` (or a link to it named `weights.safetensors`) never ends and
//! grows its buffer until the process is killed; on a FIFO it blocks forever. Every input the
//! tools read whole goes through [`read_regular_file`], which refuses anything that is not a
//! regular file and reads at most the length the file system reports.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

/// Why an input file could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum InputError {
    /// A device, directory, FIFO or socket: not something to read as a file.
    #[error("{}: is {kind}, not a regular file", path.display())]
    NotARegularFile {
        /// The path given.
        path: PathBuf,
        /// What it is.
        kind: &'static str,
    },
    /// The operating system refused.
    #[error("{}: cannot read", path.display())]
    Io {
        /// The path given.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
}

/// Opens `path` for reading if it is a regular file (links are followed); returns the file
/// and its length.
pub fn open_regular_file(path: &Path) -> Result<(File, u64), InputError> {
    let io = |source| InputError::Io { path: path.to_path_buf(), source };
    let meta = std::fs::metadata(path).map_err(io)?;
    if !meta.is_file() {
        return Err(InputError::NotARegularFile {
            path: path.to_path_buf(),
            kind: crate::atomic::kind_of(&meta),
        });
    }
    let file = File::open(path).map_err(io)?;
    Ok((file, meta.len()))
}

/// The whole of a regular file (see the module docs).
pub fn read_regular_file(path: &Path) -> Result<Vec<u8>, InputError> {
    let (file, len) = open_regular_file(path)?;
    let mut bytes = Vec::new();
    // `take`: a file that grows while it is read still ends at its length.
    file.take(len)
        .read_to_end(&mut bytes)
        .map_err(|source| InputError::Io { path: path.to_path_buf(), source })?;
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(unix)]
    #[test]
    fn devices_and_directories_are_refused_without_reading() {
        for (path, kind) in [("/dev/zero", "a device"), ("/", "a directory")] {
            let err = read_regular_file(Path::new(path)).err();
            assert!(
                matches!(&err, Some(InputError::NotARegularFile { kind: k, .. }) if *k == kind),
                "{path}: {err:?}"
            );
        }
        let link =
            std::env::temp_dir().join(format!("rpn-io-zero-{}.safetensors", std::process::id()));
        let _ = std::fs::remove_file(&link);
        if std::os::unix::fs::symlink("/dev/zero", &link).is_ok() {
            let err = read_regular_file(&link).err().map(|e| e.to_string()).unwrap_or_default();
            assert!(err.contains("a device"), "{err}");
            let _ = std::fs::remove_file(&link);
        }
    }

    #[test]
    fn regular_files_are_read_whole() {
        let path = std::env::temp_dir().join(format!("rpn-io-read-{}", std::process::id()));
        let written = std::fs::write(&path, b"twelve bytes");
        assert!(written.is_ok());
        assert_eq!(read_regular_file(&path).ok().as_deref(), Some(&b"twelve bytes"[..]));
        let _ = std::fs::remove_file(&path);
        let err = read_regular_file(&path).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err.contains("cannot read"), "{err}");
    }
}
