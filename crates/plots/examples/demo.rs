//! Renders example plots (synthetic data) into a directory, default `/tmp/plots-demo`:
//! `cargo run -p metasched-plots --example demo -- [DIR]`.

use std::path::PathBuf;

use metasched_plots::{plot_lr_schedule, plot_meta_loss};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = PathBuf::from(std::env::args().nth(1).unwrap_or_else(|| "/tmp/plots-demo".into()));
    std::fs::create_dir_all(&dir)?;

    // A plausible learned schedule: warm-up then decay, different scale per layer tensor.
    let groups: Vec<String> = ["conv1.weight", "conv1.bias", "conv2.weight", "conv2.bias"]
        .iter()
        .chain(&["fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"])
        .map(|s| s.to_string())
        .collect();
    let (t_steps, g) = (20, groups.len());
    let mut rates = Vec::new();
    let mut band = Vec::new();
    for t in 0..t_steps {
        for k in 0..g {
            let scale = 0.02 * (1.0 + k as f32 * 0.35) * if k % 2 == 1 { 1.6 } else { 1.0 };
            let x = t as f32 / (t_steps - 1) as f32;
            let r = scale * (x * 8.0).min(1.0) * (1.0 - 0.7 * x) + 0.002;
            rates.push(r);
            band.push((r * 0.7, r * 1.4));
        }
    }
    plot_lr_schedule(
        &dir.join("lr_schedule.png"),
        "learned learning rates (mean over 600 tasks)",
        &rates,
        t_steps,
        &groups,
        Some(&band),
    )?;

    let rates1: Vec<f32> = rates[rates.len() - g..].to_vec();
    let band1: Vec<(f32, f32)> = rates1.iter().map(|r| (r * 0.8, r * 1.2)).collect();
    plot_lr_schedule(&dir.join("lr_t1.png"), "T = 1", &rates1, 1, &groups, Some(&band1))?;

    let many: Vec<String> = (0..70usize)
        .map(|i| {
            format!(
                "encoder.blocks.{}.attention.{}",
                i / 2,
                if i.is_multiple_of(2) { "weight" } else { "bias" }
            )
        })
        .collect();
    let many_rates: Vec<f32> = (0..30 * 70)
        .map(|i| {
            let (t, k) = (i / 70, i % 70);
            0.001 * (1.0 + k as f32 / 10.0) * (1.0 - t as f32 / 40.0)
        })
        .collect();
    plot_lr_schedule(&dir.join("lr_many.png"), "70 groups", &many_rates, 30, &many, None)?;
    plot_lr_schedule(&dir.join("lr_empty.png"), "no steps", &[], 0, &groups, None)?;

    // Meta-loss: noisy decaying curve, 3000 logged steps, evaluation every 250 steps.
    let train: Vec<(u64, f64)> = (0..3000u64)
        .map(|i| {
            let noise = (((i * 2_654_435_761) % 1000) as f64 / 1000.0 - 0.5) * 0.6;
            (i, (1.8 * (-(i as f64) / 700.0).exp() + 0.04) * noise.exp())
        })
        .collect();
    let eval: Vec<(u64, f64, f64)> = (0..=12u64)
        .map(|k| {
            let s = k * 250;
            let m = 1.8 * (-(s as f64) / 700.0).exp() + 0.045;
            (s, m, 0.15 * m)
        })
        .collect();
    plot_meta_loss(&dir.join("meta_loss.png"), "meta-loss (sinusoid, 8-step inner loop)", &train, &eval)?;
    // Late training: the loss moves within less than one decade.
    let late: Vec<(u64, f64)> = train.iter().map(|&(s, y)| (s + 20_000, 0.3 + 0.2 * y / (1.0 + y))).collect();
    plot_meta_loss(&dir.join("meta_loss_narrow.png"), "meta-loss, steps 20000-23000", &late, &[])?;
    plot_meta_loss(&dir.join("meta_loss_one.png"), "single point", &[(0, 0.7)], &[(0, 0.7, 0.9)])?;
    plot_meta_loss(&dir.join("meta_loss_empty.png"), "nothing logged yet", &[], &[])?;
    println!("wrote plots to {}", dir.display());
    Ok(())
}
