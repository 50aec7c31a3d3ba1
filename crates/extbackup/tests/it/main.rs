//! End-to-end tests of the `extbackup` binary.
//!
//! Host tests (module `host`) need root for loop devices and mounts; they use the
//! loopback-test crypt backend (no dm-crypt on the host), real ext4 through `NixMounter`,
//! real rsync, and the file mail transport into a temp folder. The `vm_` test runs only
//! in the QEMU guest (`cargo xtask vm-test`) with real LUKS through libcryptsetup.

mod ack;
mod faults;
mod history;
mod host;
mod linkdest;
mod manifest;
mod recovery;
mod restores;
mod safety;
mod sources;
mod support;
mod udev;
mod vm;
