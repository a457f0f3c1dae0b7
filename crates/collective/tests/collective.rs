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

mod tcp_deadlines {
    //! The TCP collective never hangs on a peer that does not come: the equivalent, without a
    //! GPU, of NCCL's non-blocking join and all-reduce with `ncclCommAbort` at the deadline
    //! (which `crates/cuda/tests/nccl_stub.rs` shows against a stub NCCL).

    use std::net::{IpAddr, Ipv4Addr};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::{Duration, Instant};

    use metasched_collective::tcp::{self, TcpCollective};
    use metasched_collective::{Collective, CollectiveError};

    const LOCAL: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

    #[test]
    fn a_member_that_never_joins_ends_the_join_with_an_error_within_the_deadline() {
        let (id, rv) = tcp::create(LOCAL).expect("create");
        let id1 = id.clone();
        // Rank 1 joins; rank 2 never does.
        let r1 = std::thread::spawn(move || TcpCollective::join(&id1, 1, 3, None, Duration::from_secs(2)));
        let t = Instant::now();
        let root = TcpCollective::join(&id, 0, 3, Some(rv), Duration::from_millis(500));
        let took = t.elapsed();
        let e = root.expect_err("rank 2 never joined");
        assert!(took >= Duration::from_millis(500) && took < Duration::from_secs(3), "{took:?}");
        assert_eq!(e, CollectiveError::Tcp("1 member(s) did not join within 0.5 s".into()), "{e}");
        // Rank 1 itself joined (its connection was accepted) and sees rank 0 go away.
        let mut m1 = r1.join().expect("thread").expect("rank 1 connected");
        assert!(m1.all_reduce_sum_i64(&mut [1]).is_err());
    }

    #[test]
    fn a_member_that_never_all_reduces_ends_the_all_reduce_with_an_error_within_the_timeout() {
        let (id, rv) = tcp::create(LOCAL).expect("create");
        let id1 = id.clone();
        let r1 =
            std::thread::spawn(move || TcpCollective::join(&id1, 1, 2, None, Duration::from_millis(400)));
        let mut root = TcpCollective::join(&id, 0, 2, Some(rv), Duration::from_millis(400)).expect("root");
        let _silent = r1.join().expect("thread").expect("rank 1 joined, then never all-reduces");
        let t = Instant::now();
        let e = root.all_reduce_sum_i64(&mut [1, 2, 3]).expect_err("rank 1 never sends");
        assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
        assert!(e.to_string().contains("peer lost"), "{e}");
    }

    #[test]
    fn leaving_cancels_a_join_long_before_its_deadline() {
        let (id, rv) = tcp::create(LOCAL).expect("create");
        let cancel = Arc::new(AtomicBool::new(false));
        let c = Arc::clone(&cancel);
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(100));
            c.store(true, Ordering::SeqCst);
        });
        let t = Instant::now();
        let e = TcpCollective::join_cancellable(&id, 0, 2, Some(rv), Duration::from_secs(600), &cancel)
            .expect_err("cancelled");
        assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
        assert!(e.to_string().contains("cancelled"), "{e}");

        // A non-root rank retrying an address nobody listens on is cancelled too.
        let (id, rv) = tcp::create(LOCAL).expect("create");
        drop(rv);
        let cancel = Arc::new(AtomicBool::new(false));
        let c = Arc::clone(&cancel);
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(100));
            c.store(true, Ordering::SeqCst);
        });
        let t = Instant::now();
        let e = TcpCollective::join_cancellable(&id, 1, 2, None, Duration::from_secs(600), &cancel)
            .expect_err("cancelled");
        assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
        assert!(e.to_string().contains("cancelled"), "{e}");
    }
}
