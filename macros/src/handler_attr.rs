//! The arguments of `#[instrument_handler(...)]`, each parsed on its own
//! so that one mistake does not hide the others.

use proc_macro2::TokenStream;
use syn::parse::{ParseStream, Parser};
use syn::{Ident, LitStr, Token};

use crate::attr::split_commas;
use crate::ctxt::Ctxt;

const KEYS: &str = "route, method, name, families, crate";

#[derive(Default)]
pub(crate) struct HandlerArgs {
    /// `route = "/users/{id}"`: an HTTP handler, labelled with its route.
    pub(crate) route: Option<LitStr>,
    /// `method = "GET"`, with the key for errors.
    pub(crate) method: Option<(Ident, LitStr)>,
    /// `name = "..."`: the `handler` label's value instead of the route or
    /// the function's path.
    pub(crate) name: Option<LitStr>,
    /// `families = PATH`: a `HandlerFamilies` constant.
    pub(crate) families: Option<syn::Path>,
    pub(crate) krate: Option<syn::Path>,
}

pub(crate) fn parse(tokens: TokenStream, cx: &mut Ctxt) -> HandlerArgs {
    let mut args = HandlerArgs::default();
    for chunk in split_commas(tokens) {
        let parser = |input: ParseStream| parse_arg(input, &mut args);
        if let Err(e) = parser.parse2(chunk) {
            cx.push(e);
        }
    }
    args
}

fn parse_arg(input: ParseStream, args: &mut HandlerArgs) -> syn::Result<()> {
    let key = crate::attr::parse_key(input)?;
    let name = key.to_string();
    let duplicate = || syn::Error::new(key.span(), format!("duplicate argument `{name}`"));
    match name.as_str() {
        "route" | "name" => {
            input.parse::<Token![=]>()?;
            let value: LitStr = input.parse()?;
            let slot = if name == "route" { &mut args.route } else { &mut args.name };
            if slot.replace(value).is_some() {
                return Err(duplicate());
            }
        }
        "method" => {
            input.parse::<Token![=]>()?;
            let value: LitStr = input.parse()?;
            if args.method.replace((key.clone(), value)).is_some() {
                return Err(duplicate());
            }
        }
        "families" | "crate" => {
            input.parse::<Token![=]>()?;
            let path = input.call(syn::Path::parse_mod_style)?;
            let slot = if name == "families" { &mut args.families } else { &mut args.krate };
            if slot.replace(path).is_some() {
                return Err(duplicate());
            }
        }
        "status" | "result" | "labels" => {
            return Err(syn::Error::new(
                key.span(),
                format!(
                    "unknown argument `{name}`: the labels of handler families are fixed and bounded; \
                     status codes fold into the family's list (HandlerFamilies::status_codes or \
                     status_classes) plus `other`, and the outcome is read from the return type \
                     (implement `promshard::HandlerOutcome` for your own types); expected one of: {KEYS}"
                ),
            ));
        }
        _ => return Err(syn::Error::new(key.span(), format!("unknown argument `{name}`; expected one of: {KEYS}"))),
    }
    if !input.is_empty() {
        return Err(input.error("expected `,`"));
    }
    Ok(())
}
