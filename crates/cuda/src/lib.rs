//! placeholder (the CUDA backend is being written)
