//! Procedural macros of [`promshard`](https://docs.rs/promshard).
//!
//! This crate is an implementation detail: depend on `promshard`, which
//! re-exports these macros (documented there) and provides the runtime the
//! generated code calls through `::promshard::__private`.
//!
//! `#[metric]` runs in three stages, one module each: `attr` and `ast`
//! parse the arguments and the item, `check` applies the rules that need
//! more than one token, `expand` writes the code. `#[instrument_handler]`
//! has the same three stages in the `handler_*` modules.

mod ast;
mod attr;
mod check;
mod ctxt;
mod derive;
mod expand;
mod handler_attr;
mod handler_check;
mod handler_expand;
mod names;

use proc_macro::TokenStream;

/// See `promshard::metric`.
#[proc_macro_attribute]
pub fn metric(args: TokenStream, item: TokenStream) -> TokenStream {
    expand::metric(args.into(), item.into()).into()
}

/// See `promshard::instrument_handler`.
#[proc_macro_attribute]
pub fn instrument_handler(args: TokenStream, item: TokenStream) -> TokenStream {
    handler_expand::instrument_handler(args.into(), item.into()).into()
}

/// See `promshard::LabelValue`.
#[proc_macro_derive(LabelValue, attributes(label))]
pub fn derive_label_value(input: TokenStream) -> TokenStream {
    let input = syn::parse_macro_input!(input as syn::DeriveInput);
    derive::label_value(&input).unwrap_or_else(syn::Error::into_compile_error).into()
}
