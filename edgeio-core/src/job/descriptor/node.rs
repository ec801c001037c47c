//! The generic document a descriptor is parsed into before validation, and its rendering.
//!
//! A type of our own instead of `serde_yaml_ng::Value`: integers past `u64` (which `Value`
//! refuses with a parse error) stay numbers, so `cpu: 99999999999999999999999` is reported as
//! a number that is too large, on its field.

use serde::de::{self, Deserialize, Deserializer, EnumAccess, MapAccess, SeqAccess, VariantAccess};
use std::collections::HashSet;
use std::fmt::{self, Write as _};

/// One node of a parsed YAML document.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Node {
    Null,
    Bool(bool),
    /// Every integer that fits `i128`.
    Int(i128),
    /// Integers past `i128::MAX`.
    BigInt(u128),
    Float(f64),
    Str(String),
    Seq(Vec<Node>),
    /// Entries in document order; keys are unique.
    Map(Vec<(Node, Node)>),
    /// A value with a `!tag` that YAML's core schema does not know.
    Tagged(String, Box<Node>),
}

impl Node {
    /// What kind of value this is, for rules such as "must be a string, not a list".
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            Node::Null => "null",
            Node::Bool(_) => "a boolean",
            Node::Int(_) | Node::BigInt(_) | Node::Float(_) => "a number",
            Node::Str(_) => "a string",
            Node::Seq(_) => "a list",
            Node::Map(_) => "a mapping",
            Node::Tagged(..) => "a tagged value",
        }
    }

    /// The text of a scalar the way an environment variable or argument receives it.
    pub(crate) fn scalar_text(&self) -> Option<String> {
        match self {
            Node::Bool(b) => Some(b.to_string()),
            Node::Int(i) => Some(i.to_string()),
            Node::BigInt(u) => Some(u.to_string()),
            Node::Float(f) => Some(float_text(*f)),
            Node::Str(s) => Some(s.clone()),
            Node::Null | Node::Seq(_) | Node::Map(_) | Node::Tagged(..) => None,
        }
    }

    /// A key that identifies equal scalar keys, for duplicate detection.
    fn identity(&self) -> Option<String> {
        match self {
            Node::Null => Some("~".to_string()),
            Node::Bool(b) => Some(format!("b{b}")),
            Node::Int(i) => Some(format!("i{i}")),
            Node::BigInt(u) => Some(format!("i{u}")),
            Node::Float(f) => Some(format!("f{}", f.to_bits())),
            Node::Str(s) => Some(format!("s{s}")),
            Node::Seq(_) | Node::Map(_) | Node::Tagged(..) => None,
        }
    }
}

/// A float as YAML writes it (`0.5`, `2.0`, `1e300`, `.inf`, `.nan`).
pub(crate) fn float_text(f: f64) -> String {
    if f.is_nan() {
        ".nan".to_string()
    } else if f.is_infinite() {
        if f.is_sign_negative() {
            "-.inf"
        } else {
            ".inf"
        }
        .to_string()
    } else {
        // Debug is the shortest text that reads back to the same float, with an exponent for
        // very large or small values (Display would print hundreds of digits).
        format!("{f:?}")
    }
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Node, D::Error> {
        deserializer.deserialize_any(NodeVisitor)
    }
}

struct NodeVisitor;

impl<'de> de::Visitor<'de> for NodeVisitor {
    type Value = Node;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any YAML value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Node, E> {
        Ok(Node::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Node, E> {
        Ok(Node::Int(i128::from(v)))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Node, E> {
        Ok(Node::Int(i128::from(v)))
    }

    fn visit_i128<E>(self, v: i128) -> Result<Node, E> {
        Ok(Node::Int(v))
    }

    fn visit_u128<E>(self, v: u128) -> Result<Node, E> {
        Ok(i128::try_from(v).map_or(Node::BigInt(v), Node::Int))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Node, E> {
        Ok(Node::Float(v))
    }

    fn visit_str<E>(self, v: &str) -> Result<Node, E> {
        Ok(Node::Str(v.to_string()))
    }

    fn visit_string<E>(self, v: String) -> Result<Node, E> {
        Ok(Node::Str(v))
    }

    fn visit_unit<E>(self) -> Result<Node, E> {
        Ok(Node::Null)
    }

    fn visit_none<E>(self) -> Result<Node, E> {
        Ok(Node::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Node, D::Error> {
        Node::deserialize(deserializer)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Node::Seq(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
        let mut entries: Vec<(Node, Node)> = Vec::new();
        let mut seen = HashSet::new();
        while let Some(key) = map.next_key::<Node>()? {
            if let Some(identity) = key.identity() {
                if !seen.insert(identity) {
                    // serde_yaml_ng places this error at the start of the mapping.
                    return Err(de::Error::custom(format_args!(
                        "duplicate key {} in the mapping that starts here",
                        render(&key)
                    )));
                }
            }
            let value = map.next_value()?;
            entries.push((key, value));
        }
        Ok(Node::Map(entries))
    }

    fn visit_enum<A: EnumAccess<'de>>(self, data: A) -> Result<Node, A::Error> {
        let (tag, contents): (String, _) = data.variant()?;
        let value = contents.newtype_variant::<Node>()?;
        Ok(Node::Tagged(tag, Box::new(value)))
    }
}

/// Longest rendering of a value in a message, in characters.
const RENDER_LIMIT: usize = 80;

/// A value as written, for messages: strings JSON-quoted, numbers bare, lists and mappings
/// in flow style, everything cut to about 80 characters.
pub(crate) fn render(node: &Node) -> String {
    let mut out = String::new();
    write_node(node, &mut out, 0);
    cut(out)
}

/// A string JSON-quoted and cut to about 80 characters.
pub(crate) fn quote(text: &str) -> String {
    cut(quote_prefix(text))
}

fn quote_prefix(text: &str) -> String {
    const KEEP: usize = RENDER_LIMIT - 4;
    if text.chars().nth(KEEP).is_some() {
        let prefix: String = text.chars().take(KEEP).collect();
        serde_json::Value::String(format!("{prefix}…")).to_string()
    } else {
        serde_json::Value::String(text.to_string()).to_string()
    }
}

fn cut(text: String) -> String {
    if text.chars().nth(RENDER_LIMIT).is_some() {
        let mut short: String = text.chars().take(RENDER_LIMIT - 1).collect();
        short.push('…');
        short
    } else {
        text
    }
}

fn write_node(node: &Node, out: &mut String, depth: usize) {
    // Anything past the limit is cut anyway; stopping early keeps huge values cheap.
    if out.len() > RENDER_LIMIT * 4 || depth > 16 {
        out.push('…');
        return;
    }
    match node {
        Node::Null => out.push_str("null"),
        Node::Bool(b) => {
            let _ = write!(out, "{b}");
        }
        Node::Int(i) => {
            let _ = write!(out, "{i}");
        }
        Node::BigInt(u) => {
            let _ = write!(out, "{u}");
        }
        Node::Float(f) => out.push_str(&float_text(*f)),
        Node::Str(s) => out.push_str(&quote_prefix(s)),
        Node::Seq(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                if out.len() > RENDER_LIMIT {
                    out.push('…');
                    break;
                }
                write_node(item, out, depth + 1);
            }
            out.push(']');
        }
        Node::Map(entries) => {
            out.push('{');
            for (i, (key, value)) in entries.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                if out.len() > RENDER_LIMIT {
                    out.push('…');
                    break;
                }
                match key {
                    Node::Str(k) if is_plain(k) => out.push_str(k),
                    other => write_node(other, out, depth + 1),
                }
                out.push_str(": ");
                write_node(value, out, depth + 1);
            }
            out.push('}');
        }
        Node::Tagged(tag, value) => {
            if !tag.starts_with('!') {
                out.push('!');
            }
            out.extend(tag.chars().take(RENDER_LIMIT));
            out.push(' ');
            write_node(value, out, depth + 1);
        }
    }
}

/// True for keys that read unambiguously without quotes (`container`, `env_VAR-1`).
pub(crate) fn is_plain(key: &str) -> bool {
    !key.is_empty()
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Node {
        serde_yaml_ng::from_str(text).unwrap()
    }

    #[test]
    fn values_render_as_written() {
        assert_eq!(render(&parse("\"-5\"")), r#""-5""#);
        assert_eq!(render(&parse("-5")), "-5");
        assert_eq!(render(&parse("0.5")), "0.5");
        assert_eq!(render(&parse(".nan")), ".nan");
        assert_eq!(render(&parse("-.inf")), "-.inf");
        assert_eq!(render(&parse("true")), "true");
        assert_eq!(render(&parse("~")), "null");
        assert_eq!(render(&parse("[8080, \"80:80\"]")), r#"[8080, "80:80"]"#);
        assert_eq!(
            render(&parse("{container: 80, \"a b\": x}")),
            r#"{container: 80, "a b": "x"}"#
        );
        assert_eq!(render(&parse("!thing 5")), "!thing 5");
    }

    #[test]
    fn long_values_are_cut_to_about_eighty_characters() {
        let long = "x".repeat(500);
        let rendered = render(&Node::Str(long));
        assert_eq!(rendered.chars().count(), 79);
        assert!(rendered.ends_with("…\""), "{rendered}");
        let list = Node::Seq(vec![Node::Int(123_456); 1000]);
        let rendered = render(&list);
        assert!(rendered.chars().count() <= 80, "{rendered}");
        assert!(rendered.ends_with('…'), "{rendered}");
    }

    #[test]
    fn integers_past_u64_stay_numbers() {
        assert_eq!(
            parse("99999999999999999999999"),
            Node::Int(99_999_999_999_999_999_999_999)
        );
        assert_eq!(
            parse("300000000000000000000000000000000000000"),
            Node::BigInt(300_000_000_000_000_000_000_000_000_000_000_000_000)
        );
    }

    #[test]
    fn duplicate_keys_are_refused() {
        let err = serde_yaml_ng::from_str::<Node>("a: 1\nb: 2\na: 3\n").unwrap_err();
        assert!(err.to_string().contains("duplicate key \"a\""), "{err}");
    }
}
