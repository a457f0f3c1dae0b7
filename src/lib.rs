//! Umbrella crate of the metasched workspace: it holds the cross-crate end-to-end tests
//! (`tests/`) and benchmarks (`benches/`), and re-exports the library crates so they can use
//! one import path.

pub use metasched_engine as engine;
pub use metasched_formats as formats;
pub use metasched_tasks as tasks;
