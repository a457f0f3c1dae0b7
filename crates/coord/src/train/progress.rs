//! The training progress bar: a bar of fixed width (a terminal-wide bar shrinks to `[]` once
//! the message fills a narrow terminal) and rates with two significant digits (`250/s`, not
//! `248.5331/s`).

use indicatif::{ProgressBar, ProgressState, ProgressStyle};

/// Characters of the bar itself.
const BAR_WIDTH: usize = 30;

/// A progress bar over `len` meta-steps, starting at `pos` (a resumed run starts part-way).
pub fn bar(len: u64, pos: u64) -> ProgressBar {
    let template =
        format!("{{elapsed_precise}} [{{bar:{BAR_WIDTH}}}] {{pos}}/{{len}} {{rate}}/s ETA {{eta}} | {{msg}}");
    let style = ProgressStyle::with_template(&template)
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .with_key("rate", |state: &ProgressState, w: &mut dyn std::fmt::Write| {
            let _ = w.write_str(&two_significant(state.per_sec()));
        });
    let bar = ProgressBar::new(len).with_position(pos);
    bar.set_style(style);
    bar
}

/// `x` rounded to two significant digits, without exponent: `248.53` → `250`, `12.34` →
/// `12`, `1.234` → `1.2`, `0.01234` → `0.012`; `0` for zero or a non-finite rate.
pub fn two_significant(x: f64) -> String {
    if !x.is_finite() || x == 0.0 {
        return "0".into();
    }
    let decimals = 1 - x.abs().log10().floor() as i32;
    if decimals > 0 {
        format!("{x:.*}", decimals as usize)
    } else {
        let unit = 10f64.powi(-decimals);
        format!("{:.0}", (x / unit).round() * unit)
    }
}

#[cfg(test)]
mod tests {
    use super::two_significant;

    #[test]
    fn rates_have_two_significant_digits() {
        let cases = [
            (248.5331, "250"),
            (12.34, "12"),
            (1.234, "1.2"),
            (0.01234, "0.012"),
            (3456.0, "3500"),
            (9.5, "9.5"),
            (0.0, "0"),
            (f64::NAN, "0"),
        ];
        for (x, want) in cases {
            assert_eq!(two_significant(x), want, "{x}");
        }
    }
}
