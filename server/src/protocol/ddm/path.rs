//! Where in a JSON document a check failed (`Payload.CustomRegex.Regex`, `Payload.List[3].Key`), built as
//! the checks descend and written out only when one fails.

/// One step down: a dictionary key or an array index.
#[derive(Clone, Copy)]
enum Step<'a> {
    Key(&'a str),
    Index(usize),
}

/// A path from the document's top, as a chain of borrowed steps (no allocation while nothing fails).
#[derive(Clone, Copy)]
pub(crate) struct Path<'a> {
    parent: Option<&'a Path<'a>>,
    step: Step<'a>,
}

/// Longest key written into a message: the keys are the sender's, and may be kilobytes long.
const MAX_SHOWN_KEY: usize = 64;

impl<'a> Path<'a> {
    /// A top-level key.
    pub(crate) fn root(key: &'a str) -> Path<'a> {
        Path {
            parent: None,
            step: Step::Key(key),
        }
    }

    pub(crate) fn key(&'a self, key: &'a str) -> Path<'a> {
        Path {
            parent: Some(self),
            step: Step::Key(key),
        }
    }

    pub(crate) fn index(&'a self, index: usize) -> Path<'a> {
        Path {
            parent: Some(self),
            step: Step::Index(index),
        }
    }

    /// The path as text. Keys are shortened and control characters replaced, so the message is safe to show
    /// and to log whatever the sender put in its keys.
    pub(crate) fn render(&self) -> String {
        let mut steps = Vec::new();
        let mut at = Some(self);
        while let Some(p) = at {
            steps.push(p.step);
            at = p.parent;
        }
        let mut out = String::new();
        for step in steps.into_iter().rev() {
            match step {
                Step::Key(k) => {
                    if !out.is_empty() {
                        out.push('.');
                    }
                    push_key(&mut out, k);
                }
                Step::Index(i) => out.push_str(&format!("[{i}]")),
            }
        }
        out
    }
}

fn push_key(out: &mut String, key: &str) {
    let mut chars = key.chars();
    for c in chars.by_ref().take(MAX_SHOWN_KEY) {
        out.push(if c.is_control() { '?' } else { c });
    }
    if chars.next().is_some() {
        out.push('…');
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_keys_and_indexes() {
        let root = Path::root("Payload");
        let list = root.key("List");
        let item = list.index(3);
        assert_eq!(item.key("Key").render(), "Payload.List[3].Key");
        assert_eq!(root.render(), "Payload");
        assert_eq!(root.index(0).index(1).render(), "Payload[0][1]");
    }

    #[test]
    fn senders_keys_are_shortened_and_cleaned() {
        let long = "k".repeat(1000);
        let root = Path::root("Payload");
        let rendered = root.key(&long).render();
        assert_eq!(rendered, format!("Payload.{}…", "k".repeat(64)));
        assert_eq!(root.key("a\nb\u{0}").render(), "Payload.a?b?");
        // Exactly the limit is shown whole.
        let exact = "é".repeat(64);
        assert_eq!(root.key(&exact).render(), format!("Payload.{exact}"));
    }
}
