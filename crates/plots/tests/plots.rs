//! Every plot writes a valid PNG of the documented size, for normal input and edge cases,
//! and leaves no temporary file behind.

use std::fs;
use std::path::Path;

use metasched_plots::{HEIGHT, PlotError, WIDTH, plot_lr_schedule, plot_meta_loss};

const PNG_SIGNATURE: [u8; 8] = [0x89, b'P', b'N', b'G', b'\r', b'\n', 0x1a, b'\n'];

fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = 0xffff_ffffu32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 { (crc >> 1) ^ 0xedb8_8320 } else { crc >> 1 };
        }
    }
    !crc
}

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

/// Checks the signature, walks every chunk (lengths and CRCs), requires IHDR first, at least
/// one IDAT and IEND last, and returns the (width, height) from IHDR.
fn png_dimensions(path: &Path) -> (u32, u32) {
    let bytes = fs::read(path).expect("read png");
    assert!(bytes.len() > 100, "{} is too small: {} bytes", path.display(), bytes.len());
    assert_eq!(bytes[..8], PNG_SIGNATURE, "bad PNG signature");
    let mut pos = 8;
    let mut chunks = Vec::new();
    let mut dims = None;
    while pos < bytes.len() {
        assert!(pos + 12 <= bytes.len(), "truncated chunk header");
        let len = be32(&bytes[pos..]) as usize;
        let kind = &bytes[pos + 4..pos + 8];
        let end = pos + 8 + len;
        assert!(end + 4 <= bytes.len(), "truncated chunk");
        assert_eq!(crc32(&bytes[pos + 4..end]), be32(&bytes[end..]), "bad CRC");
        if kind == b"IHDR" {
            assert_eq!(len, 13);
            let data = &bytes[pos + 8..end];
            assert_eq!(data[8], 8, "bit depth");
            dims = Some((be32(&data[0..]), be32(&data[4..])));
        }
        chunks.push(String::from_utf8_lossy(kind).into_owned());
        pos = end + 4;
    }
    assert_eq!(chunks.first().map(String::as_str), Some("IHDR"));
    assert_eq!(chunks.last().map(String::as_str), Some("IEND"));
    assert!(chunks.iter().any(|c| c == "IDAT"));
    dims.expect("IHDR")
}

/// The directory holds exactly `names` (no temporary files).
fn assert_only(dir: &Path, names: &[&str]) {
    let mut found: Vec<String> = fs::read_dir(dir)
        .expect("read dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    found.sort();
    let mut want: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    want.sort();
    assert_eq!(found, want);
}

fn assert_valid(path: &Path) {
    assert_eq!(png_dimensions(path), (WIDTH, HEIGHT), "{}", path.display());
}

fn names(g: usize) -> Vec<String> {
    (0..g)
        .map(|i| format!("layer{}.{}", i / 2, if i.is_multiple_of(2) { "weight" } else { "bias" }))
        .collect()
}

fn schedule(t: usize, g: usize) -> (Vec<f32>, Vec<(f32, f32)>) {
    let mut rates = Vec::with_capacity(t * g);
    let mut band = Vec::with_capacity(t * g);
    for s in 0..t {
        for k in 0..g {
            let r = 0.01 * (1.0 + k as f32 * 0.3) * (-(s as f32) / (t as f32 + 1.0) * 2.0).exp();
            rates.push(r);
            band.push((r * 0.8, r * 1.25));
        }
    }
    (rates, band)
}

#[test]
fn lr_schedule_normal_and_edge_cases() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let mut written: Vec<&str> = Vec::new();
    let mut check = |file: &'static str, res: metasched_plots::Result<()>| {
        res.unwrap_or_else(|e| panic!("{file}: {e}"));
        if !written.contains(&file) {
            written.push(file);
        }
        assert_valid(&d.join(file));
        assert_only(d, &written);
    };

    let (rates, band) = schedule(50, 6);
    check("normal.png", plot_lr_schedule(&d.join("normal.png"), "lr", &rates, 50, &names(6), Some(&band)));
    check("noband.png", plot_lr_schedule(&d.join("noband.png"), "lr", &rates, 50, &names(6), None));

    let (rates, band) = schedule(1, 4);
    check("t1.png", plot_lr_schedule(&d.join("t1.png"), "T = 1", &rates, 1, &names(4), Some(&band)));
    check("t1nb.png", plot_lr_schedule(&d.join("t1nb.png"), "T = 1", &rates, 1, &names(4), None));

    let (rates, band) = schedule(2, 1);
    check("t2.png", plot_lr_schedule(&d.join("t2.png"), "T = 2", &rates, 2, &names(1), Some(&band)));

    check("t0.png", plot_lr_schedule(&d.join("t0.png"), "empty", &[], 0, &names(3), None));
    check("g0.png", plot_lr_schedule(&d.join("g0.png"), "empty", &[], 7, &[], Some(&[])));

    let nan = vec![f32::NAN; 20];
    check("nan.png", plot_lr_schedule(&d.join("nan.png"), "nan", &nan, 10, &names(2), None));

    let (mut rates, mut band) = schedule(30, 3);
    rates[3] = f32::NAN;
    rates[10] = f32::INFINITY;
    rates[12] = f32::NEG_INFINITY;
    rates[50] = f32::NAN;
    rates[56] = f32::NAN;
    band[7] = (f32::NAN, 1.0);
    band[20] = (0.02, 0.001); // reversed order
    check("gaps.png", plot_lr_schedule(&d.join("gaps.png"), "gaps", &rates, 30, &names(3), Some(&band)));

    let constant = vec![0.0f32; 40];
    check("const.png", plot_lr_schedule(&d.join("const.png"), "zero", &constant, 20, &names(2), None));

    let (rates, band) = schedule(100_000, 4);
    check("long.png", plot_lr_schedule(&d.join("long.png"), "long", &rates, 100_000, &names(4), Some(&band)));

    let many: Vec<String> =
        (0..150).map(|i| format!("encoder.blocks.{i}.attention.query_key_value.weight")).collect();
    let (rates, band) = schedule(10, 150);
    check("many.png", plot_lr_schedule(&d.join("many.png"), "many", &rates, 10, &many, Some(&band)));

    let huge = vec![f32::MAX, -f32::MAX, 1e-30, f32::MIN_POSITIVE];
    check("huge.png", plot_lr_schedule(&d.join("huge.png"), "huge", &huge, 2, &names(2), None));

    // Errors leave nothing behind.
    let err = plot_lr_schedule(&d.join("bad.png"), "bad", &[0.1; 5], 2, &names(3), None);
    assert!(matches!(err, Err(PlotError::InvalidInput(_))), "{err:?}");
    let err = plot_lr_schedule(&d.join("bad.png"), "bad", &[0.1; 6], 2, &names(3), Some(&[(0.0, 1.0)]));
    assert!(matches!(err, Err(PlotError::InvalidInput(_))), "{err:?}");
    let err = plot_lr_schedule(&d.join("missing/x.png"), "bad", &[0.1; 6], 2, &names(3), None);
    assert!(matches!(err, Err(PlotError::Io { .. })), "{err:?}");
    let err = plot_lr_schedule(Path::new("/"), "bad", &[0.1; 6], 2, &names(3), None);
    assert!(matches!(err, Err(PlotError::InvalidInput(_))), "{err:?}");
    assert_only(d, &written);
}

fn train_curve(n: u64) -> Vec<(u64, f64)> {
    (0..n)
        .map(|i| {
            let noise = ((i * 2_654_435_761) % 1000) as f64 / 1000.0;
            (i * 10, 2.0 * (-(i as f64) / (n as f64 / 3.0)).exp() + 0.05 + 0.1 * noise)
        })
        .collect()
}

#[test]
fn meta_loss_normal_and_edge_cases() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let mut written: Vec<&str> = Vec::new();
    let mut check = |file: &'static str, res: metasched_plots::Result<()>| {
        res.unwrap_or_else(|e| panic!("{file}: {e}"));
        if !written.contains(&file) {
            written.push(file);
        }
        assert_valid(&d.join(file));
        assert_only(d, &written);
    };

    let train = train_curve(5000);
    let eval: Vec<(u64, f64, f64)> =
        (0..=10).map(|k| (k * 5000, 2.0 * (-(k as f64) / 3.3).exp() + 0.08, 0.02)).collect();
    check("normal.png", plot_meta_loss(&d.join("normal.png"), "meta", &train, &eval));
    check("train.png", plot_meta_loss(&d.join("train.png"), "meta", &train, &[]));
    check("eval.png", plot_meta_loss(&d.join("eval.png"), "meta", &[], &eval));
    check("empty.png", plot_meta_loss(&d.join("empty.png"), "meta", &[], &[]));
    check("one.png", plot_meta_loss(&d.join("one.png"), "one", &[(0, 1.5)], &[]));
    check("oneeval.png", plot_meta_loss(&d.join("oneeval.png"), "one", &[], &[(7, 0.3, 0.5)]));
    check("few.png", plot_meta_loss(&d.join("few.png"), "few", &train_curve(5), &[(20, 1.0, 0.1)]));
    check(
        "bad.png",
        plot_meta_loss(
            &d.join("bad.png"),
            "all bad",
            &[(0, 0.0), (1, -1.0), (2, f64::NAN), (3, f64::INFINITY)],
            &[(0, -1.0, 0.1), (1, f64::NAN, 0.0)],
        ),
    );
    let mut mixed = train_curve(300);
    mixed[5].1 = 0.0;
    mixed[6].1 = -3.0;
    mixed[7].1 = f64::NAN;
    mixed[8].1 = f64::NEG_INFINITY;
    mixed.swap(100, 200); // out of order
    let weird_eval = [
        (100, 0.5, f64::NAN),
        (500, 0.4, -1.0),
        (1000, 0.3, 10.0), // lower bound below zero
        (1500, 0.2, f64::MAX),
        (2000, f64::INFINITY, 0.1),
    ];
    check("mixed.png", plot_meta_loss(&d.join("mixed.png"), "mixed", &mixed, &weird_eval));
    check("huge.png", plot_meta_loss(&d.join("huge.png"), "huge", &train_curve(1_000_000), &eval));
    check(
        "extreme.png",
        plot_meta_loss(&d.join("extreme.png"), "extreme", &[(0, 1e-300), (u64::MAX, 1e300)], &[]),
    );
    check(
        "subnormal.png",
        plot_meta_loss(&d.join("subnormal.png"), "tiny", &[(0, 5e-324), (3, 1e-310)], &[]),
    );
    check("samestep.png", plot_meta_loss(&d.join("samestep.png"), "same", &[(5, 1.0), (5, 2.0)], &[]));
    check("const.png", plot_meta_loss(&d.join("const.png"), "const", &[(0, 1.0); 50], &[]));

    // Overwriting is an atomic replace.
    check("normal.png", plot_meta_loss(&d.join("normal.png"), "again", &train, &[]));

    let err = plot_meta_loss(&d.join("nope/x.png"), "x", &train, &eval);
    assert!(matches!(err, Err(PlotError::Io { .. })), "{err:?}");
    assert_only(d, &written);
}

#[test]
fn concurrent_writers_do_not_collide() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    std::thread::scope(|s| {
        for i in 0..4 {
            s.spawn(move || {
                let train = train_curve(200 + i);
                plot_meta_loss(&d.join("same.png"), "race", &train, &[]).expect("plot");
                plot_meta_loss(&d.join(format!("own{i}.png")), "own", &train, &[]).expect("plot");
            });
        }
    });
    assert_valid(&d.join("same.png"));
    assert_only(d, &["same.png", "own0.png", "own1.png", "own2.png", "own3.png"]);
}
