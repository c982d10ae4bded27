//! Which SIMD family the forward GEMM's micro-kernel uses: detected at run time, once per
//! process, and overridable with `RPN_CPU_ISA` for testing the dispatch and the fallbacks.

use std::fmt;
use std::sync::OnceLock;

/// The environment variable that forces a micro-kernel family: `avx512`, `avx2` or `portable`.
///
/// A family the CPU lacks is never run: the variable then falls back to the best family the CPU
/// has below the one asked for, and says so once on standard error (so does a value that names
/// no family). Unset or empty, the best family the CPU has is used.
pub const CPU_ISA_ENV: &str = "RPN_CPU_ISA";

/// A SIMD family of the forward pass's micro-kernel, from the narrowest to the widest.
///
/// Every family computes each output as the same chain of multiply-adds over `k` in the same
/// order. The AVX2 and AVX-512 kernels both fuse each multiply-add (one rounding), so they give
/// the same bits; the portable kernel rounds the product and the sum separately.
///
/// ```
/// use rpn_kernels::CpuIsa;
///
/// let isa = CpuIsa::active();
/// assert!(isa.is_available());
/// assert_eq!(isa.to_string().parse::<CpuIsa>(), Ok(isa));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum CpuIsa {
    /// Plain Rust, vectorised by the compiler for the target's baseline (SSE2 on x86-64).
    Portable,
    /// 6 × 16 register tiles on 256-bit vectors with fused multiply-add (x86-64).
    Avx2,
    /// 6 × 64 register tiles on 512-bit vectors, masked loads and stores at the edges (x86-64
    /// with AVX-512F: Intel Xeon since Skylake-SP, AMD Zen 4 and later).
    Avx512,
}

impl CpuIsa {
    /// Every family, from the narrowest to the widest.
    pub const ALL: [CpuIsa; 3] = [CpuIsa::Portable, CpuIsa::Avx2, CpuIsa::Avx512];

    /// The name `RPN_CPU_ISA` takes and reports print.
    pub fn name(self) -> &'static str {
        match self {
            CpuIsa::Portable => "portable",
            CpuIsa::Avx2 => "avx2",
            CpuIsa::Avx512 => "avx512",
        }
    }

    /// Whether this CPU can run the family.
    pub fn is_available(self) -> bool {
        match self {
            CpuIsa::Portable => true,
            #[cfg(target_arch = "x86_64")]
            CpuIsa::Avx2 => is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma"),
            #[cfg(target_arch = "x86_64")]
            CpuIsa::Avx512 => is_x86_feature_detected!("avx512f"),
            #[cfg(not(target_arch = "x86_64"))]
            CpuIsa::Avx2 | CpuIsa::Avx512 => false,
        }
    }

    /// The widest family this CPU runs.
    pub fn best_available() -> CpuIsa {
        Self::best_up_to(CpuIsa::Avx512)
    }

    /// The widest family this CPU runs that is no wider than `limit`.
    fn best_up_to(limit: CpuIsa) -> CpuIsa {
        Self::ALL
            .into_iter()
            .rev()
            .find(|isa| *isa <= limit && isa.is_available())
            .unwrap_or(CpuIsa::Portable)
    }

    /// The family the kernels of this process use: [`CPU_ISA_ENV`] if set (within what the CPU
    /// has), else [`CpuIsa::best_available`]. Decided at the first call and fixed after it.
    pub fn active() -> CpuIsa {
        static ACTIVE: OnceLock<CpuIsa> = OnceLock::new();
        *ACTIVE.get_or_init(|| {
            let requested = std::env::var(CPU_ISA_ENV).ok();
            let (isa, note) = Self::choose(requested.as_deref());
            if let Some(note) = note {
                eprintln!("rpn-kernels: {note}");
            }
            isa
        })
    }

    /// The family for an `RPN_CPU_ISA` value, and a note when the value could not be followed.
    fn choose(requested: Option<&str>) -> (CpuIsa, Option<String>) {
        let best = Self::best_available();
        match requested.map(str::trim).filter(|v| !v.is_empty()) {
            None => (best, None),
            Some(value) => match value.parse::<CpuIsa>() {
                Ok(isa) if isa.is_available() => (isa, None),
                Ok(isa) => {
                    let fallback = Self::best_up_to(isa);
                    let note = format!(
                        "{CPU_ISA_ENV}={value}: this CPU cannot run the {isa} kernels; using {fallback}"
                    );
                    (fallback, Some(note))
                }
                Err(e) => (best, Some(format!("{e}; using {best}"))),
            },
        }
    }
}

impl fmt::Display for CpuIsa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for CpuIsa {
    type Err = String;

    /// `avx512`, `avx2` or `portable`, in any case.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL.into_iter().find(|isa| isa.name().eq_ignore_ascii_case(s.trim())).ok_or_else(
            || {
                let names: Vec<_> = Self::ALL.iter().map(|isa| isa.name()).collect();
                format!(
                    "{CPU_ISA_ENV}={s:?} names no kernel family (expected one of {})",
                    names.join(", ")
                )
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_unknown_names_are_refused() {
        for isa in CpuIsa::ALL {
            assert_eq!(isa.name().parse::<CpuIsa>(), Ok(isa));
            assert_eq!(isa.name().to_uppercase().parse::<CpuIsa>(), Ok(isa));
        }
        let err = "sse9".parse::<CpuIsa>().unwrap_err();
        assert!(err.contains("sse9") && err.contains("avx512"), "{err}");
    }

    #[test]
    fn the_choice_never_exceeds_the_cpu() {
        let best = CpuIsa::best_available();
        assert_eq!(CpuIsa::choose(None), (best, None));
        assert_eq!(CpuIsa::choose(Some("  ")), (best, None));
        assert_eq!(CpuIsa::choose(Some("portable")), (CpuIsa::Portable, None));
        for isa in CpuIsa::ALL {
            let (chosen, note) = CpuIsa::choose(Some(isa.name()));
            assert!(chosen.is_available() && chosen <= isa, "{isa} → {chosen}");
            // A note exactly when the request could not be followed, naming the fallback.
            assert_eq!(note.is_some(), chosen != isa, "{isa} → {chosen}: {note:?}");
            if let Some(note) = note {
                assert!(note.contains(isa.name()) && note.contains(chosen.name()), "{note}");
            }
        }
        let (chosen, note) = CpuIsa::choose(Some("neon"));
        assert_eq!(chosen, best);
        assert!(note.is_some_and(|n| n.contains("neon")));
    }
}
