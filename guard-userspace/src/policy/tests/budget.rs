//! `[agent.budget]`: what parses, and every rejected value with its
//! `FILE:LINE:COL`.
use guard_common::Exceed;

use crate::policy::{budget::parse_rate, parse};

/// Lines 1-6: a valid agent, then the budget table header.
const HEAD: &str =
    "[[agent]]\nname = \"a\"\nowner = \"o\"\npurpose = \"p\"\ncgroup = \"g/a\"\n[agent.budget]\n";

#[track_caller]
fn rejected(body: &str, line: usize, col: usize, needle: &str) {
    super::errors::check(&format!("{HEAD}{body}"), line, col, needle);
}

#[test]
fn a_full_table() {
    let p = parse(
        "p.toml",
        &format!("{HEAD}deletes = \"40/min\"\nconnects = \"100/h\"\non_exceed = \"freeze\"\n"),
    )
    .unwrap();
    let b = p.agents[0].budget.as_ref().unwrap();
    let d = b.deletes.as_ref().unwrap();
    assert_eq!(
        (d.limit, d.period_ms, d.text.as_str()),
        (40, 60_000, "40/min")
    );
    assert_eq!(d.window(), "1min");
    let c = b.connects.as_ref().unwrap();
    assert_eq!((c.limit, c.period_ms), (100, 3_600_000));
    assert_eq!(b.on_exceed, Exceed::Freeze);
}

#[test]
fn ask_is_the_default_and_no_table_is_no_budget() {
    let p = parse("p.toml", &format!("{HEAD}deletes = \"2/s\"\n")).unwrap();
    let b = p.agents[0].budget.as_ref().unwrap();
    assert_eq!(b.on_exceed, Exceed::Ask);
    assert!(b.connects.is_none());
    let bare = HEAD.trim_end_matches("[agent.budget]\n");
    assert!(parse("p.toml", bare).unwrap().agents[0].budget.is_none());
}

#[test]
fn rates() {
    assert_eq!(parse_rate("2/s"), Ok((2, 1_000)));
    assert_eq!(parse_rate(" 40 / min "), Ok((40, 60_000)));
    assert_eq!(parse_rate("7/h"), Ok((7, 3_600_000)));
    for bad in [
        "40",
        "40/day",
        "/min",
        "x/min",
        "-1/min",
        "4.5/min",
        "40/",
        "99999999999/s",
    ] {
        assert!(parse_rate(bad).is_err(), "{bad:?} accepted");
    }
}

#[test]
fn bad_values_point_at_themselves() {
    rejected("deletes = \"40/day\"\n", 7, 11, "N/s, N/min or N/h");
    rejected("connects = \"0/min\"\n", 7, 12, "at least 1");
    rejected("deletes = \"5000000/s\"\n", 7, 11, "at most");
    rejected(
        "deletes = \"1/s\"\non_exceed = \"kill\"\n",
        8,
        13,
        "on_exceed must be \"ask\", \"deny\" or \"freeze\"",
    );
    rejected("deletes = 40\n", 7, 11, "string");
    rejected(
        "deletes = \"1/s\"\nwrites = \"1/s\"\n",
        8,
        1,
        "unknown field `writes`",
    );
}

#[test]
fn a_table_with_no_budget_is_an_error() {
    rejected("on_exceed = \"deny\"\n", 6, 1, "sets no budget");
}
