//! Output to the terminal: text from workflow files, agents and the store with its control
//! characters escaped, and writes to stdout that end the process cleanly when stdout fails.

use std::borrow::Cow;
use std::io::Write;

/// Writes to stdout, for the `outln!` macro. Where `print!` panics on a failed write, this ends
/// the process: quietly with status 141 when the reader closed stdout (`oaj jobs list | head`),
/// as SIGPIPE ends other Unix tools, and with a message and status 1 on any other error.
pub(crate) fn stdout_write(args: std::fmt::Arguments<'_>) {
    let mut out = std::io::stdout().lock();
    let Err(error) = out.write_fmt(args).and_then(|()| out.flush()) else {
        return;
    };
    if error.kind() == std::io::ErrorKind::BrokenPipe {
        std::process::exit(i32::from(super::exit::STDOUT_CLOSED));
    }
    // A stderr that fails too leaves nothing to report the error on.
    let _ = writeln!(std::io::stderr(), "error: cannot write to stdout: {error}");
    std::process::exit(1);
}

/// Prints `error: MESSAGE` to stderr, with the message's control characters escaped.
pub(crate) fn error_print(message: std::fmt::Arguments<'_>) {
    errln!("error: {}", printable(&message.to_string()));
}

/// Returns `text` with each control character (other than line feed and tab) and each
/// bidirectional override written as its Rust escape, such as `\u{1b}` or `\0`.
///
/// Workflow documents, agent errors and stored fields can hold any character. Printed raw, an
/// escape sequence could recolor or rewrite the terminal, a carriage return could hide the text
/// before it, and a bidirectional override could show words in another order than stored.
pub(crate) fn printable(text: &str) -> Cow<'_, str> {
    if !text.chars().any(needs_escape) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if needs_escape(c) {
            out.extend(c.escape_debug());
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

fn needs_escape(c: char) -> bool {
    let bidi_control = matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}');
    (c.is_control() && c != '\n' && c != '\t') || bidi_control
}

#[cfg(test)]
mod tests {
    use super::printable;

    #[test]
    fn plain_text_is_borrowed() {
        let text = "step fetch failed:\n\texit status 1 (é, ✓)";
        assert!(matches!(printable(text), std::borrow::Cow::Borrowed(_)));
        assert_eq!(printable(text), text);
    }

    #[test]
    fn control_characters_are_escaped() {
        let cases = [
            ("a\0b", "a\\0b"),
            ("\u{1b}[31mred", "\\u{1b}[31mred"),
            ("done\rnot done", "done\\rnot done"),
            ("x\u{7f}", "x\\u{7f}"),
            ("abc\u{202E}fed", "abc\\u{202e}fed"),
            ("\u{2066}iso\u{2069}", "\\u{2066}iso\\u{2069}"),
        ];
        for (text, expected) in cases {
            assert_eq!(printable(text), expected, "text {text:?}");
        }
    }
}
