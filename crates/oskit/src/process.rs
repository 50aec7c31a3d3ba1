//! The one way a child process is started: tied to this process's life.
//!
//! ```
//! use std::process::Command;
//! let out = oskit::process::tie_to_parent(&mut Command::new("true")).output().unwrap();
//! assert!(out.status.success());
//! ```

use std::os::unix::process::CommandExt;
use std::process::Command;

/// Makes the child get SIGTERM when this process dies, even by SIGKILL
/// (`PR_SET_PDEATHSIG`): a killed run must not leave rsync writing to a mounted drive, nor
/// mkfs, fsck or losetup working on a drive nobody watches any more. A child whose parent
/// is already gone by the time it starts exits at once. Every child a backend starts goes
/// through here.
///
/// The kernel sends the signal when the *thread* that forked the child ends: start children
/// from a thread that outlives them (as a caller waiting on them does).
pub fn tie_to_parent(cmd: &mut Command) -> &mut Command {
    let parent = nix::unistd::getpid();
    // SAFETY: the closure runs in the forked child before exec and only makes the
    // async-signal-safe calls prctl(2), getppid(2) and kill(2).
    unsafe {
        cmd.pre_exec(move || {
            nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGTERM)?;
            if nix::unistd::getppid() != parent {
                nix::sys::signal::raise(nix::sys::signal::Signal::SIGTERM)?;
            }
            Ok(())
        });
    }
    cmd
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tied_child_runs_as_usual() {
        // The hook runs in the child before exec; had it failed, the spawn would have.
        let st = tie_to_parent(Command::new("sh").args(["-c", "exit 7"]))
            .status()
            .unwrap();
        assert_eq!(st.code(), Some(7));
    }

    #[test]
    fn the_child_gets_sigterm_when_its_parent_thread_ends() {
        use std::os::unix::process::ExitStatusExt;
        // The kernel's parent-death signal fires when the forking thread ends: the cheapest
        // death of a parent a test can cause without killing itself.
        // The thread ends only once the child has started its program, i.e. after the
        // signal was armed before exec: a thread that ended between fork and arming would
        // leave an untied child and a test that fails by chance.
        let mut child = std::thread::spawn(|| {
            use std::io::Read;
            let mut child = tie_to_parent(
                Command::new("sh")
                    .args(["-c", "echo ready; exec sleep 30"])
                    .stdout(std::process::Stdio::piped()),
            )
            .spawn()
            .unwrap();
            let mut ready = [0u8; 6];
            child.stdout.take().unwrap().read_exact(&mut ready).unwrap();
            assert_eq!(&ready, b"ready\n");
            child
        })
        .join()
        .unwrap();
        let st = child.wait().unwrap();
        assert_eq!(st.signal(), Some(nix::libc::SIGTERM), "{st:?}");
    }
}
