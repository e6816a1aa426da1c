//! What `cargo expand` shows for `#[metric]`, `#[derive(LabelValue)]` and
//! `#[instrument_handler]`:
//! each `tests/expand/*.rs` is expanded with the macro crate's own
//! functions, formatted with prettyplease and compared with its checked-in
//! `*.expanded.rs`, so every change to generated code shows up in review.
//! `PROMSHARD_BLESS=1 cargo test --test expand` rewrites the snapshots.

#[allow(dead_code)]
#[path = "../macros/src/ast.rs"]
mod ast;
#[allow(dead_code)]
#[path = "../macros/src/attr.rs"]
mod attr;
#[allow(dead_code)]
#[path = "../macros/src/check.rs"]
mod check;
#[allow(dead_code)]
#[path = "../macros/src/ctxt.rs"]
mod ctxt;
#[allow(dead_code)]
#[path = "../macros/src/derive.rs"]
mod derive;
#[allow(dead_code)]
#[path = "../macros/src/expand.rs"]
mod expand;
#[allow(dead_code)]
#[path = "../macros/src/handler_attr.rs"]
mod handler_attr;
#[allow(dead_code)]
#[path = "../macros/src/handler_check.rs"]
mod handler_check;
#[allow(dead_code)]
#[path = "../macros/src/handler_expand.rs"]
mod handler_expand;
#[allow(dead_code)]
#[path = "../macros/src/names.rs"]
mod names;

use std::path::Path;

use proc_macro2::TokenStream;
use quote::ToTokens;

/// Expands every `#[metric]` static and `#[derive(LabelValue)]` enum in
/// `source`, leaving other items as they are.
fn expand_file(source: &str) -> String {
    let file = syn::parse_file(source).expect("snapshot input parses");
    let mut out = TokenStream::new();
    for item in file.items {
        match item {
            syn::Item::Enum(mut item) => {
                let derives = item.attrs.iter().any(|a| a.path().is_ident("derive"));
                let input: syn::DeriveInput = syn::parse2(item.to_token_stream()).unwrap();
                if derives {
                    // The derive's own output follows the enum, as rustc places it.
                    item.attrs.retain(|a| !a.path().is_ident("derive"));
                    item.to_tokens(&mut out);
                    out.extend(derive::label_value(&input).unwrap_or_else(syn::Error::into_compile_error));
                }
            }
            syn::Item::Fn(mut item) => {
                let position = item.attrs.iter().position(|a| a.path().is_ident("instrument_handler"));
                let attr = item.attrs.remove(position.expect("#[instrument_handler]"));
                let args = match attr.meta {
                    syn::Meta::List(list) => list.tokens,
                    _ => TokenStream::new(),
                };
                out.extend(handler_expand::instrument_handler(args, item.to_token_stream()));
            }
            other => {
                let tokens = other.to_token_stream();
                let decl: ast::Static = syn::parse2(tokens).expect("a static");
                let position = decl.attrs.iter().position(|a| a.path().is_ident("metric")).expect("#[metric]");
                let mut attrs = decl.attrs.clone();
                let metric = attrs.remove(position);
                let args = match metric.meta {
                    syn::Meta::List(list) => list.tokens,
                    _ => TokenStream::new(),
                };
                let mut item = TokenStream::new();
                for attr in &attrs {
                    attr.to_tokens(&mut item);
                }
                item.extend(other_tokens_after_attrs(&other));
                out.extend(expand::metric(args, item));
            }
        }
    }
    let file: syn::File = syn::parse2(out).expect("the expansion parses as a file");
    prettyplease::unparse(&file)
}

/// The item's tokens without its outer attributes.
fn other_tokens_after_attrs(item: &syn::Item) -> TokenStream {
    let tokens: Vec<_> = item.to_token_stream().into_iter().collect();
    let mut rest = &tokens[..];
    while let [proc_macro2::TokenTree::Punct(p), proc_macro2::TokenTree::Group(_), tail @ ..] = rest {
        if p.as_char() != '#' {
            break;
        }
        rest = tail;
    }
    rest.iter().cloned().collect()
}

#[test]
fn expansions_match_snapshots() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/expand");
    let bless = std::env::var_os("PROMSHARD_BLESS").is_some();
    let mut inputs: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "rs") && !p.to_string_lossy().ends_with(".expanded.rs"))
        .collect();
    inputs.sort();
    assert!(!inputs.is_empty());
    for input in inputs {
        let expanded = expand_file(&std::fs::read_to_string(&input).unwrap());
        let snapshot = input.with_extension("expanded.rs");
        if bless {
            std::fs::write(&snapshot, &expanded).unwrap();
            continue;
        }
        let expected = std::fs::read_to_string(&snapshot)
            .unwrap_or_else(|_| panic!("{} is missing; run with PROMSHARD_BLESS=1", snapshot.display()));
        assert_eq!(expanded, expected, "{} changed; review it and run with PROMSHARD_BLESS=1", input.display());
    }
}
