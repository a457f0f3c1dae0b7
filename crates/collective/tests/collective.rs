//! [`Collective`]: the in-process group sums exactly over threads, round after round, and
//! reports mismatched lengths (NCCL's test, which needs two GPUs, is in
//! `crates/cuda/tests/nccl.rs`).

use metasched_collective::{Collective, InProcessGroup};

fn data(rank: usize, round: usize, len: usize) -> Vec<i64> {
    (0..len)
        .map(|i| ((rank * 1_000_003 + round * 7919 + i) as i64) * if i % 2 == 0 { 1 } else { -1 })
        .collect()
}

#[test]
fn in_process_all_reduce_sums_exactly_over_rounds() {
    let world = 4;
    let len = 37;
    let handles: Vec<_> = InProcessGroup::new(world)
        .into_iter()
        .map(|mut member| {
            std::thread::spawn(move || {
                assert_eq!(member.world_size(), world);
                let mut results = Vec::new();
                for round in 0..5 {
                    let mut v = data(member.rank(), round, len);
                    member.all_reduce_sum_i64(&mut v).expect("all-reduce");
                    results.push(v);
                }
                results
            })
        })
        .collect();
    let results: Vec<Vec<Vec<i64>>> = handles.into_iter().map(|h| h.join().expect("member")).collect();
    for round in 0..5 {
        let want: Vec<i64> =
            (0..len).map(|i| (0..world).map(|r| data(r, round, len)[i]).sum::<i64>()).collect();
        for r in &results {
            assert_eq!(r[round], want, "round {round}");
        }
    }
}

#[test]
fn in_process_all_reduce_wraps_like_fixed_point_limbs() {
    let mut members = InProcessGroup::new(2);
    let mut b = members.pop().expect("two members");
    let mut a = members.pop().expect("two members");
    let t = std::thread::spawn(move || {
        let mut v = vec![i64::MAX];
        b.all_reduce_sum_i64(&mut v).expect("all-reduce");
        v
    });
    let mut v = vec![1];
    a.all_reduce_sum_i64(&mut v).expect("all-reduce");
    assert_eq!(v, vec![i64::MIN]);
    assert_eq!(t.join().expect("member"), vec![i64::MIN]);
}

#[test]
fn in_process_all_reduce_reports_mismatched_lengths() {
    let handles: Vec<_> = InProcessGroup::new(3)
        .into_iter()
        .map(|mut m| {
            std::thread::spawn(move || {
                let mut v = vec![1; 3 + usize::from(m.rank() == 2)];
                m.all_reduce_sum_i64(&mut v).is_err()
            })
        })
        .collect();
    for h in handles {
        assert!(h.join().expect("member"), "every member sees the error");
    }
}

#[test]
fn single_member_group_is_the_identity() {
    let mut g = InProcessGroup::new(1);
    let mut v = vec![3, -4, 5];
    g[0].all_reduce_sum_i64(&mut v).expect("all-reduce");
    assert_eq!(v, vec![3, -4, 5]);
}
