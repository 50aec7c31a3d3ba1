//! The `[indicator]` config section and `from_config`.

use indicator::{from_config, BackendKind, IndicatorConfig};

#[test]
fn defaults_follow_the_seed() {
    let cfg: IndicatorConfig = toml::from_str("").unwrap();
    assert_eq!(cfg, IndicatorConfig::default());
    assert_eq!(cfg.backend, BackendKind::Blinkstick);
    assert_eq!((cfg.channel, cfg.index, cfg.limit), (0, 1, 10));
    assert_eq!(cfg.colors.working, "33c280");
    assert_eq!(cfg.colors.success, "green");
    assert_eq!(cfg.colors.failure, "red");
}

#[test]
fn a_full_section_parses() {
    let cfg: IndicatorConfig = toml::from_str(
        r#"
        backend = "console"
        serial = "BS012345-3.0"
        channel = 2
        index = 0
        limit = 40
        breathe_period_ms = 2000
        progress_bar = false
        [colors]
        working = "blue"
        attention = "\#ffa500"
        "#
        .replace("\\#", "#")
        .as_str(),
    )
    .unwrap();
    assert_eq!(cfg.backend, BackendKind::Console);
    assert_eq!(cfg.serial.as_deref(), Some("BS012345-3.0"));
    assert_eq!((cfg.channel, cfg.index, cfg.limit), (2, 0, 40));
    assert_eq!(cfg.colors.working, "blue");
    assert_eq!(
        cfg.colors.success, "green",
        "unset colours keep their default"
    );
    assert!(!cfg.progress_bar);
}

#[test]
fn unknown_keys_and_backends_are_rejected() {
    assert!(toml::from_str::<IndicatorConfig>("colour = \"red\"").is_err());
    assert!(toml::from_str::<IndicatorConfig>("backend = \"lava-lamp\"").is_err());
}

#[test]
fn from_config_builds_the_named_backend_and_checks_colours() {
    let none = IndicatorConfig {
        backend: BackendKind::None,
        ..IndicatorConfig::default()
    };
    assert_eq!(from_config(&none).unwrap().describe(), "none");
    let console = IndicatorConfig {
        backend: BackendKind::Console,
        ..IndicatorConfig::default()
    };
    assert!(from_config(&console)
        .unwrap()
        .describe()
        .starts_with("console"));
    let mut bad = console.clone();
    bad.colors.working = "nope".into();
    let e = from_config(&bad).err().unwrap();
    assert_eq!(e.kind(), indicator::ErrorKind::InvalidConfig);
}
