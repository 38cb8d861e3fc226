//! Strings an event carries from outside the daemon's control (a command
//! line, an operator's reason, a name a client sent), capped so that one
//! process cannot bloat every line. A capped event says so: `truncated`.
use std::borrow::Cow;

use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde::{Deserialize, Serialize, Serializer, ser::SerializeSeq as _};

/// Caps, in bytes of UTF-8.
pub mod cap {
    /// A whole command line (all arguments, with a separator each).
    pub const CMDLINE: usize = 4096;
    /// Free text: a reason, an error, a detail.
    pub const TEXT: usize = 1024;
    /// A name or id a client sent (an agent name, a hold id).
    pub const NAME: usize = 256;
}

/// Cuts `s` to at most `max` bytes, on a character boundary.
fn cut(s: &mut String, max: usize) -> bool {
    if s.len() <= max {
        return false;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.truncate(end);
    true
}

/// A capped string.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Text {
    text: String,
    cut: bool,
}

impl Text {
    /// `s`, cut to `max` bytes if longer.
    pub fn capped(s: impl Into<String>, max: usize) -> Self {
        let mut text = s.into();
        let cut = cut(&mut text, max);
        Self { text, cut }
    }

    /// Free text ([`cap::TEXT`]).
    pub fn message(s: impl Into<String>) -> Self {
        Self::capped(s, cap::TEXT)
    }

    /// A name or id ([`cap::NAME`]).
    pub fn name(s: impl Into<String>) -> Self {
        Self::capped(s, cap::NAME)
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether the cap cut it.
    pub fn was_cut(&self) -> bool {
        self.cut
    }
}

impl Serialize for Text {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}

impl JsonSchema for Text {
    fn inline_schema() -> bool {
        true
    }

    fn schema_name() -> Cow<'static, str> {
        "Text".into()
    }

    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        String::json_schema(generator)
    }
}

/// A command line: the arguments that fit in [`cap::CMDLINE`] bytes (the
/// last one cut if it crosses the cap).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Cmdline {
    args: Vec<String>,
    cut: bool,
}

impl Cmdline {
    pub fn capped(args: Vec<String>) -> Self {
        Self::capped_to(args, cap::CMDLINE)
    }

    fn capped_to(mut args: Vec<String>, max: usize) -> Self {
        let mut left = max;
        for (i, arg) in args.iter_mut().enumerate() {
            // One byte per argument for the separator it is joined with.
            let need = arg.len() + usize::from(i > 0);
            if need > left {
                let keep = left.saturating_sub(usize::from(i > 0));
                cut(arg, keep);
                let kept = if arg.is_empty() { i } else { i + 1 };
                args.truncate(kept);
                return Self { args, cut: true };
            }
            left -= need;
        }
        Self { args, cut: false }
    }

    pub fn args(&self) -> &[String] {
        &self.args
    }

    pub fn was_cut(&self) -> bool {
        self.cut
    }

    /// The arguments joined by spaces (OCSF `cmd_line`, ECS `command_line`).
    pub fn joined(&self) -> String {
        self.args.join(" ")
    }
}

impl Serialize for Cmdline {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.args.len()))?;
        for a in &self.args {
            seq.serialize_element(a)?;
        }
        seq.end()
    }
}

impl<'de> Deserialize<'de> for Cmdline {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Vec::<String>::deserialize(d).map(Self::capped)
    }
}

impl<'de> Deserialize<'de> for Text {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Self::message)
    }
}

impl JsonSchema for Cmdline {
    fn inline_schema() -> bool {
        true
    }

    fn schema_name() -> Cow<'static, str> {
        "Cmdline".into()
    }

    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        Vec::<String>::json_schema(generator)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_cut_on_a_character_boundary() {
        let t = Text::capped("aé", 2);
        assert_eq!((t.as_str(), t.was_cut()), ("a", true));
        let t = Text::capped("abc", 3);
        assert_eq!((t.as_str(), t.was_cut()), ("abc", false));
    }

    #[test]
    fn a_long_command_line_keeps_what_fits() {
        let args = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        let c = Cmdline::capped_to(args(&["rm", "-rf", "/srv"]), 11);
        assert_eq!(
            (c.args(), c.was_cut()),
            (&args(&["rm", "-rf", "/srv"])[..], false)
        );
        let c = Cmdline::capped_to(args(&["rm", "-rf", "/srv", "x"]), 11);
        assert_eq!(
            (c.args(), c.was_cut()),
            (&args(&["rm", "-rf", "/srv"])[..], true)
        );
        let c = Cmdline::capped_to(args(&["rm", "-rf", "/srvdata"]), 11);
        assert_eq!(
            (c.args(), c.was_cut()),
            (&args(&["rm", "-rf", "/srv"])[..], true)
        );
        assert!(c.joined().len() <= 11);
        let huge = vec!["x".repeat(10_000); 1000];
        let c = Cmdline::capped(huge);
        assert!(c.was_cut() && c.joined().len() <= cap::CMDLINE);
    }
}
