//! Reading libtest's plain output: per-test `test NAME ... ok|FAILED|ignored` lines, the
//! `---- NAME stdout ----` blocks of failures and the `test result:` summary.

use std::collections::BTreeMap;

/// What one libtest run printed, parsed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Report {
    /// Test name → passed?
    pub outcomes: BTreeMap<String, bool>,
    /// Test name → its captured output (failures only).
    pub failure_output: BTreeMap<String, String>,
    /// Whether a `test result:` summary line was seen (the binary finished).
    pub finished: bool,
    /// The name of a test that started but has no outcome (the binary died in it).
    pub unfinished: Option<String>,
}

/// Parses the combined stdout/stderr of a test binary.
pub fn parse(log: &str) -> Report {
    let mut r = Report::default();
    let mut block: Option<(String, String)> = None;
    for line in log.lines().map(str::trim_end) {
        if let Some(rest) = line.strip_prefix("test ") {
            if let Some((name, outcome)) = rest.rsplit_once(" ... ") {
                let name = name.trim().to_string();
                match outcome.trim() {
                    "ok" => {
                        r.outcomes.insert(name, true);
                    }
                    "FAILED" => {
                        r.outcomes.insert(name, false);
                    }
                    "ignored" => {}
                    _ => {
                        r.unfinished = Some(name);
                        continue;
                    }
                }
                r.unfinished = None;
                continue;
            }
            if let Some(name) = rest.strip_suffix(" ...") {
                // The name is printed before the test runs; output may follow it.
                r.unfinished = Some(name.trim().to_string());
                continue;
            }
            if rest.starts_with("result: ") || line.starts_with("test result: ") {
                r.finished = true;
            }
        }
        if line.starts_with("test result: ") {
            r.finished = true;
        }
        // Output of a child process between `test NAME ... ` and the outcome pushes the
        // outcome onto a line of its own.
        if let Some(name) = r.unfinished.clone() {
            match line.trim() {
                "ok" => {
                    r.outcomes.insert(name, true);
                    r.unfinished = None;
                    continue;
                }
                "FAILED" => {
                    r.outcomes.insert(name, false);
                    r.unfinished = None;
                    continue;
                }
                "ignored" => {
                    r.unfinished = None;
                    continue;
                }
                _ => {}
            }
        }
        if let Some(name) = line
            .strip_prefix("---- ")
            .and_then(|l| l.strip_suffix(" stdout ----"))
        {
            if let Some((n, text)) = block.take() {
                r.failure_output.insert(n, text);
            }
            block = Some((name.to_string(), String::new()));
            continue;
        }
        if let Some((_, text)) = block.as_mut() {
            if line == "failures:" || line.starts_with("test result: ") {
                let (n, t) = block.take().expect("checked above");
                r.failure_output.insert(n, t);
            } else {
                text.push_str(line);
                text.push('\n');
            }
        }
    }
    if let Some((n, t)) = block {
        r.failure_output.insert(n, t);
    }
    // Output of child processes can split `test NAME ... ` from its outcome; once the
    // binary finished, a test without a `---- NAME stdout ----` failure block passed.
    if let Some(n) = r.unfinished.take() {
        if r.finished {
            let failed = r.failure_output.contains_key(&n);
            r.outcomes.insert(n, !failed);
        } else {
            r.unfinished = Some(n);
        }
    }
    r
}

/// Names from `--list` output (`name: test` lines).
pub fn parse_list(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| l.strip_suffix(": test"))
        .map(str::to_string)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\nrunning 3 tests\ntest a::vm_one ... ok\ntest a::vm_two ... FAILED\n\
test a::vm_three ... ignored\n\nfailures:\n\n---- a::vm_two stdout ----\nboom at x.rs:3\n\n\
failures:\n    a::vm_two\n\ntest result: FAILED. 1 passed; 1 failed; 1 ignored\n";

    #[test]
    fn parse_reads_outcomes_and_failure_output() {
        let r = parse(SAMPLE);
        assert_eq!(r.outcomes.get("a::vm_one"), Some(&true));
        assert_eq!(r.outcomes.get("a::vm_two"), Some(&false));
        assert!(!r.outcomes.contains_key("a::vm_three"));
        assert!(r.failure_output["a::vm_two"].contains("boom at x.rs:3"));
        assert!(r.finished);
        assert_eq!(r.unfinished, None);
    }

    #[test]
    fn parse_notices_a_binary_that_died_mid_test() {
        let r = parse("running 2 tests\ntest a::vm_one ... ok\ntest a::vm_two ... ");
        assert!(!r.finished);
        assert_eq!(r.unfinished.as_deref(), Some("a::vm_two"));
    }

    #[test]
    fn parse_handles_output_between_name_and_outcome() {
        let r = parse("test a::vm_x ... child says hi\nok\n\ntest result: ok. 1 passed\n");
        assert_eq!(r.outcomes.get("a::vm_x"), Some(&true));
        assert_eq!(r.unfinished, None);
    }

    #[test]
    fn parse_takes_an_outcome_on_its_own_line_even_if_the_binary_dies_later() {
        let r = parse("test a::vm_x ... losetup: detach failed\nok\ntest a::vm_y ... ");
        assert_eq!(r.outcomes.get("a::vm_x"), Some(&true));
        assert_eq!(r.unfinished.as_deref(), Some("a::vm_y"));
        assert!(!r.finished);
    }

    #[test]
    fn parse_list_takes_test_lines_only() {
        let names =
            parse_list("a::vm_x: test\nb::y: test\nbench: benchmark\n\n2 tests, 0 benchmarks\n");
        assert_eq!(names, vec!["a::vm_x", "b::y"]);
    }
}
