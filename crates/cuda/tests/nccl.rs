//! [`metasched_cuda::NcclCollective`] sums exactly across two GPUs, like the device-agnostic
//! collectives of `metasched-collective` (ignored without the GPUs); without the `cuda`
//! feature it cannot be made and says so.

#[cfg(feature = "cuda")]
fn data(rank: usize, round: usize, len: usize) -> Vec<i64> {
    (0..len)
        .map(|i| ((rank * 1_000_003 + round * 7919 + i) as i64) * if i % 2 == 0 { 1 } else { -1 })
        .collect()
}

#[cfg(feature = "cuda")]
#[test]
#[ignore = "needs 2 GPUs"]
fn nccl_all_reduce_over_two_gpus() {
    use std::sync::Arc;
    use std::sync::atomic::AtomicBool;
    use std::time::Duration;

    use metasched_collective::Collective;
    use metasched_cuda::{CudaRuntime, NcclCollective};
    let id = metasched_cuda::nccl::nccl_unique_id_bytes().expect("NCCL");
    let handles: Vec<_> = (0..2)
        .map(|rank| {
            let id = id.clone();
            std::thread::spawn(move || {
                let rt = CudaRuntime::new(rank).expect("a GPU per rank");
                let cancel = Arc::new(AtomicBool::new(false));
                let mut c = NcclCollective::join(&rt, rank, 2, &id, Duration::from_secs(60), cancel)
                    .expect("communicator");
                let mut v = data(rank, 0, 1000);
                c.all_reduce_sum_i64(&mut v).expect("all-reduce");
                v
            })
        })
        .collect();
    let want: Vec<i64> = (0..1000).map(|i| data(0, 0, 1000)[i] + data(1, 0, 1000)[i]).collect();
    for h in handles {
        assert_eq!(h.join().expect("rank"), want);
    }
}

#[cfg(not(feature = "cuda"))]
#[test]
fn nccl_without_the_cuda_feature_is_a_clear_error() {
    let e = metasched_cuda::nccl::nccl_unique_id_bytes().expect_err("no NCCL in this build");
    assert_eq!(e, metasched_cuda::CudaError::FeatureDisabled("cuda"));
}
