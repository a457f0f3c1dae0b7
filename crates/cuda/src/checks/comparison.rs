//! How a device output is judged against its CPU reference: `|got − want| ≤ atol + rtol·|want|`
//! elementwise (NaN never passes), with the worst element kept for the report.

/// Default absolute tolerance of a comparison (the one every kernel test has used).
pub const ATOL: f32 = 1e-5;
/// Default relative tolerance of a comparison.
pub const RTOL: f32 = 1e-4;
/// `worst_rel` only counts elements whose reference magnitude exceeds this (relative error
/// of values near zero says nothing).
pub const REL_FLOOR: f32 = 1e-3;

/// How close a device value must be to its CPU twin: `|got − want| ≤ atol + rtol·|want|`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Tolerance {
    /// Absolute part.
    pub atol: f32,
    /// Relative part, times `|want|`.
    pub rtol: f32,
}

impl Tolerance {
    /// [`ATOL`] and [`RTOL`].
    pub const DEFAULT: Tolerance = Tolerance { atol: ATOL, rtol: RTOL };

    /// The largest deviation allowed from `want`.
    pub fn allowed(self, want: f32) -> f32 {
        self.atol + self.rtol * want.abs()
    }
}

/// The outcome of one check: a row of `meta-worker selftest`'s table, an assertion of the
/// kernel tests.
#[derive(Debug, Clone, PartialEq)]
pub struct Check {
    /// What was checked: the kernel's [`KernelId::name`] for a kernel check.
    pub name: String,
    /// The tolerance applied.
    pub tolerance: Tolerance,
    /// Number of values compared.
    pub values: usize,
    /// Largest `|got − want|` (NaN if a value was NaN or the check could not run).
    pub worst_abs: f32,
    /// Largest `|got − want| / |want|` over values with `|want| >` [`REL_FLOOR`].
    pub worst_rel: f32,
    /// Largest `|got − want| / (atol + rtol·|want|)`: the fraction of the tolerance the
    /// worst value used (above 1 fails; infinite for NaN).
    pub worst_used: f32,
    /// Index of that worst value in its output, if any value was compared.
    pub worst_index: Option<usize>,
    /// The output and case the worst value belongs to, e.g. `dW_hh B=3 H=37`.
    pub worst_at: String,
    /// The device's value there.
    pub worst_got: f32,
    /// The CPU twin's value there.
    pub worst_want: f32,
    /// Whether every value was within tolerance (and the check ran).
    pub pass: bool,
    /// Why it failed: the launch error, or the failing value; empty when it passed.
    pub note: String,
}

impl Check {
    /// A check that could not run (launch, allocation or setup error): fails.
    pub fn failed(name: &str, tolerance: Tolerance, why: impl std::fmt::Display) -> Check {
        let mut c = Comparison::new(name, tolerance).finish();
        c.worst_abs = f32::NAN;
        c.worst_rel = f32::NAN;
        c.worst_used = f32::INFINITY;
        c.pass = false;
        c.note = why.to_string();
        c
    }

    /// `output[index] case` of the worst value (e.g. `gates[1970] B=2 H=300`), or `-` when
    /// nothing was compared.
    pub fn worst_element(&self) -> String {
        let Some(i) = self.worst_index else { return "-".to_string() };
        match self.worst_at.split_once(' ') {
            Some((output, case)) => format!("{output}[{i}] {case}"),
            None => format!("{}[{i}]", self.worst_at),
        }
    }
}

/// Accumulates the elementwise comparison of several outputs into one [`Check`]. Used by the
/// kernel checks and by `meta-worker selftest`'s whole-meta-gradient rows, so both judge and
/// report deviations the same way.
#[derive(Debug, Clone)]
pub struct Comparison {
    check: Check,
}

impl Comparison {
    /// An empty comparison named `name` (it passes until a value fails).
    pub fn new(name: &str, tolerance: Tolerance) -> Self {
        Self {
            check: Check {
                name: name.to_string(),
                tolerance,
                values: 0,
                worst_abs: 0.0,
                worst_rel: 0.0,
                worst_used: 0.0,
                worst_index: None,
                worst_at: String::new(),
                worst_got: 0.0,
                worst_want: 0.0,
                pass: true,
                note: String::new(),
            },
        }
    }

    /// Compares `got` with `want` elementwise; `output` names them in the report.
    pub fn add(&mut self, output: &str, got: &[f32], want: &[f32]) {
        let c = &mut self.check;
        if got.len() != want.len() {
            c.pass = false;
            c.worst_abs = f32::NAN;
            c.worst_used = f32::INFINITY;
            if c.note.is_empty() {
                c.note = format!("{output}: {} values, the CPU twin has {}", got.len(), want.len());
            }
            return;
        }
        c.values += got.len();
        for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
            let d = (g - w).abs();
            let used = if d.is_nan() { f32::INFINITY } else { d / c.tolerance.allowed(w) };
            if d.is_nan() {
                c.worst_abs = f32::NAN;
            } else if !c.worst_abs.is_nan() {
                c.worst_abs = c.worst_abs.max(d);
            }
            if w.abs() > REL_FLOOR && !d.is_nan() {
                c.worst_rel = c.worst_rel.max(d / w.abs());
            }
            if used > c.worst_used || c.worst_index.is_none() {
                c.worst_used = used;
                c.worst_index = Some(i);
                c.worst_at = output.to_string();
                c.worst_got = g;
                c.worst_want = w;
            }
            if used > 1.0 && c.pass {
                c.pass = false;
                c.note = format!(
                    "{output}[{i}]: got {g} want {w} (|diff| {d:e} > {:e} + {:e}·|want|)",
                    c.tolerance.atol, c.tolerance.rtol
                );
            }
        }
    }

    /// The result.
    pub fn finish(self) -> Check {
        self.check
    }
}
