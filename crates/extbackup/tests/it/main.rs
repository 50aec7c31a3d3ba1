//! Host end-to-end tests of the `extbackup` binary (as root, on loop devices).

mod udev;
