//! Builds the CUDA emulator: the runtime (`kernels/emu/emu_runtime.cpp`) and every kernel
//! source `kernels/*.cu`, compiled as C++17 by g++ with `METASCHED_EMU` defined, into one
//! static library linked into this crate.
//!
//! For each `.cu` file a small wrapper translation unit is generated (in `OUT_DIR`) that
//! includes `cuda_emu.h` and the kernel source, then lists the entry points found in it
//! (`extern "C" __global__ void NAME(`) in a registry table; a generated
//! `builtin_registry.cpp` collects those tables. The test fixtures (`kernels/fixtures/*.cu`,
//! deliberately broken kernels) get the same treatment but are compiled to objects that are
//! linked into this crate's integration-test binaries only (`rustc-link-arg-tests`); the
//! runtime finds their table through a weak symbol. Fixtures marked
//! `metasched: expect-compile-error` are deliberately invalid and are skipped.
//!
//! It also writes `kernel_table.rs` (included by `src/kernels/mod.rs`): for every entry point
//! of `kernels/*.cu`, its `KernelId` variant (the name without `_f32`, in CamelCase), source
//! file and parameter list as parsed from its signature, so that no parameter list is typed
//! twice and a kernel added to a `.cu` file without a `KernelId` variant fails to compile.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

const ENTRY_MARK: &str = "extern \"C\" __global__ void ";

/// Marks a fixture that must fail to compile (checked under NVRTC by `kernels/check_ptx.sh`),
/// which the emulator build leaves out.
const EXPECT_COMPILE_ERROR: &str = "metasched: expect-compile-error";

fn main() {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let kernels = manifest.join("../../kernels").canonicalize().expect("the kernels/ directory exists");
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR")).join("emu");
    std::fs::create_dir_all(&out).expect("OUT_DIR is writable");
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed={}", kernels.display());

    let builtin = generate(&kernels, &out, "builtin", "metasched_emu_builtin_registry");
    let mut lib = emulator_build(&kernels);
    lib.file(kernels.join("emu/emu_runtime.cpp"));
    for f in &builtin {
        lib.file(f);
    }
    lib.compile("metasched_emu");

    write_if_changed(
        &PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR")).join("kernel_table.rs"),
        &kernel_table(&kernels),
    );

    let fixtures = generate(&kernels.join("fixtures"), &out, "fixture", "metasched_emu_fixture_registry");
    if !fixtures.is_empty() {
        let mut fx = emulator_build(&kernels);
        fx.cargo_metadata(false);
        for f in &fixtures {
            fx.file(f);
        }
        for obj in fx.compile_intermediates() {
            println!("cargo:rustc-link-arg-tests={}", obj.display());
        }
    }
}

/// The compiler settings shared by the library and the fixtures.
fn emulator_build(kernels: &Path) -> cc::Build {
    let mut b = cc::Build::new();
    b.cpp(true)
        .std("c++17")
        .opt_level(2)
        .define("METASCHED_EMU", None)
        .include(kernels)
        .include(kernels.join("emu"))
        .warnings(true)
        .extra_warnings(true)
        .flag("-fno-strict-aliasing");
    // METASCHED_EMU_UCONTEXT=1 forces the portable ucontext fiber switch (the default on
    // x86-64 is a hand-written one without signal-mask system calls), e.g. to compare them.
    println!("cargo:rerun-if-env-changed=METASCHED_EMU_UCONTEXT");
    if std::env::var_os("METASCHED_EMU_UCONTEXT").is_some_and(|v| v == "1") {
        b.define("METASCHED_EMU_UCONTEXT", None);
    }
    b
}

/// Entry points declared in a kernel source, in file order.
fn entry_points(source: &str) -> Vec<String> {
    let mut names = Vec::new();
    for (at, _) in source.match_indices(ENTRY_MARK) {
        let line_start = source[..at].rfind('\n').map_or(0, |i| i + 1);
        if source[line_start..at].trim_start().starts_with("//") {
            continue;
        }
        let rest = &source[at + ENTRY_MARK.len()..];
        let name: String = rest.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
        if !name.is_empty() {
            names.push(name);
        }
    }
    names
}

/// Writes a wrapper translation unit per `.cu` file of `dir` and one registry collecting their
/// tables under `registry_fn`; returns the files to compile (none if `dir` has no `.cu`).
fn generate(dir: &Path, out: &Path, prefix: &str, registry_fn: &str) -> Vec<PathBuf> {
    let mut sources: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(rd) => rd
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "cu"))
            .collect(),
        Err(_) => return Vec::new(),
    };
    sources.sort();
    let mut files = Vec::new();
    let mut tables = Vec::new();
    for src in &sources {
        let text = std::fs::read_to_string(src).expect("kernel source is readable UTF-8");
        if text.contains(EXPECT_COMPILE_ERROR) {
            continue;
        }
        let stem = src.file_stem().and_then(|s| s.to_str()).expect("kernel file names are UTF-8");
        let ident: String = stem.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }).collect();
        let table = format!("metasched_emu_table_{prefix}_{ident}");
        let names = entry_points(&text);
        assert!(!names.is_empty(), "{} declares no `{}...` entry point", src.display(), ENTRY_MARK.trim());
        let mut cpp = String::new();
        let _ = writeln!(cpp, "// Generated by crates/cuda/build.rs from {}; do not edit.", src.display());
        let _ = writeln!(cpp, "#include \"cuda_emu.h\"");
        let _ = writeln!(cpp, "#include \"{}\"", src.display());
        let _ = writeln!(cpp, "namespace {{");
        let _ = writeln!(cpp, "const ::metasched_emu::KernelEntry kEntries[] = {{");
        for n in &names {
            let _ = writeln!(cpp, "    METASCHED_EMU_KERNEL({n}),");
        }
        let _ = writeln!(cpp, "}};");
        let _ = writeln!(cpp, "}}  // namespace");
        let _ = writeln!(
            cpp,
            "extern \"C\" const ::metasched_emu::KernelEntry* {table}(std::size_t* count) {{\n    \
             *count = sizeof(kEntries) / sizeof(kEntries[0]);\n    return kEntries;\n}}"
        );
        let path = out.join(format!("{prefix}_{ident}.emu.cpp"));
        write_if_changed(&path, &cpp);
        files.push(path);
        tables.push(table);
    }
    if files.is_empty() {
        return files;
    }
    let mut reg = String::new();
    let _ = writeln!(reg, "// Generated by crates/cuda/build.rs; do not edit.");
    let _ = writeln!(reg, "#include \"cuda_emu.h\"");
    let _ = writeln!(reg, "using TableFn = const ::metasched_emu::KernelEntry* (*)(std::size_t*);");
    for t in &tables {
        let _ = writeln!(reg, "extern \"C\" const ::metasched_emu::KernelEntry* {t}(std::size_t* count);");
    }
    let _ = writeln!(reg, "namespace {{\nconst TableFn kTables[] = {{");
    for t in &tables {
        let _ = writeln!(reg, "    &{t},");
    }
    let _ = writeln!(reg, "}};\n}}  // namespace");
    let _ = writeln!(
        reg,
        "extern \"C\" const TableFn* {registry_fn}(std::size_t* count) {{\n    \
         *count = sizeof(kTables) / sizeof(kTables[0]);\n    return kTables;\n}}"
    );
    let path = out.join(format!("{prefix}_registry.cpp"));
    write_if_changed(&path, &reg);
    files.push(path);
    files
}

/// The parameters of every entry point of `dir/*.cu`, file by file (sorted), as Rust source:
/// `KernelId::generated_entry_point`, `generated_source_file` and `generated_params`.
fn kernel_table(dir: &Path) -> String {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("the kernels/ directory is readable")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "cu"))
        .collect();
    files.sort();
    let (mut entry, mut file, mut family, mut params) =
        (String::new(), String::new(), String::new(), String::new());
    for path in &files {
        let text = std::fs::read_to_string(path).expect("kernel source is readable UTF-8");
        let name = path.file_name().and_then(|s| s.to_str()).expect("kernel file names are UTF-8");
        let fam = camel(name.trim_end_matches(".cu"));
        for (kernel, list) in signatures(&text) {
            let variant = camel(kernel.trim_end_matches("_f32"));
            let _ = writeln!(entry, "            KernelId::{variant} => \"{kernel}\",");
            let _ = writeln!(file, "            KernelId::{variant} => \"{name}\",");
            let _ = writeln!(family, "            KernelId::{variant} => Family::{fam},");
            let _ = write!(params, "            KernelId::{variant} => &[");
            for (ty, pname) in list {
                let _ = write!(params, "Param {{ name: \"{pname}\", ty: ParamType::{ty} }}, ");
            }
            let _ = writeln!(params, "],");
        }
    }
    format!(
        "// Generated by crates/cuda/build.rs from kernels/*.cu; do not edit.\n\
         impl KernelId {{\n\
         \x20   /// The `extern \"C\" __global__` function, `<op>_<pass>_f32` (from its source).\n\
         \x20   pub fn entry_point(self) -> &'static str {{\n        match self {{\n{entry}        }}\n    }}\n\n\
         \x20   /// The kernel's source file, relative to `kernels/`.\n\
         \x20   pub fn source_file(self) -> &'static str {{\n        match self {{\n{file}        }}\n    }}\n\n\
         \x20   /// The family (source file) the kernel belongs to.\n\
         \x20   pub fn family(self) -> Family {{\n        match self {{\n{family}        }}\n    }}\n\n\
         \x20   /// The parameters, in order (outputs first), as its signature declares them.\n\
         \x20   pub fn params(self) -> &'static [Param] {{\n        match self {{\n{params}        }}\n    }}\n\
         }}\n"
    )
}

/// `snake_case` to `CamelCase`: the `KernelId` variant of an entry point (without `_f32`), the
/// `Family` variant of a file stem.
fn camel(snake: &str) -> String {
    snake
        .split('_')
        .map(|w| {
            let mut c = w.chars();
            c.next().map(|f| f.to_ascii_uppercase().to_string() + c.as_str()).unwrap_or_default()
        })
        .collect()
}

/// Every entry point of `source` with its parameters: `(ParamType variant, name)` each.
fn signatures(source: &str) -> Vec<(String, Vec<(&'static str, String)>)> {
    let mut out = Vec::new();
    for name in entry_points(source) {
        let mark = format!("{ENTRY_MARK}{name}(");
        let at = source.find(&mark).expect("entry_points found it") + mark.len();
        let end = at + source[at..].find(')').expect("a signature ends with `)`");
        let mut params = Vec::new();
        for p in source[at..end].split(',') {
            let words: Vec<&str> =
                p.split_whitespace().filter(|w| *w != "const" && *w != "__restrict__").collect();
            let (pname, ty) = words.split_last().expect("a parameter has a name");
            let ty = ty.join(" ");
            let pointer = ty.ends_with('*') || pname.starts_with('*');
            let pname = pname.trim_start_matches('*').to_string();
            let variant = match (ty.trim_end_matches('*').trim(), pointer) {
                ("float", false) => "F32",
                ("int", false) => "I32",
                ("unsigned", false) => "U32",
                ("float", true) => "PtrF32",
                ("int", true) => "PtrI32",
                ("unsigned", true) => "PtrU32",
                (other, _) => {
                    panic!("{name}: parameter `{pname}` has a type the registry cannot pass: {other}")
                }
            };
            params.push((variant, pname));
        }
        out.push((name, params));
    }
    out
}

fn write_if_changed(path: &Path, text: &str) {
    if std::fs::read_to_string(path).ok().as_deref() != Some(text) {
        std::fs::write(path, text).expect("OUT_DIR is writable");
    }
}
