//! `sgd_update.cu` on the emulator against the engine's inner-loop update and meta-backward
//! step (`inner_loop.rs`: `theta_{t+1} = theta_t − a_t[group] g_t`,
//! `dJ/da_t[k] = −Σ_{i∈k} v g`, `u = a_t[group] v`), under every thread schedule: the shared
//! checks of [`metasched_cuda::checks`] (three learners, block sizes 256, 45 and 1024,
//! the update in place).

mod common;

use common::check_under_every_schedule;
use metasched_cuda::KernelId;

#[test]
fn forward_matches_engine_update() {
    check_under_every_schedule(KernelId::SgdUpdateForward);
}

#[test]
fn backward_matches_engine_meta_step() {
    check_under_every_schedule(KernelId::SgdUpdateBackward);
}
