//! `meta-coord inspect`: what a checkpoint holds.

use anyhow::Result;
use metasched_formats::read_checkpoint;

use crate::cli::InspectArgs;

fn stats(v: &[f32]) -> (f32, f32, f64) {
    let min = v.iter().copied().fold(f32::INFINITY, f32::min);
    let max = v.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mean = v.iter().map(|&x| x as f64).sum::<f64>() / v.len().max(1) as f64;
    (min, max, mean)
}

/// Runs `inspect`.
pub fn run(args: &InspectArgs) -> Result<()> {
    let ckpt = read_checkpoint(&args.checkpoint)?;
    println!("{}", args.checkpoint.display());
    let json: serde_json::Value = serde_json::from_str(&ckpt.config_json_text()?)?;
    println!("metasched.config = {}", serde_json::to_string_pretty(&json)?);
    for (k, v) in &ckpt.extra_metadata {
        println!("{k} = {v}");
    }
    println!("{:<28} {:<12} {:>12} {:>12} {:>12}", "tensor", "shape", "min", "max", "mean");
    let mut rows: Vec<(String, Vec<usize>, &[f32])> = ckpt.tensors();
    rows.extend(ckpt.extra_tensors.iter().map(|(n, (s, v))| (n.clone(), s.clone(), v.as_slice())));
    let mut total = 0;
    for (name, shape, v) in rows {
        let (min, max, mean) = stats(v);
        total += v.len();
        println!("{name:<28} {:<12} {min:>12.4e} {max:>12.4e} {mean:>12.4e}", format!("{shape:?}"));
    }
    println!("{total} values");
    Ok(())
}
