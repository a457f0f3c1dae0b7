//! The one alloc/upload/launch/download sequence every kernel check uses: a check lists its
//! arguments in parameter order ([`In`]), [`launch`] uploads each array to a fresh buffer,
//! launches (the default shape, or another block size), and [`Launched::compare`] downloads
//! the named outputs and compares them with the CPU reference.

use crate::checks::Comparison;
use crate::error::{CudaError, Result};
use crate::kernels::KernelId;
use crate::runtime::{Arg, Dim3, Runtime};

/// One argument of a checked launch, in the kernel's parameter order.
#[derive(Debug, Clone, Copy)]
pub(crate) enum In<'a> {
    /// A `float*`: uploaded to a fresh buffer (an input, or what an output starts as).
    F(&'a [f32]),
    /// An `int*`.
    I(&'a [i32]),
    /// An `unsigned*`.
    U(&'a [u32]),
    /// The buffer of argument `i` again (an output written in place over an input).
    Same(usize),
    /// An `int` given as a size.
    Int(usize),
    /// An `int` (activation codes, flags).
    I32(i32),
    /// A `float`.
    F32(f32),
}

/// What an argument became on the device.
enum Slot<R: Runtime> {
    F(R::Buffer<f32>),
    I(R::Buffer<i32>),
    U(R::Buffer<u32>),
    Same(usize),
    Scalar,
}

/// A finished launch: its buffers, to be read back by parameter name.
pub(crate) struct Launched<'r, R: Runtime> {
    rt: &'r R,
    kernel: KernelId,
    slots: Vec<Slot<R>>,
}

fn bad(kernel: KernelId, reason: String) -> CudaError {
    CudaError::InvalidArgument { kernel: kernel.entry_point().to_string(), reason }
}

/// The launch argument of argument `i`, following one [`In::Same`].
fn arg<'s, R: Runtime>(
    kernel: KernelId,
    slots: &'s [Slot<R>],
    args: &[In<'_>],
    i: usize,
) -> Result<Arg<'s, R>> {
    let slot = match slots.get(i) {
        Some(Slot::Same(j)) => slots.get(*j),
        other => other,
    };
    Ok(match (slot, args.get(i)) {
        (Some(Slot::F(b)), _) => Arg::buf(b),
        (Some(Slot::I(b)), _) => Arg::buf(b),
        (Some(Slot::U(b)), _) => Arg::buf(b),
        (_, Some(In::Int(v))) => Arg::int(*v),
        (_, Some(In::I32(v))) => Arg::I32(*v),
        (_, Some(In::F32(v))) => Arg::F32(*v),
        _ => return Err(bad(kernel, format!("check argument {i} names no buffer or scalar"))),
    })
}

/// Uploads `args`, launches `kernel` with its default shape (with `block` threads per block
/// if given) and returns the buffers. Any error fails the check, never panics.
pub(crate) fn launch<'r, R: Runtime>(
    rt: &'r R,
    kernel: KernelId,
    block: Option<u32>,
    args: &[In<'_>],
) -> Result<Launched<'r, R>> {
    let slots = args
        .iter()
        .map(|a| {
            Ok(match *a {
                In::F(v) => Slot::F(rt.upload(v)?),
                In::I(v) => Slot::I(rt.upload(v)?),
                In::U(v) => Slot::U(rt.upload(v)?),
                In::Same(j) => Slot::Same(j),
                In::Int(_) | In::I32(_) | In::F32(_) => Slot::Scalar,
            })
        })
        .collect::<Result<Vec<Slot<R>>>>()?;
    let launch_args = (0..args.len()).map(|i| arg(kernel, &slots, args, i)).collect::<Result<Vec<_>>>()?;
    let values: Vec<_> = launch_args.iter().map(Arg::value).collect();
    let mut config = kernel.default_config(&values)?;
    if let Some(b) = block {
        config.block = Dim3::x(b);
    }
    rt.launch(kernel, &config, &launch_args)?;
    drop(launch_args);
    Ok(Launched { rt, kernel, slots })
}

impl<R: Runtime> Launched<'_, R> {
    /// The contents of the `float*` parameter `name` after the launch.
    pub(crate) fn get(&self, name: &str) -> Result<Vec<f32>> {
        let i = self
            .kernel
            .params()
            .iter()
            .position(|p| p.name == name)
            .ok_or_else(|| bad(self.kernel, format!("no parameter `{name}` to compare")))?;
        let slot = match self.slots.get(i) {
            Some(Slot::Same(j)) => self.slots.get(*j),
            other => other,
        };
        match slot {
            Some(Slot::F(b)) => self.rt.download(b),
            _ => Err(bad(self.kernel, format!("`{name}` is not a float buffer of this launch"))),
        }
    }

    /// Compares each output with its reference: `label` starts with the parameter name (any
    /// words after it, e.g. `(not written)`, only go into the report), `case` names the inputs.
    pub(crate) fn compare(&self, cmp: &mut Comparison, case: &str, outputs: &[(&str, &[f32])]) -> Result<()> {
        for (label, want) in outputs {
            let param = label.split(' ').next().unwrap_or(label);
            cmp.add(&format!("{label} {case}"), &self.get(param)?, want);
        }
        Ok(())
    }
}
