//! systemd unit-name escaping, equal to `systemd-escape` and `systemd-escape --path`.
