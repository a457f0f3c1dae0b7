//! metasched's file formats (spec `docs/SPEC.md` §5-6): checkpoints, task batches and the
//! output files of `metagrad` / `eval`, all safetensors.
//!
//! The files are the contract with outside tools (PyTorch, JAX, other backends), so everything
//! about them lives here, apart from the numerical engine: tensor names and dtypes, the
//! `metasched.config` metadata, and the checks that refuse a file that does not fit its config
//! with a one-line error naming the file and the tensor or field at fault
//! ([`FormatError`]). Every file is written atomically ([`write_atomic`]): a reader sees the
//! old file or the new one, never half of one.

pub mod atomic;
pub mod checkpoint;
pub mod config_json;
pub mod error;
pub mod outputs;
pub mod task_file;
pub mod tensor_io;

pub use atomic::{remove_stale_temps, write_atomic};
pub use checkpoint::{
    CONFIG_KEY, Checkpoint, OPTIM_PREFIX, parse_checkpoint, read_checkpoint, write_checkpoint,
};
pub use config_json::{merge_config, parse_config};
pub use error::{FileKind, FormatError, IoOp, Result};
pub use outputs::{OutputTensor, read_tensors, write_tensors};
pub use safetensors::Dtype;
pub use task_file::{TASKS_KEY, parse_task_batch, read_task_batch, write_task_batch};
pub use tensor_io::{F32Tensors, NamedTensor, TensorData, TensorFile, serialize_tensors, write_safetensors};
