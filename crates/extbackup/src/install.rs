//! `extbackup install`: the udev rule, the systemd template unit and the check timer.
