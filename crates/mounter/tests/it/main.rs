//! `NixMounter` on loop devices with real ext4 (as root).

mod mounter;
mod support;
