//! `meta-coord compare A B`: every f32 tensor of two tensor files (outputs of `metagrad`,
//! `eval`, checkpoints) compared elementwise, `|a - b| <= atol + rtol * |b|` (B is the
//! reference), or bitwise with `--exact`. Used by `kernels/gpu_check.sh` to hold a device's
//! outputs against the CPU engine's without numpy.

use anyhow::{Result, bail};
use metasched_formats::{Dtype, FileKind, TensorFile};

use crate::cli::CompareArgs;

/// Runs `compare`: prints one line per tensor and fails naming the worst one.
pub fn run(args: &CompareArgs) -> Result<()> {
    let a = TensorFile::read(&args.a, FileKind::Output)?;
    let b = TensorFile::read(&args.b, FileKind::Output)?;
    let mut names_a: Vec<&str> = a.names().collect();
    let mut names_b: Vec<&str> = b.names().collect();
    names_a.sort_unstable();
    names_b.sort_unstable();
    if names_a != names_b {
        bail!(
            "{} and {} hold different tensors: {names_a:?} vs {names_b:?}",
            args.a.display(),
            args.b.display()
        );
    }
    let mut failed = Vec::new();
    let mode = if args.exact {
        "bitwise".to_string()
    } else {
        format!("atol {:e}, rtol {:e}", args.atol, args.rtol)
    };
    println!("compare {} against {} ({mode})", args.a.display(), args.b.display());
    println!("{:<34} {:>9} {:>13} {:>13} {:>7}", "tensor", "elements", "max |a-b|", "max rel", "result");
    for name in names_a {
        if a.shape(name) != b.shape(name) {
            bail!("tensor {name}: shape {:?} vs {:?}", a.shape(name), b.shape(name));
        }
        if a.dtype(name) != Some(Dtype::F32) || b.dtype(name) != Some(Dtype::F32) {
            let same = a.i64(name).ok() == b.i64(name).ok() && a.i64(name).is_ok();
            println!("{name:<34} {:>9} {:>13} {:>13} {:>7}", "-", "-", "-", if same { "ok" } else { "FAIL" });
            if !same {
                failed.push(name.to_string());
            }
            continue;
        }
        let (va, vb) = (a.f32(name)?, b.f32(name)?);
        let (mut max_abs, mut max_rel, mut ok) = (0f64, 0f64, true);
        for (&x, &y) in va.iter().zip(&vb) {
            let (x, y) = (f64::from(x), f64::from(y));
            let d = (x - y).abs();
            let good = if args.exact {
                x.to_bits() == y.to_bits() || (x.is_nan() && y.is_nan())
            } else {
                d <= args.atol + args.rtol * y.abs() || (x.is_nan() && y.is_nan())
            };
            ok &= good;
            if d.is_nan() || d > max_abs {
                max_abs = d;
            }
            let rel = d / y.abs().max(f64::MIN_POSITIVE);
            if rel.is_nan() || rel > max_rel {
                max_rel = rel;
            }
        }
        println!(
            "{name:<34} {:>9} {max_abs:>13.3e} {max_rel:>13.3e} {:>7}",
            va.len(),
            if ok { "ok" } else { "FAIL" }
        );
        if !ok {
            failed.push(name.to_string());
        }
    }
    if !failed.is_empty() {
        bail!("{} tensor(s) differ beyond the tolerance: {}", failed.len(), failed.join(", "));
    }
    println!("all tensors agree");
    Ok(())
}
