//! `extbackup watch`: a udev monitor for configured drives, for systems without systemd.
