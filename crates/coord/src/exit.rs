//! Exit codes: 2 for input the user can fix (bad files, bad flags), 1 for internal failures.

use metasched_engine::EngineError;
use metasched_formats::FormatError;

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

/// The exit code an error deserves.
pub fn exit_code(err: &anyhow::Error) -> i32 {
    for cause in err.chain() {
        if cause.downcast_ref::<BadInput>().is_some() {
            return EXIT_BAD_INPUT;
        }
        if let Some(f) = cause.downcast_ref::<FormatError>() {
            return if f.is_bad_input() { EXIT_BAD_INPUT } else { EXIT_FAILURE };
        }
        if let Some(metasched_proto::ProtoError::BadToken(_)) =
            cause.downcast_ref::<metasched_proto::ProtoError>()
        {
            return EXIT_BAD_INPUT;
        }
        let engine = match cause.downcast_ref::<metasched_worker::WorkerError>() {
            Some(metasched_worker::WorkerError::Engine(e)) => Some(e),
            Some(metasched_worker::WorkerError::DeviceUnavailable(_)) => return EXIT_BAD_INPUT,
            _ => cause.downcast_ref::<EngineError>(),
        };
        if let Some(e) = engine {
            return match e {
                EngineError::ThreadPool(_) => EXIT_FAILURE,
                _ => EXIT_BAD_INPUT,
            };
        }
    }
    EXIT_FAILURE
}
