//! Splitting of strings into literal text and the `${ ... }` references inside them.
//!
//! Only the boundaries of a reference are found here. What is inside one is CEL, which the `cel`
//! crate parses, so the scan tracks quotes and braces only to find the closing `}`.

/// One piece of a string that may hold references.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Segment {
    /// Text copied as it is, with `$${` already turned into `${`.
    Text(String),
    /// The trimmed source of one reference.
    Reference {
        /// The CEL source between the delimiters.
        source: String,
        /// Whether it was written in the older `{{ ... }}` spelling.
        legacy: bool,
    },
}

/// Reason a string could not be split into text and references.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum TemplateError {
    /// A `${` with no matching `}`; the offset is in bytes.
    Unclosed { offset: usize },
    /// A `${}` with nothing but blanks inside.
    Empty { offset: usize },
}

/// Splits `text` into segments. Adjacent text is merged, so a string that is exactly one
/// reference yields exactly one segment.
pub(crate) fn template_parse(text: &str) -> Result<Vec<Segment>, TemplateError> {
    let bytes = text.as_bytes();
    let mut segments = Vec::new();
    let mut literal = String::new();
    let mut literal_start = 0;
    let mut i = 0;
    // Every delimiter is ASCII, so each index where a slice starts or ends is a char boundary.
    while i < bytes.len() {
        if bytes[i..].starts_with(b"$${") {
            literal.push_str(&text[literal_start..i]);
            literal.push_str("${");
            i += 3;
            literal_start = i;
        } else if bytes[i..].starts_with(b"${") {
            let end = brace_close(bytes, i + 2).ok_or(TemplateError::Unclosed { offset: i })?;
            let source = text[i + 2..end].trim();
            if source.is_empty() {
                return Err(TemplateError::Empty { offset: i });
            }
            literal.push_str(&text[literal_start..i]);
            text_flush(&mut segments, &mut literal);
            segments.push(Segment::Reference {
                source: source.to_owned(),
                legacy: false,
            });
            i = end + 1;
            literal_start = i;
        } else if let Some((source, end)) = legacy_reference(text, i) {
            literal.push_str(&text[literal_start..i]);
            text_flush(&mut segments, &mut literal);
            segments.push(Segment::Reference {
                source: source.to_owned(),
                legacy: true,
            });
            i = end;
            literal_start = i;
        } else {
            i += 1;
        }
    }
    literal.push_str(&text[literal_start..]);
    text_flush(&mut segments, &mut literal);
    Ok(segments)
}

fn text_flush(segments: &mut Vec<Segment>, literal: &mut String) {
    if !literal.is_empty() {
        segments.push(Segment::Text(std::mem::take(literal)));
    }
}

/// Finds the `}` that closes a reference whose body starts at `start`, skipping braces of CEL
/// map literals and anything inside quoted strings.
fn brace_close(bytes: &[u8], start: usize) -> Option<usize> {
    let mut depth = 0usize;
    let mut quote: Option<u8> = None;
    let mut i = start;
    while i < bytes.len() {
        let byte = bytes[i];
        match quote {
            Some(_) if byte == b'\\' => i += 1,
            Some(open) if byte == open => quote = None,
            Some(_) => {}
            None if byte == b'\'' || byte == b'"' => quote = Some(byte),
            None if byte == b'{' => depth += 1,
            None if byte == b'}' && depth == 0 => return Some(i),
            None if byte == b'}' => depth -= 1,
            None => {}
        }
        i += 1;
    }
    None
}

/// Returns the deepest nesting of `(`, `[` and `{` in `source`, outside quoted strings.
pub(crate) fn nesting_depth(source: &str) -> usize {
    let mut depth = 0usize;
    let mut deepest = 0;
    let mut quote: Option<u8> = None;
    let mut escaped = false;
    for &byte in source.as_bytes() {
        match quote {
            Some(_) if escaped => escaped = false,
            Some(_) if byte == b'\\' => escaped = true,
            Some(open) if byte == open => quote = None,
            Some(_) => {}
            None if byte == b'\'' || byte == b'"' => quote = Some(byte),
            None if matches!(byte, b'(' | b'[' | b'{') => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            None if matches!(byte, b')' | b']' | b'}') => depth = depth.saturating_sub(1),
            None => {}
        }
    }
    deepest
}

/// Reads a `{{ path }}` reference at `start`, returning its path and the index after `}}`.
/// Only a plain dotted path counts, so that prose or JSON text with double braces stays text.
fn legacy_reference(text: &str, start: usize) -> Option<(&str, usize)> {
    let rest = text.get(start..)?.strip_prefix("{{")?;
    let length = rest.find("}}")?;
    let source = rest[..length].trim();
    path_segments(source)?;
    Some((source, start + 2 + length + 2))
}

/// Words that CEL reserves, so that a dotted path containing one is left to the CEL parser.
const RESERVED_WORDS: &[&str] = &[
    "as",
    "break",
    "const",
    "continue",
    "else",
    "false",
    "for",
    "function",
    "if",
    "import",
    "in",
    "let",
    "loop",
    "namespace",
    "null",
    "package",
    "return",
    "true",
    "var",
    "void",
    "while",
];

/// Splits a plain dotted path such as `steps.fetch.outputs.body` into its identifiers, or returns
/// `None` when `source` is any other expression.
pub(crate) fn path_segments(source: &str) -> Option<Vec<&str>> {
    let segments: Vec<&str> = source.split('.').collect();
    let all_identifiers = segments.iter().all(|segment| {
        let mut chars = segment.chars();
        let first = chars.next();
        first.is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
            && !RESERVED_WORDS.contains(segment)
    });
    all_identifiers.then_some(segments)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference(source: &str) -> Segment {
        Segment::Reference {
            source: source.to_owned(),
            legacy: false,
        }
    }

    #[test]
    fn single_reference_is_one_segment() {
        assert_eq!(
            template_parse("${ inputs.x }"),
            Ok(vec![reference("inputs.x")])
        );
    }

    #[test]
    fn text_around_references_is_kept() {
        let segments = template_parse("a ${x} b ${y}").unwrap();
        let expected = vec![
            Segment::Text("a ".into()),
            reference("x"),
            Segment::Text(" b ".into()),
            reference("y"),
        ];
        assert_eq!(segments, expected);
    }

    #[test]
    fn map_literal_and_quoted_brace_stay_inside() {
        let segments = template_parse("${ {'k': '}'}.k }").unwrap();
        assert_eq!(segments, vec![reference("{'k': '}'}.k")]);
    }

    #[test]
    fn escaped_dollar_brace_is_text() {
        assert_eq!(
            template_parse("$${x}"),
            Ok(vec![Segment::Text("${x}".into())])
        );
    }

    #[test]
    fn unclosed_reference_reports_offset() {
        assert_eq!(
            template_parse("ab ${x"),
            Err(TemplateError::Unclosed { offset: 3 })
        );
    }

    #[test]
    fn empty_reference_is_rejected() {
        assert_eq!(
            template_parse("${ }"),
            Err(TemplateError::Empty { offset: 0 })
        );
    }

    #[test]
    fn legacy_braces_read_only_paths() {
        let legacy = Segment::Reference {
            source: "inputs.x".into(),
            legacy: true,
        };
        assert_eq!(template_parse("{{inputs.x}}"), Ok(vec![legacy]));
        assert_eq!(
            template_parse("{{ a b }}"),
            Ok(vec![Segment::Text("{{ a b }}".into())])
        );
    }

    #[test]
    fn multibyte_text_is_safe() {
        let segments = template_parse("é${x}ü").unwrap();
        assert_eq!(segments.len(), 3);
    }

    #[test]
    fn path_rejects_reserved_and_calls() {
        assert_eq!(
            path_segments("steps.a.outputs"),
            Some(vec!["steps", "a", "outputs"])
        );
        assert_eq!(path_segments("inputs.in"), None);
        assert_eq!(path_segments("size(x)"), None);
        assert_eq!(path_segments("a..b"), None);
    }
}
