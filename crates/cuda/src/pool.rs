//! [`BufferPool`]: device buffers given back after a meta-step, kept by element type and
//! length for the next one. A meta-step of the same shapes then takes every buffer it needs
//! from here and allocates nothing (on a GPU an allocation is a driver call, and cudarc adds
//! two events to each); [`crate::Runtime::alloc_pooled`] and [`crate::Runtime::recycle`] are
//! how the backends use it.

use std::collections::HashMap;

use crate::runtime::{DeviceBuffer, Element, Runtime};

/// Free buffers of one element type, by length.
pub type FreeList<R, T> = HashMap<usize, Vec<<R as Runtime>::Buffer<T>>>;

/// Free device buffers by element type and length. Reused buffers keep the contents they
/// had; callers that need zeros clear them ([`crate::Runtime::zero`]).
pub struct BufferPool<R: Runtime + ?Sized> {
    pub(crate) f32s: FreeList<R, f32>,
    pub(crate) i32s: FreeList<R, i32>,
    pub(crate) u32s: FreeList<R, u32>,
}

impl<R: Runtime + ?Sized> Default for BufferPool<R> {
    fn default() -> Self {
        Self { f32s: HashMap::new(), i32s: HashMap::new(), u32s: HashMap::new() }
    }
}

impl<R: Runtime + ?Sized> std::fmt::Debug for BufferPool<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "BufferPool({} buffers)", self.buffers())
    }
}

impl<R: Runtime + ?Sized> BufferPool<R> {
    /// A free buffer of `len` elements, if one was given back.
    pub fn take<T: Element>(&mut self, len: usize) -> Option<R::Buffer<T>> {
        T::free_list(self).get_mut(&len).and_then(Vec::pop)
    }

    /// Keeps `buf` for a later [`BufferPool::take`] of its length.
    pub fn put<T: Element>(&mut self, buf: R::Buffer<T>) {
        T::free_list(self).entry(buf.len()).or_default().push(buf);
    }

    /// How many buffers are free.
    pub fn buffers(&self) -> usize {
        fn count<V>(m: &HashMap<usize, Vec<V>>) -> usize {
            m.values().map(Vec::len).sum()
        }
        count(&self.f32s) + count(&self.i32s) + count(&self.u32s)
    }

    /// Frees every buffer.
    pub fn clear(&mut self) {
        self.f32s.clear();
        self.i32s.clear();
        self.u32s.clear();
    }
}
