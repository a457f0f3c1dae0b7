//! Parsing the `metasched.config` JSON (spec §5) into the engine's [`Config`], with errors
//! that name the offending field (`scheduler.kind`, `model.layers`, ...) rather than a line and
//! column of a one-line JSON string.

use std::path::Path;

use metasched_engine::{Activation, Config, EngineError, LossKind, SchedulerKind};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::error::{FileKind, FormatError, Result};

/// Checks that a JSON value deserialises as the field's type.
type FieldCheck = fn(&Value) -> std::result::Result<(), serde_json::Error>;

/// One field of a config section: name, whether it is required, and its type check.
type Field = (&'static str, bool, FieldCheck);

fn check<T: DeserializeOwned>(v: &Value) -> std::result::Result<(), serde_json::Error> {
    T::deserialize(v).map(|_| ())
}

/// The contract-level fields of spec §5, section by section: (name, required, type check).
/// Only used to locate errors; the engine's `Config` stays the authority on what is accepted.
const SECTIONS: [(&str, &[Field]); 3] = [
    (
        "model",
        &[
            ("layers", true, check::<Vec<usize>>),
            ("activation", true, check::<Activation>),
            ("loss", true, check::<LossKind>),
        ],
    ),
    (
        "inner",
        &[
            ("steps", true, check::<usize>),
            ("first_order", false, check::<bool>),
            ("learn_init", false, check::<bool>),
        ],
    ),
    (
        "scheduler",
        &[
            ("kind", true, check::<SchedulerKind>),
            ("hidden", true, check::<usize>),
            ("lr_min", true, check::<f64>),
            ("lr_max", true, check::<f64>),
            ("lr_fixed", true, check::<f64>),
        ],
    ),
];

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Finds the first field of `obj` that does not fit the schema, as (dotted field, reason).
fn locate(obj: &Map<String, Value>) -> Option<(String, String)> {
    for (section, fields) in SECTIONS {
        let Some(sv) = obj.get(section) else {
            return Some((section.to_string(), "missing".to_string()));
        };
        let Some(so) = sv.as_object() else {
            return Some((section.to_string(), format!("expected an object, found {}", type_name(sv))));
        };
        for &(field, required, check) in fields {
            match so.get(field) {
                None if required => return Some((format!("{section}.{field}"), "missing".to_string())),
                None => {}
                Some(v) => {
                    if let Err(e) = check(v) {
                        return Some((format!("{section}.{field}"), e.to_string()));
                    }
                }
            }
        }
    }
    None
}

/// Parses a `metasched.config` JSON text into the engine's [`Config`] and validates it, also
/// returning the whole JSON object so that keys this version does not know survive a rewrite.
///
/// Unknown keys are ignored. Errors are [`FormatError::BadConfig`], naming the field
/// (`scheduler.kind`, `inner.steps`, ...) where one is at fault; `path` and `kind` name the file.
pub fn parse_config(path: &Path, kind: FileKind, text: &str) -> Result<(Config, Value)> {
    let bad = |field: Option<String>, reason: String| FormatError::BadConfig {
        kind,
        path: path.to_path_buf(),
        field,
        reason,
    };
    let value: Value = serde_json::from_str(text).map_err(|e| bad(None, format!("invalid JSON: {e}")))?;
    let Some(obj) = value.as_object() else {
        return Err(bad(None, format!("expected a JSON object, found {}", type_name(&value))));
    };
    if let Some((field, reason)) = locate(obj) {
        return Err(bad(Some(field), reason));
    }
    let config = Config::deserialize(&value).map_err(|e| bad(None, e.to_string()))?;
    config.validate().map_err(|e| match e {
        EngineError::InvalidConfig { field, reason } => bad(Some(field), reason),
        other => bad(None, other.to_string()),
    })?;
    Ok((config, value))
}

/// `base` with the contract sections (`model`, `inner`, `scheduler`) replaced by `config`'s
/// values, field by field, so that keys unknown to this version (at the top level or inside a
/// section) are kept and the known ones agree with `config`.
pub fn merge_config(base: &Value, config: &Config) -> std::result::Result<Value, serde_json::Error> {
    let mut out = base.as_object().cloned().unwrap_or_default();
    if let Value::Object(known) = serde_json::to_value(config)? {
        for (section, v) in known {
            match (out.get_mut(&section), v) {
                (Some(Value::Object(old)), Value::Object(new)) => old.extend(new),
                (_, v) => {
                    out.insert(section, v);
                }
            }
        }
    }
    Ok(Value::Object(out))
}
