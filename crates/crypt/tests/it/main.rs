//! Integration tests of the crypt backends on real loop devices (as root) and, for the
//! `vm_` tests, real dm-crypt in the QEMU guest (`cargo xtask vm-test`).

mod conformance;
mod loopback;
mod luks;
mod support;
mod vm;
