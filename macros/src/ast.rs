//! The item `#[metric]` is attached to: `static NAME: Kind;`.

use proc_macro2::{Span, TokenStream};
use syn::parse::{Parse, ParseStream};
use syn::{Attribute, GenericArgument, Ident, PathArguments, Token, Type, Visibility};

/// A declaration as written, kept with its tokens for spans.
pub(crate) struct Static {
    pub(crate) attrs: Vec<Attribute>,
    pub(crate) vis: Visibility,
    pub(crate) static_token: Token![static],
    pub(crate) ident: Ident,
    pub(crate) ty: Type,
    pub(crate) kind: Option<Kind>,
    /// An initializer the user wrote, which `#[metric]` refuses.
    pub(crate) initializer: Option<TokenStream>,
    pub(crate) mutability: Option<Token![mut]>,
}

/// The instrument type, read from the last segment of the static's type.
#[derive(Clone)]
pub(crate) enum Kind {
    Counter,
    Gauge,
    Histogram,
    Info,
    /// `Enum<States>`.
    Enum(Box<Type>),
}

impl Kind {
    pub(crate) fn type_name(&self) -> &'static str {
        match self {
            Kind::Counter => "Counter",
            Kind::Gauge => "Gauge",
            Kind::Histogram => "Histogram",
            Kind::Info => "Info",
            Kind::Enum(_) => "Enum",
        }
    }
}

impl Parse for Static {
    fn parse(input: ParseStream) -> syn::Result<Self> {
        let attrs = input.call(Attribute::parse_outer)?;
        let vis = input.parse()?;
        let static_token = input.parse()?;
        let mutability = input.parse()?;
        let ident = input.parse()?;
        input.parse::<Token![:]>()?;
        let ty: Type = input.parse()?;
        let initializer = if input.peek(Token![=]) {
            input.parse::<Token![=]>()?;
            let mut tokens = TokenStream::new();
            while !input.is_empty() && !input.peek(Token![;]) {
                tokens.extend([input.parse::<proc_macro2::TokenTree>()?]);
            }
            Some(tokens)
        } else {
            None
        };
        input.parse::<Token![;]>()?;
        let kind = kind_of(&ty);
        Ok(Static { attrs, vis, static_token, ident, ty, kind, initializer, mutability })
    }
}

fn kind_of(ty: &Type) -> Option<Kind> {
    let Type::Path(path) = ty else { return None };
    let last = path.path.segments.last()?;
    let kind = match last.ident.to_string().as_str() {
        "Counter" => Kind::Counter,
        "Gauge" => Kind::Gauge,
        "Histogram" => Kind::Histogram,
        "Info" => Kind::Info,
        "Enum" => {
            let PathArguments::AngleBracketed(args) = &last.arguments else {
                return None;
            };
            match args.args.first() {
                Some(GenericArgument::Type(states)) if args.args.len() == 1 => Kind::Enum(Box::new(states.clone())),
                _ => return None,
            }
        }
        _ => return None,
    };
    if !matches!(kind, Kind::Enum(_)) && !last.arguments.is_none() {
        return None;
    }
    Some(kind)
}

impl Static {
    /// The doc comment's first paragraph, lines joined by spaces, and the
    /// span of its first line.
    pub(crate) fn doc_summary(&self) -> Option<(String, Span)> {
        let mut lines = Vec::new();
        let mut span = None;
        for attr in &self.attrs {
            if !attr.path().is_ident("doc") {
                continue;
            }
            let syn::Meta::NameValue(nv) = &attr.meta else {
                continue;
            };
            let syn::Expr::Lit(syn::ExprLit { lit: syn::Lit::Str(s), .. }) = &nv.value else {
                continue;
            };
            let text = s.value();
            let line = text.trim();
            if line.is_empty() {
                if !lines.is_empty() {
                    break;
                }
                continue;
            }
            span.get_or_insert(attr.pound_token.span);
            lines.push(line.to_owned());
        }
        span.map(|span| (lines.join(" "), span))
    }
}
