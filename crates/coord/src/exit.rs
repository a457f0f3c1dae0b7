//! Exit codes: 2 for input the user can fix (bad files, bad flags), 1 for internal failures.

use metasched_compute::ComputeError;
use metasched_engine::EngineError;
use metasched_formats::FormatError;
use metasched_proto::ProtoError;
use metasched_tasks::TaskError;

/// Marks an error as caused by the user's input, so `main` exits with code 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct BadInput(pub String);

/// Exit code for input errors.
pub const EXIT_BAD_INPUT: i32 = 2;
/// Exit code for internal failures.
pub const EXIT_FAILURE: i32 = 1;
/// Exit code after a SIGINT/SIGTERM that stopped training cleanly (128 + SIGINT).
pub const EXIT_INTERRUPTED: i32 = 130;

/// The error and its causes on one line, skipping a cause whose text the message already
/// holds (many errors print their source themselves).
pub fn one_line(err: &anyhow::Error) -> String {
    let mut msg = String::new();
    for cause in err.chain() {
        let text = cause.to_string();
        if !msg.contains(&text) {
            if !msg.is_empty() {
                msg.push_str(": ");
            }
            msg.push_str(&text);
        }
    }
    msg.replace('\n', " ")
}

/// Whether `cause` is of type `E` and, if so, whether that type calls it the user's input.
fn verdict<E: std::error::Error + 'static>(
    cause: &(dyn std::error::Error + 'static),
    is_bad_input: fn(&E) -> bool,
) -> Option<bool> {
    cause.downcast_ref::<E>().map(is_bad_input)
}

/// The exit code an error deserves: the first cause in the chain whose type knows whether it
/// is the user's input decides. Each crate's error type says so itself (`is_bad_input`), so
/// this module never matches on another crate's variants.
pub fn exit_code(err: &anyhow::Error) -> i32 {
    for cause in err.chain() {
        let bad = verdict::<BadInput>(cause, |_| true)
            .or_else(|| verdict(cause, FormatError::is_bad_input))
            .or_else(|| verdict(cause, ProtoError::is_bad_input))
            .or_else(|| verdict(cause, ComputeError::is_bad_input))
            .or_else(|| verdict(cause, TaskError::is_bad_input))
            .or_else(|| verdict(cause, EngineError::is_bad_input));
        if let Some(bad) = bad {
            return if bad { EXIT_BAD_INPUT } else { EXIT_FAILURE };
        }
    }
    EXIT_FAILURE
}
