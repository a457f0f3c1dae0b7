//! The stand-in for [`crate::CudaRuntime`] in builds without the `cuda` feature (no cudarc):
//! the same names, so callers such as the worker's `Compute::Cuda` compile unchanged, but
//! [`CudaRuntime::new`] returns [`CudaError::FeatureDisabled`] and no value of it can exist.

use std::convert::Infallible;
use std::marker::PhantomData;

use std::ops::Range;

use crate::counters::Counters;
use crate::error::{CudaError, Result};
use crate::kernels::KernelId;
use crate::runtime::{Arg, DeviceBuffer, Element, LaunchConfig, Runtime};

/// A GPU allocation; never exists in a build without the `cuda` feature.
#[derive(Debug)]
pub struct CudaBuffer<T> {
    never: Infallible,
    _element: PhantomData<T>,
}

impl<T> crate::graph::sealed::Sealed for CudaBuffer<T> {}

impl<T> crate::graph::Identified for CudaBuffer<T> {
    fn id(&self) -> crate::graph::BufferId {
        match self.never {}
    }
}

impl<T> DeviceBuffer<T> for CudaBuffer<T> {
    fn len(&self) -> usize {
        match self.never {}
    }
}

/// A GPU runtime; never exists in a build without the `cuda` feature ([`CudaRuntime::new`]
/// says why).
#[derive(Debug)]
pub struct CudaRuntime {
    never: Infallible,
}

impl CudaRuntime {
    /// Always [`CudaError::FeatureDisabled`]: this build has no CUDA bindings.
    pub fn new(_index: usize) -> Result<Self> {
        Err(CudaError::FeatureDisabled("cuda"))
    }

    /// The same runtime with its own meta-step graphs (unreachable: no value exists).
    pub fn with_step_graphs(self, _on: bool) -> Self {
        match self.never {}
    }

    /// The architecture the kernels would be compiled for (unreachable: no value exists).
    pub fn arch(&self) -> &str {
        match self.never {}
    }
}

impl Runtime for CudaRuntime {
    type Buffer<T: Element> = CudaBuffer<T>;
    type Graph = Infallible;

    fn device_name(&self) -> String {
        match self.never {}
    }

    fn alloc<T: Element>(&self, _len: usize) -> Result<CudaBuffer<T>> {
        match self.never {}
    }

    fn copy_in<T: Element>(&self, _dst: &mut CudaBuffer<T>, _src: &[T]) -> Result<()> {
        match self.never {}
    }

    fn copy_out<T: Element>(&self, _src: &CudaBuffer<T>, _dst: &mut [T]) -> Result<()> {
        match self.never {}
    }

    fn copy_device<T: Element>(
        &self,
        _dst: &mut CudaBuffer<T>,
        _dst_offset: usize,
        _src: &CudaBuffer<T>,
        _src_range: Range<usize>,
    ) -> Result<()> {
        match self.never {}
    }

    fn zero<T: Element>(&self, _buf: &mut CudaBuffer<T>, _range: Range<usize>) -> Result<()> {
        match self.never {}
    }

    fn counters(&self) -> Counters {
        match self.never {}
    }

    fn launch(&self, _kernel: KernelId, _config: &LaunchConfig, _args: &[Arg<'_, Self>]) -> Result<()> {
        match self.never {}
    }

    fn synchronize(&self) -> Result<()> {
        match self.never {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constructing_says_which_feature_is_missing() {
        let e = CudaRuntime::new(0).expect_err("no CUDA in this build");
        assert_eq!(e, CudaError::FeatureDisabled("cuda"));
        assert!(e.to_string().contains("built without the `cuda` feature"), "{e}");
    }
}
