//! The float type the engine is generic over: f32 for production, f64 for reference checks.

use std::fmt::{Debug, Display};
use std::iter::Sum;
use std::ops::{AddAssign, MulAssign, SubAssign};

/// A float the engine can compute in. Implemented for `f32` and `f64` only.
pub trait Real:
    num_traits::Float
    + AddAssign
    + SubAssign
    + MulAssign
    + Sum
    + Debug
    + Display
    + Default
    + Send
    + Sync
    + 'static
{
    /// Converts from f64 (rounding to nearest for f32).
    fn of(x: f64) -> Self;
    /// Converts to f64 (exact).
    fn as_f64(self) -> f64;
}

impl Real for f32 {
    fn of(x: f64) -> Self {
        x as f32
    }
    fn as_f64(self) -> f64 {
        self as f64
    }
}

impl Real for f64 {
    fn of(x: f64) -> Self {
        x
    }
    fn as_f64(self) -> f64 {
        self
    }
}
