//! What a run would need of the machine, checked before anything is allocated or written:
//! a size that cannot fit (`--meta-batch 1000000000`, `--hidden 100000`) is refused with
//! exit 2 and one line, instead of aborting on a failed allocation or stalling in swap.

/// Total memory of this machine in bytes (`MemTotal` of `/proc/meminfo`); `None` where it
/// cannot be read (then no size is refused for memory).
pub fn total_memory() -> Option<f64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024.0)
}

/// `bytes` for people: `1.2 GiB`.
pub fn human(bytes: f64) -> String {
    const UNITS: [&str; 7] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    let mut v = bytes;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == UNITS.len() - 1 && v >= 1024.0 {
        return format!("{bytes:.1e} B");
    }
    format!("{v:.1} {}", UNITS[unit])
}

/// One term of a memory estimate: bytes, what they hold and the flags that set them.
#[derive(Debug, Clone, PartialEq)]
pub struct Need {
    /// Bytes (an `f64`, so absurd requests cannot overflow).
    pub bytes: f64,
    /// What the bytes hold, naming the flags that size them.
    pub what: String,
}

/// Refuses `needs` when together they exceed this machine's memory: the message names the
/// largest term (and so its flags), the total and what the machine has.
pub fn check_memory(needs: &[Need]) -> Result<(), String> {
    let Some(total) = total_memory() else { return Ok(()) };
    check_memory_against(needs, total)
}

/// [`check_memory`] against `total` bytes.
pub fn check_memory_against(needs: &[Need], total: f64) -> Result<(), String> {
    let sum: f64 = needs.iter().map(|n| n.bytes).sum();
    if sum.is_finite() && sum <= total {
        return Ok(());
    }
    let largest = needs.iter().max_by(|a, b| a.bytes.total_cmp(&b.bytes));
    let what = largest.map(|n| format!("{} ({})", n.what, human(n.bytes))).unwrap_or_default();
    Err(format!(
        "the run would need about {} of memory, mostly {what}, but this machine has {}",
        human(sum),
        human(total)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_print_for_people_and_absurd_ones_do_not_overflow() {
        assert_eq!(human(512.0), "512.0 B");
        assert_eq!(human(3.0 * 1024.0 * 1024.0 * 1024.0), "3.0 GiB");
        assert!(human(1e30).ends_with(" B"), "{}", human(1e30));
        let needs = [
            Need { bytes: 10.0, what: "small (--a)".into() },
            Need { bytes: f64::INFINITY, what: "huge (--b)".into() },
        ];
        let e = check_memory_against(&needs, 1e12).expect_err("refused");
        assert!(e.contains("--b") && e.contains("this machine has"), "{e}");
        assert!(check_memory_against(&needs[..1], 1e12).is_ok());
    }

    #[test]
    fn this_machine_reports_its_memory() {
        if cfg!(target_os = "linux") {
            assert!(total_memory().is_some_and(|m| m > 1e6));
        }
    }
}
