//! Collectives between the workers of one meta-step: the elementwise sum of integer vectors
//! (fixed-point limbs of `metasched_engine::fixed_sum` sums), exact and independent of the
//! order of arrival.
//!
//! This crate knows no device: [`Collective`] is the interface, [`InProcessGroup`] sums
//! between threads of one process (tests, single-host runs) and [`tcp`] between processes
//! over TCP (the stand-in for NCCL where there is no GPU). NCCL implements the same trait in
//! `metasched-cuda` (feature `cuda`), so a TCP failure is a [`CollectiveError`], not a device
//! error.

mod collective;
mod error;
mod in_process;
pub mod tcp;

pub use collective::Collective;
pub use error::{CollectiveError, Result};
pub use in_process::InProcessGroup;
pub use tcp::{Aborter, Rendezvous, TcpCollective};
