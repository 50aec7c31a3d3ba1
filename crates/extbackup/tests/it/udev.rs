//! systemd/udev integration: unit-name escaping against `systemd-escape`, the installed
//! units against `systemd-analyze verify`, and (in the QEMU guest, where udevd runs) the
//! watcher and the udev rule against real udev events.

#[path = "udev_escape.rs"]
mod escape;
#[path = "udev_install.rs"]
mod install;
#[path = "udev_watch.rs"]
mod watch;
