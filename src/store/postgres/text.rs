//! Text PostgreSQL can hold. Its `text` and `jsonb` cannot contain the character U+0000,
//! which SQLite stores and a provider's JSON may carry (`\u0000`): a row holding one would
//! fail its whole page. It is stored as U+FFFD, the replacement character, instead; the
//! row's payload hash is computed from what the provider sent, so this costs no rewrite.

use std::borrow::Cow;

/// `value` with every U+0000 replaced by U+FFFD.
pub(super) fn storable(value: &str) -> Cow<'_, str> {
    if value.contains('\0') {
        Cow::Owned(value.replace('\0', "\u{FFFD}"))
    } else {
        Cow::Borrowed(value)
    }
}

/// `storable` for optional columns.
pub(super) fn storable_opt(value: &Option<String>) -> Option<Cow<'_, str>> {
    value.as_deref().map(storable)
}

/// JSON text with every `\u0000` escape written as `\ufffd`, so that `jsonb` accepts it;
/// an escaped backslash followed by `u0000` is text, not the escape, and stays.
pub(super) fn storable_json(json: &str) -> Cow<'_, str> {
    if !json.contains("\\u0000") {
        return storable(json);
    }
    let mut out = String::with_capacity(json.len());
    let mut rest = json;
    while let Some(at) = rest.find('\\') {
        out.push_str(&rest[..at]);
        let escape = &rest[at..];
        if let Some(after) = escape.strip_prefix("\\u0000") {
            out.push_str("\\ufffd");
            rest = after;
        } else {
            // A backslash escapes the one character after it (`\\`, `\"`, `\n`, `\uXXXX`'s
            // `u`); both are copied as they are.
            let len = escape[1..].chars().next().map_or(1, |c| 1 + c.len_utf8());
            out.push_str(&escape[..len]);
            rest = &escape[len..];
        }
    }
    out.push_str(rest);
    match storable(&out) {
        Cow::Borrowed(_) => Cow::Owned(out),
        Cow::Owned(cleaned) => Cow::Owned(cleaned),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The NUL character and its JSON escape become U+FFFD; an escaped backslash before
    /// `u0000` is left alone, and text without either is not copied.
    #[test]
    fn nul_characters_become_replacement_characters() {
        assert_eq!(storable("a\0b"), "a\u{FFFD}b");
        assert!(matches!(storable("plain"), Cow::Borrowed(_)));
        assert_eq!(
            storable_json(r#"{"n":"a\u0000b","t":"\\u0000","u":"\u00e9"}"#),
            r#"{"n":"a\ufffdb","t":"\\u0000","u":"\u00e9"}"#
        );
        assert!(matches!(storable_json(r#"{"a":1}"#), Cow::Borrowed(_)));
        let decoded: serde_json::Value =
            serde_json::from_str(&storable_json(r#"["\\\u0000"]"#)).unwrap();
        assert_eq!(decoded, serde_json::json!(["\\\u{FFFD}"]));
    }
}
