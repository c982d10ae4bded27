//! File plumbing that every `rpn` tool shares, so that each of them fails the same safe way.
//!
//! - [`AtomicFile`] / [`write_atomic`]: an output file appears complete or not at all. The bytes
//!   go to a hidden temporary file in the destination's directory, are flushed to disk, and the
//!   temporary file is renamed over the destination. Whatever fails (a full disk, a killed
//!   process, an error in the caller), the old file survives. A destination that exists and is
//!   not a regular file (`/dev/null`, a directory, a FIFO) is refused rather than replaced, and
//!   a replaced file keeps its permissions.
//! - [`read_regular_file`]: inputs are regular files read to their length, so a path that is
//!   `/dev/zero`, a FIFO or a directory is an error, not an endless read.
//! - [`read_npy`]: NumPy `.npy` arrays as `f32`, every size in the header checked (with checked
//!   arithmetic) against the file's length *before* anything is allocated, so a 100-byte file
//!   that claims `(100000, 100000, 3)` is an error naming both sizes, not an abort.
//!
//! ```
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = std::env::temp_dir().join(format!("rpn-io-doc-{}", std::process::id()));
//! std::fs::create_dir_all(&dir)?;
//! let path = dir.join("report.json");
//! rpn_io::write_atomic(&path, b"{\"ok\": true}")?;
//! assert_eq!(std::fs::read(&path)?, b"{\"ok\": true}");
//!
//! // Several outputs: stage them all, then commit; an error before `commit` leaves nothing.
//! let mut a = rpn_io::AtomicFile::create(&dir.join("a.txt"))?;
//! a.write_all(b"first")?;
//! let b = rpn_io::AtomicFile::create(&dir.join("b.txt"))?;
//! std::fs::write(b.temp_path(), "second")?; // for writers that want a path
//! a.commit()?;
//! b.commit()?;
//! # std::fs::remove_dir_all(&dir)?;
//! # Ok(())
//! # }
//! ```

mod atomic;
mod input;
mod npy;

pub use atomic::{check_destination, check_writable_dir, write_atomic, AtomicFile, OutputError};
pub use input::{open_regular_file, read_regular_file, InputError};
pub use npy::{read_npy, NpyArray, NpyError};
