//! BlinkStick driver (placeholder: being written).
