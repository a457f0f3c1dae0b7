//! The probe's "driver present" branch without a GPU: a stub `libcuda.so.1`
//! (`tests/stubs/cuda_stub.c`) on `LD_LIBRARY_PATH` of a re-run of this test binary. The probe
//! must load it by its soname and count its devices through cudarc (`cuInit`,
//! `cuDeviceGetCount`), and `CudaRuntime::new` must turn the stub's refusal of real work
//! (`cuDeviceGet` fails) and an absent ordinal into typed errors, never a panic.

#[path = "stubs/mod.rs"]
mod stubs;

use std::process::Command;

const TEST: &str = "a_stub_driver_is_probed_counted_and_refused_without_a_panic";

#[test]
fn a_stub_driver_is_probed_counted_and_refused_without_a_panic() {
    if std::env::var_os("STUB_CUDA_DEVICES").is_none() {
        let stub = stubs::cuda_driver("");
        let out = Command::new(std::env::current_exe().expect("test binary"))
            .args([TEST, "--exact", "--nocapture", "--test-threads=1"])
            .env("LD_LIBRARY_PATH", &stub.0)
            .env("STUB_CUDA_DEVICES", "2")
            .env("STUB_CUDA_DIR", &stub.0)
            .env_remove("METASCHED_CUDA_LIB_DIR")
            .output()
            .expect("re-run the test binary");
        let text =
            format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        println!("{text}");
        assert!(out.status.success(), "the test with the stub driver failed:\n{text}");
        assert!(text.contains("1 passed"), "{text}");
        return;
    }
    let dir = std::path::PathBuf::from(std::env::var_os("STUB_CUDA_DIR").expect("set by the parent"));
    let lib = metasched_cuda::probe::driver_available().expect("the stub driver is found");
    println!("probe: {lib:?}");
    assert_eq!(lib.loaded_as, "libcuda.so.1", "{lib:?}");
    assert_eq!(lib.path.as_deref(), Some(dir.join("libcuda.so.1").as_path()), "{lib:?}");
    if cfg!(not(feature = "cuda")) {
        assert!(metasched_cuda::probe::cuda_devices().is_err());
        return;
    }
    assert_eq!(metasched_cuda::probe::cuda_devices().expect("cuDeviceGetCount"), 2);
    let e = metasched_cuda::CudaRuntime::new(0).expect_err("the stub does no real work");
    println!("cuda:0: {e}");
    assert!(e.to_string().contains("stub driver"), "{e}");
    let e = metasched_cuda::CudaRuntime::new(5).expect_err("no such device");
    assert!(e.to_string().contains("no device cuda:5: the driver reports 2 device(s)"), "{e}");
}
