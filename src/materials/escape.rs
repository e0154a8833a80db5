//! Untrusted text (ids, names) inside the documents' string values.

use std::fmt::{self, Write};

/// Characters neither format can carry literally in a string: controls
/// other than tab, line feed and carriage return, and the two
/// non-characters XML 1.0 forbids. They become U+FFFD.
fn is_unrepresentable(c: char) -> bool {
    (c.is_control() && !matches!(c, '\t' | '\n' | '\r')) || matches!(c, '\u{FFFE}' | '\u{FFFF}')
}

/// `text` as the content of a double-quoted XML attribute. Tab and line
/// breaks are written as character references, which survive the
/// attribute-value normalisation that would turn them into spaces.
pub(super) fn xml_attribute(out: &mut impl Write, text: &str) -> fmt::Result {
    for c in text.chars() {
        match c {
            '&' => out.write_str("&amp;")?,
            '<' => out.write_str("&lt;")?,
            '>' => out.write_str("&gt;")?,
            '"' => out.write_str("&quot;")?,
            '\t' => out.write_str("&#9;")?,
            '\n' => out.write_str("&#10;")?,
            '\r' => out.write_str("&#13;")?,
            c if is_unrepresentable(c) => out.write_char('\u{FFFD}')?,
            c => out.write_char(c)?,
        }
    }
    Ok(())
}

/// `text` as a double-quoted USD string, quotes included.
pub(super) fn usd_string(out: &mut impl Write, text: &str) -> fmt::Result {
    out.write_char('"')?;
    for c in text.chars() {
        match c {
            '"' => out.write_str("\\\"")?,
            '\\' => out.write_str("\\\\")?,
            '\t' => out.write_str("\\t")?,
            '\n' => out.write_str("\\n")?,
            '\r' => out.write_str("\\r")?,
            c if is_unrepresentable(c) => out.write_char('\u{FFFD}')?,
            c => out.write_char(c)?,
        }
    }
    out.write_char('"')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn xml(text: &str) -> String {
        let mut out = String::new();
        xml_attribute(&mut out, text).unwrap();
        out
    }

    fn usd(text: &str) -> String {
        let mut out = String::new();
        usd_string(&mut out, text).unwrap();
        out
    }

    #[test]
    fn xml_escapes_markup_and_line_breaks() {
        assert_eq!(xml("Rock 064"), "Rock 064");
        assert_eq!(
            xml("a<b>&\"c\"'\t\n\r"),
            "a&lt;b&gt;&amp;&quot;c&quot;'&#9;&#10;&#13;"
        );
        assert_eq!(
            xml("x\u{0}\u{1b}[31m\u{7f}\u{FFFF}é🧱"),
            "x\u{FFFD}\u{FFFD}[31m\u{FFFD}\u{FFFD}é🧱"
        );
    }

    #[test]
    fn usd_escapes_quotes_and_backslashes() {
        assert_eq!(usd("Rock"), "\"Rock\"");
        assert_eq!(usd("a\"b\\c\n\t\r"), r#""a\"b\\c\n\t\r""#);
        assert_eq!(usd("\u{1}é"), "\"\u{FFFD}é\"");
    }
}
