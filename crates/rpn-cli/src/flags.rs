//! Value parsers for numeric flags: every number is checked when the command line is parsed,
//! before anything is loaded or trained, and a bad one is a usage error (exit 2) that names the
//! flag (clap adds it), the value and the range.

/// The largest image side any command accepts. Far above any network input we know (Matterport
/// and torchvision use ≤ 1333); larger inputs are refused by the memory budget anyway, but this
/// keeps the arithmetic on sides far from overflow.
pub(crate) const MAX_SIDE: u32 = 1 << 16;

fn integer<T: std::str::FromStr>(text: &str) -> Result<T, String> {
    let t = text.trim();
    t.parse().map_err(|_| {
        if t.starts_with('-') {
            format!("`{t}` is negative")
        } else {
            format!("`{t}` is not a whole number")
        }
    })
}

fn number(text: &str) -> Result<f64, String> {
    let v: f64 = text.trim().parse().map_err(|_| format!("`{text}` is not a number"))?;
    if v.is_finite() {
        Ok(v)
    } else {
        Err(format!("`{text}` is not a finite number"))
    }
}

/// A count of at least 1 (steps, images, batch size, proposals).
pub(crate) fn count(text: &str) -> Result<usize, String> {
    match integer::<usize>(text)? {
        0 => Err("must be at least 1".into()),
        n => Ok(n),
    }
}

/// Matterport's stem width for `--width`: 1..=64 (64 is Matterport's; the flag trains narrower
/// variants).
pub(crate) fn width(text: &str) -> Result<usize, String> {
    match integer::<u64>(text)? {
        0 => Err("must be at least 1".into()),
        w if w > 64 => {
            Err(format!("{w} is wider than Matterport's 64; --width trains narrower variants"))
        }
        w => Ok(w as usize),
    }
}

/// An image side in pixels, 1..=[`MAX_SIDE`] (multiples of the network's stride are checked
/// where the architecture is known).
pub(crate) fn side(text: &str) -> Result<u32, String> {
    match integer::<u64>(text)? {
        0 => Err("an image side must be at least 1 pixel".into()),
        s if s > u64::from(MAX_SIDE) => {
            Err(format!("{s} pixels is more than the largest side, {MAX_SIDE}"))
        }
        s => Ok(s as u32),
    }
}

/// A finite number > 0 (learning rate, clipping norm).
pub(crate) fn positive(text: &str) -> Result<f64, String> {
    match number(text)? {
        v if v > 0.0 => Ok(v),
        v => Err(format!("{v} must be > 0")),
    }
}

/// A finite number ≥ 0 (weight decay).
pub(crate) fn non_negative(text: &str) -> Result<f64, String> {
    match number(text)? {
        v if v >= 0.0 => Ok(v),
        v => Err(format!("{v} must be ≥ 0")),
    }
}

/// SGD momentum in `[0, 1)`.
pub(crate) fn momentum(text: &str) -> Result<f64, String> {
    match number(text)? {
        v if (0.0..1.0).contains(&v) => Ok(v),
        v => Err(format!("{v} must be in [0, 1)")),
    }
}

/// An IoU threshold in `(0, 1]`.
pub(crate) fn iou(text: &str) -> Result<f32, String> {
    match number(text)? {
        v if v > 0.0 && v <= 1.0 => Ok(v as f32),
        v => Err(format!("{v} must be in (0, 1]")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_out_of_range_are_refused_with_the_value() {
        assert_eq!(count("3"), Ok(3));
        assert_eq!(count("0"), Err("must be at least 1".into()));
        assert!(count("-5").is_err_and(|e| e.contains("negative")));
        assert_eq!(side("64"), Ok(64));
        for bad in ["0", "4294967296", "100000", "1e3", "-1", ""] {
            assert!(side(bad).is_err(), "{bad}");
        }
        for bad in ["NaN", "inf", "1e400", "-1", "0", "x"] {
            assert!(positive(bad).is_err(), "{bad}");
        }
        assert_eq!(positive("1e30"), Ok(1e30));
        assert!(momentum("1").is_err() && momentum("0.9") == Ok(0.9));
        assert!(non_negative("-0.1").is_err() && non_negative("0") == Ok(0.0));
        assert!(iou("0").is_err() && iou("1.5").is_err() && iou("1") == Ok(1.0));
    }
}
