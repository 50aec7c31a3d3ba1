//! Files closed after writing on a mount, told as they are closed ([`ClosedWrites`]:
//! `fanotify(7)`, `FAN_CLOSE_WRITE`), each handed over as a read-only descriptor of its own.
//! Needs `CAP_SYS_ADMIN`.

use std::io;
use std::os::fd::AsFd;
use std::path::Path;
use std::time::Duration;

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::fanotify::{EventFFlags, Fanotify, InitFlags, MarkFlags, MaskFlags};

/// A watch on one mount for files closed after writing.
pub struct ClosedWrites {
    fan: Fanotify,
}

/// What [`ClosedWrites::next`] found.
#[derive(Default)]
pub struct Batch {
    /// The files closed after writing (opened read-only, at offset 0).
    pub files: Vec<std::fs::File>,
    /// Whether the kernel dropped some (its queue was full).
    pub overflowed: bool,
}

impl ClosedWrites {
    /// Watches the mount that holds `dir`.
    pub fn watch(dir: &Path) -> io::Result<ClosedWrites> {
        let fan = Fanotify::init(
            InitFlags::FAN_CLASS_NOTIF | InitFlags::FAN_CLOEXEC | InitFlags::FAN_NONBLOCK,
            EventFFlags::O_RDONLY | EventFFlags::O_LARGEFILE | EventFFlags::O_CLOEXEC,
        )?;
        fan.mark(
            MarkFlags::FAN_MARK_ADD | MarkFlags::FAN_MARK_MOUNT,
            MaskFlags::FAN_CLOSE_WRITE,
            None,
            Some(dir),
        )?;
        Ok(ClosedWrites { fan })
    }

    /// The files closed since the last call, waiting up to `timeout` for the first (an
    /// empty batch when none came).
    pub fn next(&self, timeout: Duration) -> io::Result<Batch> {
        let mut batch = Batch::default();
        let mut fds = [PollFd::new(self.fan.as_fd(), PollFlags::POLLIN)];
        let ms = u16::try_from(timeout.as_millis()).unwrap_or(u16::MAX);
        match poll(&mut fds, PollTimeout::from(ms)) {
            Ok(0) | Err(Errno::EINTR) => return Ok(batch),
            Ok(_) => {}
            Err(e) => return Err(e.into()),
        }
        let events = match self.fan.read_events() {
            Ok(ev) => ev,
            Err(Errno::EAGAIN | Errno::EINTR) => return Ok(batch),
            Err(e) => return Err(e.into()),
        };
        for ev in events {
            if ev.mask().contains(MaskFlags::FAN_Q_OVERFLOW) {
                batch.overflowed = true;
            }
            // The event's descriptor closes with the event: keep a duplicate.
            if let Some(fd) = ev.fd() {
                batch
                    .files
                    .push(std::fs::File::from(fd.try_clone_to_owned()?));
            }
        }
        Ok(batch)
    }
}
