//! Errors as people read them.

use std::error::Error;

/// An error and each of its causes: `cannot connect: Connection refused (os error 111)`.
pub fn chain(e: &dyn Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(inner) = cur {
        let text = inner.to_string();
        // Many errors repeat their cause in their own message.
        if !s.contains(&text) {
            s.push_str(": ");
            s.push_str(&text);
        }
        cur = inner.source();
    }
    s
}

/// The innermost cause: what a user can act on ("Connection refused").
pub fn root_cause(e: &dyn Error) -> String {
    let mut cause = e;
    while let Some(inner) = cause.source() {
        cause = inner;
    }
    cause.to_string()
}
