//! `NixMounter` on loop devices with real ext4 (as root).

mod conformance;
mod mounter;
mod support;
