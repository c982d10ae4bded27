//! NumPy `.npy` arrays read as `f32`, sizes checked before allocation.
//!
//! The format (numpy.lib.format): `\x93NUMPY`, a version (1.0: u16 header length; 2.0 and 3.0:
//! u32), a Python-literal dict `{'descr': '<f4', 'fortran_order': False, 'shape': (1, 64, 64, 3), }`
//! padded with spaces to a multiple of 64 bytes, then the raw data in C order.

use std::io::Read;
use std::path::{Path, PathBuf};

/// An `.npy` array converted to `f32`, row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct NpyArray {
    /// Dimensions as stored (may contain zeros; callers decide whether they make sense).
    pub shape: Vec<usize>,
    /// `shape.iter().product()` values.
    pub data: Vec<f32>,
}

/// Why an `.npy` file cannot be read. Every variant names the file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NpyError {
    /// Not a regular file, or it could not be opened.
    #[error(transparent)]
    Input(#[from] crate::InputError),
    /// The file could not be read.
    #[error("{}: cannot read", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// Not an `.npy` file, or a header this reader does not understand.
    #[error("{}: not a NumPy .npy array: {message}", path.display())]
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The header declares more (or fewer) values than the file holds.
    #[error(
        "{}: the header declares shape {shape:?} of {descr} ({declared} bytes) but the file holds \
         {available} bytes of data",
        path.display()
    )]
    Size {
        /// The file.
        path: PathBuf,
        /// The declared shape.
        shape: Vec<u64>,
        /// The declared dtype.
        descr: String,
        /// Bytes the header asks for (saturated at `u64::MAX` when it overflows).
        declared: u64,
        /// Bytes after the header.
        available: u64,
    },
}

/// Element types read (converted to `f32`).
#[derive(Debug, Clone, Copy)]
enum Element {
    F32,
    F64,
    I8,
    U8,
    I16,
    U16,
    I32,
    U32,
    I64,
    U64,
    Bool,
}

impl Element {
    fn size(self) -> usize {
        match self {
            Self::I8 | Self::U8 | Self::Bool => 1,
            Self::I16 | Self::U16 => 2,
            Self::F32 | Self::I32 | Self::U32 => 4,
            Self::F64 | Self::I64 | Self::U64 => 8,
        }
    }

    /// `'<f4'` → (F32, little endian). `|` and `=` mean "no order" / native (little here).
    fn parse(descr: &str) -> Option<(Self, bool)> {
        let (order, code) = descr.split_at_checked(1)?;
        let little = match order {
            "<" | "|" | "=" => true,
            ">" => false,
            _ => return None,
        };
        let element = match code {
            "f4" => Self::F32,
            "f8" => Self::F64,
            "i1" => Self::I8,
            "u1" => Self::U8,
            "i2" => Self::I16,
            "u2" => Self::U16,
            "i4" => Self::I32,
            "u4" => Self::U32,
            "i8" => Self::I64,
            "u8" => Self::U64,
            "b1" => Self::Bool,
            _ => return None,
        };
        Some((element, little))
    }

    fn decode(self, b: &[u8], little: bool) -> f32 {
        macro_rules! num {
            ($t:ty) => {{
                let mut a = [0u8; std::mem::size_of::<$t>()];
                a.copy_from_slice(b);
                if little {
                    <$t>::from_le_bytes(a)
                } else {
                    <$t>::from_be_bytes(a)
                }
            }};
        }
        match self {
            Self::F32 => num!(f32),
            Self::F64 => num!(f64) as f32,
            Self::I8 => num!(i8) as f32,
            Self::U8 => num!(u8) as f32,
            Self::I16 => num!(i16) as f32,
            Self::U16 => num!(u16) as f32,
            Self::I32 => num!(i32) as f32,
            Self::U32 => num!(u32) as f32,
            Self::I64 => num!(i64) as f32,
            Self::U64 => num!(u64) as f32,
            Self::Bool => f32::from(u8::from(b.first().is_some_and(|&v| v != 0))),
        }
    }
}

/// The value of `'key':` in a header dict, up to the next top-level comma or the closing brace.
fn dict_value<'a>(header: &'a str, key: &str) -> Option<&'a str> {
    let start = ["'", "\""].iter().find_map(|q| header.find(&format!("{q}{key}{q}")))?;
    let rest = header.get(start + key.len() + 2..)?.trim_start();
    let rest = rest.strip_prefix(':')?.trim_start();
    let end = if rest.starts_with('(') {
        rest.find(')')? + 1
    } else {
        rest.find([',', '}']).unwrap_or(rest.len())
    };
    rest.get(..end).map(str::trim)
}

/// Parses a header; returns (descr, shape).
fn parse_header(header: &str) -> Result<(String, Vec<u64>), String> {
    let descr = dict_value(header, "descr")
        .ok_or("no 'descr' in the header")?
        .trim_matches(|c| c == '\'' || c == '"')
        .to_owned();
    match dict_value(header, "fortran_order") {
        Some("False") => {}
        Some("True") => {
            return Err("Fortran-order arrays are not supported (save a C-order copy with \
                        np.ascontiguousarray)"
                .into())
        }
        other => return Err(format!("bad 'fortran_order' value {other:?}")),
    }
    let shape_text = dict_value(header, "shape").ok_or("no 'shape' in the header")?;
    let inner = shape_text
        .strip_prefix('(')
        .and_then(|s| s.strip_suffix(')'))
        .ok_or_else(|| format!("shape `{shape_text}` is not a tuple"))?;
    let shape = inner
        .split(',')
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .map(|d| {
            // Python may write `10L` (numpy < 1.14 on Python 2).
            d.trim_end_matches('L').parse::<u64>().map_err(|_| {
                format!("shape `{shape_text}`: dimension `{d}` is not a non-negative integer")
            })
        })
        .collect::<Result<Vec<u64>, String>>()?;
    Ok((descr, shape))
}

/// Reads an `.npy` file as `f32`. The header's shape and dtype are checked against the file's
/// length, with overflow-checked arithmetic, before the data is read: a short, truncated or
/// lying file is an [`NpyError::Size`], never an allocation failure. Reads `f4`/`f8`, signed
/// and unsigned 8–64-bit integers and booleans, either byte order; refuses Fortran order,
/// structured and object dtypes.
pub fn read_npy(path: &Path) -> Result<NpyArray, NpyError> {
    let io = |source| NpyError::Io { path: path.to_path_buf(), source };
    let format = |message: String| NpyError::Format { path: path.to_path_buf(), message };
    let (mut file, file_len) = crate::open_regular_file(path)?;

    let mut preamble = [0u8; 8];
    file.read_exact(&mut preamble)
        .map_err(|_| format("shorter than the 8-byte preamble".into()))?;
    if &preamble[..6] != b"\x93NUMPY" {
        return Err(format("no \\x93NUMPY magic at the start".into()));
    }
    let major = preamble[6];
    let header_len = match major {
        1 => {
            let mut b = [0u8; 2];
            file.read_exact(&mut b).map_err(|_| format("truncated header length".into()))?;
            u64::from(u16::from_le_bytes(b))
        }
        2 | 3 => {
            let mut b = [0u8; 4];
            file.read_exact(&mut b).map_err(|_| format("truncated header length".into()))?;
            u64::from(u32::from_le_bytes(b))
        }
        v => return Err(format(format!("format version {v}.{} is not 1, 2 or 3", preamble[7]))),
    };
    let header_start = if major == 1 { 10 } else { 12 };
    if header_start + header_len > file_len {
        return Err(format(format!(
            "the header claims {header_len} bytes but the file has {file_len} bytes in all"
        )));
    }
    let mut header = vec![0u8; header_len as usize];
    file.read_exact(&mut header).map_err(io)?;
    let header = String::from_utf8(header).map_err(|_| format("the header is not text".into()))?;
    let (descr, shape) = parse_header(&header).map_err(format)?;
    let (element, little) = Element::parse(&descr)
        .ok_or_else(|| format(format!("dtype '{descr}' is not a number type this reader knows")))?;

    let available = file_len - header_start - header_len;
    let count = shape.iter().try_fold(1u64, |acc, &d| acc.checked_mul(d));
    let declared = count.and_then(|c| c.checked_mul(element.size() as u64));
    let size_error = |declared| NpyError::Size {
        path: path.to_path_buf(),
        shape: shape.clone(),
        descr: descr.clone(),
        declared,
        available,
    };
    let (Some(count), Some(declared)) = (count, declared) else {
        return Err(size_error(u64::MAX));
    };
    if declared != available {
        return Err(size_error(declared));
    }
    // `declared` bytes exist in the file, so they fit in memory as far as the file goes.
    let mut raw = vec![0u8; declared as usize];
    file.read_exact(&mut raw).map_err(io)?;
    let data: Vec<f32> =
        raw.chunks_exact(element.size()).map(|b| element.decode(b, little)).collect();
    debug_assert_eq!(data.len() as u64, count);
    Ok(NpyArray { shape: shape.into_iter().map(|d| d as usize).collect(), data })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// An `.npy` file as numpy 1.x writes it (version 1.0, header padded to 64 bytes).
    fn npy(descr: &str, shape: &str, data: &[u8]) -> Vec<u8> {
        let mut header =
            format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}");
        while (10 + header.len() + 1) % 64 != 0 {
            header.push(' ');
        }
        header.push('\n');
        let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
        bytes.extend((header.len() as u16).to_le_bytes());
        bytes.extend(header.as_bytes());
        bytes.extend(data);
        bytes
    }

    fn read_bytes(name: &str, bytes: &[u8]) -> Result<NpyArray, NpyError> {
        let path = std::env::temp_dir().join(format!(
            "rpn-io-npy-{name}-{}-{:?}.npy",
            std::process::id(),
            std::thread::current().id()
        ));
        std::fs::write(&path, bytes)
            .map_err(|source| NpyError::Io { path: path.clone(), source })?;
        let r = read_npy(&path);
        let _ = std::fs::remove_file(&path);
        r
    }

    #[test]
    fn reads_f32_f64_ints_and_big_endian() -> Result<(), NpyError> {
        let f32s: Vec<u8> = [1.5f32, -2.0, 3.25].iter().flat_map(|v| v.to_le_bytes()).collect();
        let a = read_bytes("f4", &npy("<f4", "(1, 3)", &f32s))?;
        assert_eq!((a.shape, a.data), (vec![1, 3], vec![1.5, -2.0, 3.25]));
        let f64s: Vec<u8> = [0.5f64, 7.0].iter().flat_map(|v| v.to_be_bytes()).collect();
        let a = read_bytes("f8be", &npy(">f8", "(2,)", &f64s))?;
        assert_eq!((a.shape, a.data), (vec![2], vec![0.5, 7.0]));
        let a = read_bytes("u1", &npy("|u1", "(2, 2)", &[0, 1, 254, 255]))?;
        assert_eq!(a.data, vec![0.0, 1.0, 254.0, 255.0]);
        let a = read_bytes("scalar", &npy("<f4", "()", &2.0f32.to_le_bytes()))?;
        assert_eq!((a.shape, a.data), (vec![], vec![2.0]));
        let a = read_bytes("zero", &npy("<f4", "(1, 0, 64, 3)", &[]))?;
        assert_eq!((a.shape, a.data.len()), (vec![1, 0, 64, 3], 0));
        Ok(())
    }

    #[test]
    fn lying_headers_are_size_errors_before_allocation() {
        // 1e5 × 1e5 × 3 f32 = 120 GB declared in a 100-byte file: refused, not allocated.
        let err = read_bytes("huge", &npy("<f4", "(1, 100000, 100000, 3)", &[0; 16])).err();
        let text = err.as_ref().map(|e| e.to_string()).unwrap_or_default();
        assert!(matches!(
            err,
            Some(NpyError::Size { declared: 120_000_000_000, available: 16, .. })
        ));
        assert!(text.contains("120000000000 bytes") && text.contains("16 bytes"), "{text}");
        // A product that overflows u64.
        let err = read_bytes("overflow", &npy("<f8", "(4294967296, 4294967296, 16)", &[])).err();
        assert!(matches!(err, Some(NpyError::Size { declared: u64::MAX, .. })), "{err:?}");
        // Truncated data.
        let err = read_bytes("short", &npy("<f4", "(2, 2)", &[0; 12])).err();
        assert!(matches!(err, Some(NpyError::Size { declared: 16, available: 12, .. })));
    }

    #[test]
    fn malformed_headers_name_the_problem() {
        let cases: &[(&str, Vec<u8>, &str)] = &[
            ("negative", npy("<f4", "(1, -64, 3)", &[]), "dimension `-64`"),
            ("dtype", npy("<c8", "(1,)", &[0; 8]), "dtype '<c8'"),
            ("magic", b"PK\x03\x04 not npy".to_vec(), "magic"),
            ("empty", Vec::new(), "preamble"),
        ];
        for (name, bytes, expected) in cases {
            let text = read_bytes(name, bytes).err().map(|e| e.to_string()).unwrap_or_default();
            assert!(text.contains(expected), "{name}: {text}");
        }
        let mut fortran = npy("<f4", "(1,)", &[0; 4]);
        let at = fortran.windows(5).position(|w| w == b"False").unwrap_or(0);
        fortran.splice(at..at + 5, *b"True ");
        let text = read_bytes("fortran", &fortran).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(text.contains("Fortran"), "{text}");
    }

    proptest! {
        #![proptest_config(ProptestConfig::default())]
        /// Any byte string after a valid magic is an error or an array, never a panic; and a
        /// returned array always has exactly `product(shape)` values.
        #[test]
        fn arbitrary_bytes_never_panic(tail in proptest::collection::vec(any::<u8>(), 0..300),
                                       header in "[ -~]{0,120}") {
            let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
            bytes.extend((header.len() as u16).to_le_bytes());
            bytes.extend(header.as_bytes());
            bytes.extend(&tail);
            if let Ok(a) = read_bytes("prop", &bytes) {
                prop_assert_eq!(a.data.len(), a.shape.iter().product::<usize>());
            }
        }

        #[test]
        fn arbitrary_shapes_are_checked(dims in proptest::collection::vec(0u64..u64::MAX, 0..5),
                                        len in 0usize..64) {
            let shape = format!("({})", dims.iter().map(|d| format!("{d},")).collect::<String>());
            match read_bytes("shape", &npy("<f4", &shape, &vec![0; len])) {
                Ok(a) => prop_assert_eq!(a.data.len() * 4, len),
                Err(NpyError::Size { .. }) => {}
                Err(e) => prop_assert!(false, "unexpected {e}"),
            }
        }
    }
}
