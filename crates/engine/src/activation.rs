//! The learner's nonlinearity and its first two derivatives, expressed through the
//! activation's *output* so the forward cache needs only `H = act(Z)`.

use crate::config::Activation;
use crate::real::Real;

impl Activation {
    /// `act(z)`.
    #[inline]
    pub fn apply<T: Real>(self, z: T) -> T {
        match self {
            Activation::Relu => z.max(T::zero()),
            Activation::Tanh => z.tanh(),
        }
    }

    /// `act'(z)` given `h = act(z)` (relu: 1 where z > 0, so 0 at the kink, as PyTorch).
    #[inline]
    pub fn d1<T: Real>(self, h: T) -> T {
        match self {
            Activation::Relu => {
                if h > T::zero() {
                    T::one()
                } else {
                    T::zero()
                }
            }
            Activation::Tanh => T::one() - h * h,
        }
    }

    /// `act''(z)` given `h = act(z)` (0 for relu almost everywhere).
    #[inline]
    pub fn d2<T: Real>(self, h: T) -> T {
        match self {
            Activation::Relu => T::zero(),
            Activation::Tanh => T::of(-2.0) * h * (T::one() - h * h),
        }
    }

    /// Whether `act''` vanishes, so the R-operator can skip that term.
    pub fn is_piecewise_linear(self) -> bool {
        matches!(self, Activation::Relu)
    }
}
