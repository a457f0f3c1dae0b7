//! `lstm_cell.cu` on the emulator against `metasched_engine::lstm_cell`, under every thread
//! schedule: the shared checks of [`metasched_cuda::checks`] (three hidden sizes, the
//! state updated in place, gradients accumulated into non-zero buffers).

mod common;

use common::check_under_every_schedule;
use metasched_cuda::KernelId;

#[test]
fn forward_matches_engine() {
    check_under_every_schedule(KernelId::LstmCellForward);
}

#[test]
fn backward_matches_engine_and_accumulates() {
    check_under_every_schedule(KernelId::LstmCellBackward);
}
