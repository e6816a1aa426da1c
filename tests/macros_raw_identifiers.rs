//! Raw identifiers (`r#type`), how Rust spells names that are keywords,
//! name what they would name without the `r#`: a label `r#type` is the
//! label `type`, a variant `r#Match` the value `match`, a static
//! `r#MATCHES_TOTAL` and a function `r#match` the same as if written
//! without it.

use promshard::testing::sample_value;
use promshard::{Counter, LabelValue, instrument_handler, metric};

/// Kinds of tokens, some of them keywords.
#[derive(Clone, Copy, LabelValue)]
enum TokenKind {
    r#Match,
    r#Async,
    Plain,
}

/// Tokens seen, by kind.
#[metric(labels(r#type: TokenKind, r#ref = ["head", "tag"]))]
static RAW_TOKENS_TOTAL: Counter;

/// A static whose name needs no `r#` but is written with one.
#[metric]
static r#RAW_MATCHES_TOTAL: Counter;

#[instrument_handler]
fn r#match(text: &str) -> bool {
    text.contains("match")
}

#[test]
fn raw_identifiers_name_what_they_spell() {
    RAW_TOKENS_TOTAL.with((TokenKind::r#Match, "head")).inc();
    RAW_TOKENS_TOTAL.with((TokenKind::r#Async, "tag")).inc_by(2);
    RAW_TOKENS_TOTAL.with((TokenKind::Plain, "tag")).inc();
    r#RAW_MATCHES_TOTAL.inc();
    assert!(r#match("a match"));

    let text = String::from_utf8(promshard::encode(promshard::Format::Prometheus)).unwrap();
    let ours: Vec<&str> = text.lines().filter(|l| l.starts_with("raw_")).collect();
    assert!(ours.iter().all(|l| !l.contains("r#") && !l.contains("r_")), "raw prefixes leaked: {ours:#?}");
    let tokens = |kind: &str, r#ref: &str| sample_value("raw_tokens_total", &[("type", kind), ("ref", r#ref)]);
    assert_eq!(tokens("match", "head"), Some(1.0), "{ours:#?}");
    assert_eq!(tokens("async", "tag"), Some(2.0), "{ours:#?}");
    assert_eq!(tokens("plain", "tag"), Some(1.0), "{ours:#?}");
    assert_eq!(sample_value("raw_matches_total", &[]), Some(1.0), "{ours:#?}");

    let handler = format!("{}::match", module_path!());
    let labels = [("handler", handler.as_str()), ("result", "ok")];
    assert_eq!(sample_value("function_calls_total", &labels), Some(1.0));
}
