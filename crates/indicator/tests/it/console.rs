//! `ConsoleIndicator`: terminal and plain forms, through an injected writer.

use indicator::console::ConsoleIndicator;
use indicator::{Colors, Indicator, Palette, State};

fn run(ansi: bool, states: &[State]) -> String {
    let mut out = Vec::new();
    {
        let mut ind =
            ConsoleIndicator::new(&mut out, ansi, Palette::parse(&Colors::default()).unwrap());
        for s in states {
            ind.show(*s).unwrap();
        }
    }
    String::from_utf8(out).unwrap()
}

const RUN: &[State] = &[
    State::Working { progress: None },
    State::Working {
        progress: Some(0.05),
    },
    State::Working {
        progress: Some(0.07),
    },
    State::Working {
        progress: Some(0.52),
    },
    State::Success,
];

#[test]
fn plain_output_is_words_without_escapes_and_progress_in_tenths() {
    let out = run(false, RUN);
    assert!(!out.contains('\x1b'), "{out:?}");
    assert_eq!(
        out,
        "extbackup: working\nextbackup: working (0%)\nextbackup: working (50%)\n\
         extbackup: success: safe to remove\n"
    );
    assert_eq!(run(false, &[State::Failure]), "extbackup: failure\n");
}

#[test]
fn terminal_output_has_a_truecolour_block_and_rewrites_progress() {
    let out = run(true, RUN);
    // 33c280 = (51,194,128) unlimited: the block is meant to be seen on a screen.
    assert!(
        out.contains("\x1b[48;2;51;194;128m  \x1b[0m working (5%)"),
        "{out:?}"
    );
    assert!(
        out.contains("\x1b[48;2;0;128;0m  \x1b[0m success: safe to remove\n"),
        "{out:?}"
    );
    // progress lines are rewritten in place: one newline only, at the end
    assert_eq!(out.matches('\n').count(), 1, "{out:?}");
    assert_eq!(out.matches("\r\x1b[2K").count(), 5, "{out:?}");
    let fail = run(true, &[State::Failure]);
    assert!(fail.contains("\x1b[48;2;255;0;0m"), "{fail:?}");
}

#[test]
fn an_unfinished_progress_line_is_ended_on_drop() {
    let out = run(
        true,
        &[State::Working {
            progress: Some(0.5),
        }],
    );
    assert!(out.ends_with("working (50%)\n"), "{out:?}");
}
