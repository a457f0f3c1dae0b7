//! Fixtures shared by the integration tests: configurations, deterministic parameters and
//! task batches, and raw safetensors files built with the safetensors crate directly.

#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use metasched_engine::{Activation, Config, LossKind, Params, SchedulerKind, Targets, TaskBatch};
use safetensors::Dtype;
use safetensors::tensor::TensorView;

/// The spec's sinusoid configuration with the given scheduler kind.
pub fn config(kind: SchedulerKind) -> Config {
    let mut c = Config::sinusoid_default();
    c.scheduler.kind = kind;
    c
}

/// A small classification configuration: 2 inputs, 3 classes.
pub fn ce_config() -> Config {
    let mut c = Config::sinusoid_default();
    c.model.layers = vec![2, 8, 3];
    c.model.activation = Activation::Tanh;
    c.model.loss = LossKind::CrossEntropy;
    c.scheduler.hidden = 4;
    c
}

/// Deterministic pseudo-random values in [-1, 1), with a few awkward ones (-0.0, a subnormal,
/// the largest finite float) at the start so the round trip is checked bit for bit.
pub fn values(seed: u64, n: usize) -> Vec<f32> {
    let mut s = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    let special = [-0.0f32, f32::MIN_POSITIVE / 8.0, f32::MAX, 1.0 / 3.0];
    (0..n)
        .map(|i| {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            if i < special.len() { special[i] } else { ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0 }
        })
        .collect()
}

/// Parameters of `config` (its required slots) filled with [`values`].
pub fn params(config: &Config, seed: u64) -> Params<f32> {
    let mut p = Params::<f32>::zeros(config);
    let n = p.values().count();
    for (x, v) in p.values_mut().zip(values(seed, n)) {
        *x = v;
    }
    p
}

/// A regression batch for the sinusoid config (`d_0 = d_L = 1`).
pub fn mse_batch(b: usize, k: usize, q: usize) -> TaskBatch<f32> {
    TaskBatch {
        b,
        k,
        q,
        d_in: 1,
        d_out: 1,
        support_x: values(1, b * k),
        support_y: Targets::Values(values(2, b * k)),
        query_x: values(3, b * q),
        query_y: Targets::Values(values(4, b * q)),
    }
}

/// A classification batch for [`ce_config`].
pub fn ce_batch(b: usize, k: usize, q: usize) -> TaskBatch<f32> {
    TaskBatch {
        b,
        k,
        q,
        d_in: 2,
        d_out: 3,
        support_x: values(5, b * k * 2),
        support_y: Targets::Labels((0..b * k).map(|i| (i % 3) as u32).collect()),
        query_x: values(6, b * q * 2),
        query_y: Targets::Labels((0..b * q).map(|i| ((i + 1) % 3) as u32).collect()),
    }
}

/// One tensor of a raw file: name, dtype, shape, little-endian bytes.
pub type Raw = (String, Dtype, Vec<usize>, Vec<u8>);

/// Little-endian bytes of float32 values.
pub fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// Little-endian bytes of int64 values.
pub fn i64_bytes(v: &[i64]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// A float32 raw tensor.
pub fn raw_f32(name: &str, shape: Vec<usize>, v: &[f32]) -> Raw {
    (name.to_string(), Dtype::F32, shape, f32_bytes(v))
}

/// Serialises raw tensors and metadata with the safetensors crate itself.
pub fn raw_bytes(tensors: &[Raw], metadata: Option<BTreeMap<String, String>>) -> Vec<u8> {
    let views: Vec<(String, TensorView<'_>)> = tensors
        .iter()
        .map(|(n, d, s, b)| (n.clone(), TensorView::new(*d, s.clone(), b).expect("consistent raw tensor")))
        .collect();
    let meta: Option<HashMap<String, String>> = metadata.map(|m| m.into_iter().collect());
    safetensors::serialize(views, meta).expect("serialise raw tensors")
}

/// Writes raw tensors and metadata to `dir/name`, returning the path.
pub fn write_raw(
    dir: &Path,
    name: &str,
    tensors: &[Raw],
    metadata: Option<BTreeMap<String, String>>,
) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, raw_bytes(tensors, metadata)).expect("write raw file");
    path
}

/// Raw tensors of a valid checkpoint of `config` (theta and phi as the config requires).
pub fn raw_checkpoint_tensors(config: &Config, seed: u64) -> Vec<Raw> {
    let p = params(config, seed);
    p.present_slots(config)
        .into_iter()
        .map(|s| {
            let v = p.slot(config, s.slot).expect("present slot");
            raw_f32(&s.name, s.shape, v)
        })
        .collect()
}

/// `__metadata__` holding `config` as `metasched.config`.
pub fn config_meta(config: &Config) -> BTreeMap<String, String> {
    BTreeMap::from([(
        "metasched.config".to_string(),
        serde_json::to_string(config).expect("config serialises"),
    )])
}

/// `__metadata__` holding the given text as `metasched.config`.
pub fn config_text_meta(text: &str) -> BTreeMap<String, String> {
    BTreeMap::from([("metasched.config".to_string(), text.to_string())])
}

/// Bit patterns of every parameter value, slot by slot.
pub fn bits(p: &Params<f32>) -> Vec<u32> {
    p.values().map(|x| x.to_bits()).collect()
}

/// Asserts that `res` failed with an error matching `$pat`, flagged as bad input, whose
/// one-line message contains every needle; evaluates to the error.
#[macro_export]
macro_rules! assert_bad {
    ($res:expr, $pat:pat, $($needle:expr),+ $(,)?) => {{
        let e = $res.expect_err("expected an error");
        assert!(matches!(e, $pat), "wrong variant: {e:?}");
        let msg = e.to_string();
        $(assert!(msg.contains($needle), "message `{msg}` lacks `{}`", $needle);)+
        assert!(!msg.contains('\n'), "message spans lines: `{msg}`");
        assert!(e.is_bad_input(), "not flagged as bad input: {e:?}");
        e
    }};
}
