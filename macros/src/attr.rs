//! The arguments of `#[metric(...)]`.
//!
//! Each comma-separated argument is parsed on its own, so a mistake in one
//! is reported without hiding mistakes in the others.

use proc_macro2::{Span, TokenStream, TokenTree};
use syn::ext::IdentExt;
use syn::parse::{ParseStream, Parser};
use syn::spanned::Spanned;
use syn::{Expr, ExprLit, ExprUnary, Ident, Lit, LitInt, LitStr, Token, Type, UnOp, bracketed, parenthesized};

use crate::ctxt::Ctxt;

const KEYS: &str = "name, help, unit, labels, buckets, native, mode, store, max_series, exemplars, crate";

#[derive(Default)]
pub(crate) struct Args {
    pub(crate) krate: Option<syn::Path>,
    pub(crate) name: Option<LitStr>,
    pub(crate) help: Option<LitStr>,
    pub(crate) unit: Option<LitStr>,
    pub(crate) labels: Option<Labels>,
    pub(crate) buckets: Option<Buckets>,
    /// `native` or `native(schema = 3, max_buckets = 160)`.
    pub(crate) native: Option<Native>,
    pub(crate) mode: Option<Ident>,
    /// `store = redis`: the value lives in Redis, not in this process.
    pub(crate) store: Option<Ident>,
    pub(crate) max_series: Option<LitInt>,
    /// `exemplars`: keep each series' latest exemplar (a bare flag).
    pub(crate) exemplars: Option<Ident>,
}

pub(crate) struct Labels {
    pub(crate) keyword: Ident,
    pub(crate) list: Vec<Label>,
}

pub(crate) struct Label {
    pub(crate) name: LabelName,
    pub(crate) source: Source,
}

/// A label's name: an identifier (`method`) or a string for a name that
/// is not one (`"http.request.method"`).
pub(crate) struct LabelName {
    pub(crate) text: String,
    pub(crate) span: Span,
}

impl std::fmt::Display for LabelName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

/// Where a label's values come from.
pub(crate) enum Source {
    /// `method: Method`, a `LabelType` defined elsewhere.
    Type(Box<Type>),
    /// `category = ["a", "b"] else "other"`.
    List { values: Vec<LitStr>, fallback: Option<LitStr>, span: Span },
    /// `route = bounded(64)`.
    Bounded { capacity: usize, span: Span },
}

pub(crate) struct Buckets {
    pub(crate) keyword: Ident,
    pub(crate) spec: BucketSpec,
}

/// `native(…)`: each value as written, with its span; `None` takes the
/// runtime's default.
pub(crate) struct Native {
    pub(crate) keyword: Ident,
    pub(crate) schema: Option<(i64, Span)>,
    pub(crate) max_buckets: Option<(i64, Span)>,
}

pub(crate) enum BucketSpec {
    /// Written out, each bound with its span.
    Listed(Vec<(f64, Span)>, Span),
    /// From `linear(start, width, count)` or `exponential(start, factor, count)`.
    Generated(Vec<f64>, Span),
    /// A `const` array defined elsewhere, checked when it is evaluated.
    Path(syn::Path),
}

pub(crate) fn parse(tokens: TokenStream, cx: &mut Ctxt) -> Args {
    let mut args = Args::default();
    for chunk in split_commas(tokens) {
        let parser = |input: ParseStream| parse_arg(input, &mut args);
        if let Err(e) = parser.parse2(chunk) {
            cx.push(e);
        }
    }
    args
}

/// Splits at top-level commas; commas inside groups stay in their group.
pub(crate) fn split_commas(tokens: TokenStream) -> Vec<TokenStream> {
    let mut chunks = vec![TokenStream::new()];
    for tt in tokens {
        match &tt {
            TokenTree::Punct(p) if p.as_char() == ',' => chunks.push(TokenStream::new()),
            _ => chunks.last_mut().expect("never empty").extend([tt]),
        }
    }
    chunks.retain(|c| !c.is_empty());
    chunks
}

/// An argument's name; `crate` is a keyword, so it is read as one.
pub(crate) fn parse_key(input: ParseStream) -> syn::Result<Ident> {
    if input.peek(Token![crate]) {
        let token: Token![crate] = input.parse()?;
        Ok(Ident::new("crate", token.span))
    } else {
        input.parse()
    }
}

fn parse_arg(input: ParseStream, args: &mut Args) -> syn::Result<()> {
    let key = parse_key(input)?;
    let name = key.to_string();
    let duplicate = || syn::Error::new(key.span(), format!("duplicate argument `{name}`"));
    match name.as_str() {
        "name" | "help" | "unit" => {
            input.parse::<Token![=]>()?;
            let value: LitStr = input.parse()?;
            let slot = match name.as_str() {
                "name" => &mut args.name,
                "help" => &mut args.help,
                _ => &mut args.unit,
            };
            if slot.replace(value).is_some() {
                return Err(duplicate());
            }
        }
        "mode" => {
            input.parse::<Token![=]>()?;
            if args.mode.replace(input.parse()?).is_some() {
                return Err(duplicate());
            }
        }
        "store" => {
            input.parse::<Token![=]>()?;
            if args.store.replace(input.parse()?).is_some() {
                return Err(duplicate());
            }
        }
        "exemplars" => {
            if args.exemplars.replace(key.clone()).is_some() {
                return Err(duplicate());
            }
        }
        "max_series" => {
            input.parse::<Token![=]>()?;
            if args.max_series.replace(input.parse()?).is_some() {
                return Err(duplicate());
            }
        }
        "crate" => {
            input.parse::<Token![=]>()?;
            if args.krate.replace(input.call(syn::Path::parse_mod_style)?).is_some() {
                return Err(duplicate());
            }
        }
        "buckets" => {
            input.parse::<Token![=]>()?;
            let spec = parse_buckets(input)?;
            if args.buckets.replace(Buckets { keyword: key.clone(), spec }).is_some() {
                return Err(duplicate());
            }
        }
        "native" => {
            let native = parse_native(input, key.clone())?;
            if args.native.replace(native).is_some() {
                return Err(duplicate());
            }
        }
        "labels" => {
            let content;
            parenthesized!(content in input);
            let mut list = Vec::new();
            let mut errors: Option<syn::Error> = None;
            for chunk in split_commas(content.parse()?) {
                match (|input: ParseStream| parse_label(input)).parse2(chunk) {
                    Ok(label) => list.push(label),
                    Err(e) => match &mut errors {
                        Some(all) => all.combine(e),
                        None => errors = Some(e),
                    },
                }
            }
            if let Some(errors) = errors {
                return Err(errors);
            }
            if args.labels.replace(Labels { keyword: key.clone(), list }).is_some() {
                return Err(duplicate());
            }
        }
        _ => {
            return Err(syn::Error::new(key.span(), format!("unknown argument `{name}`; expected one of: {KEYS}")));
        }
    }
    if !input.is_empty() {
        return Err(input.error(format!("unexpected tokens after `{name}`")));
    }
    Ok(())
}

fn parse_label(input: ParseStream) -> syn::Result<Label> {
    let name = if input.peek(LitStr) {
        let lit: LitStr = input.parse()?;
        LabelName { text: lit.value(), span: lit.span() }
    } else {
        let ident: Ident = input.parse()?;
        LabelName { text: ident.unraw().to_string(), span: ident.span() }
    };
    if input.peek(Token![:]) {
        input.parse::<Token![:]>()?;
        return Ok(Label { name, source: Source::Type(Box::new(input.parse()?)) });
    }
    let eq = input.parse::<Token![=]>().map_err(|_| {
        syn::Error::new(
            name.span,
            format!(
                "label `{name}` needs its values: `{name}: SomeEnum`, `{name} = [\"a\", \"b\"]` or `{name} = bounded(N)`"
            ),
        )
    })?;
    let source = if input.peek(syn::token::Bracket) {
        let content;
        let bracket = bracketed!(content in input);
        let values = content.parse_terminated(<LitStr as syn::parse::Parse>::parse, Token![,])?;
        let fallback = if input.peek(Token![else]) {
            input.parse::<Token![else]>()?;
            Some(input.parse()?)
        } else {
            None
        };
        Source::List { values: values.into_iter().collect(), fallback, span: bracket.span.join() }
    } else if input.peek(Ident) {
        let keyword: Ident = input.parse()?;
        if keyword != "bounded" {
            return Err(syn::Error::new(keyword.span(), "expected `bounded(N)` or a list of strings"));
        }
        let content;
        parenthesized!(content in input);
        let capacity: LitInt = content.parse()?;
        Source::Bounded {
            capacity: capacity.base10_parse()?,
            span: keyword.span().join(capacity.span()).unwrap_or(keyword.span()),
        }
    } else {
        return Err(syn::Error::new(eq.span, "expected a list of strings `[\"a\", \"b\"]` or `bounded(N)`"));
    };
    Ok(Label { name, source })
}

fn parse_buckets(input: ParseStream) -> syn::Result<BucketSpec> {
    if input.peek(syn::token::Bracket) {
        let content;
        let bracket = bracketed!(content in input);
        let exprs = content.parse_terminated(Expr::parse, Token![,])?;
        let mut values = Vec::new();
        for expr in &exprs {
            values.push((number(expr)?, expr.span()));
        }
        return Ok(BucketSpec::Listed(values, bracket.span.join()));
    }
    let path: syn::Path = input.parse()?;
    if !input.peek(syn::token::Paren) {
        return Ok(BucketSpec::Path(path));
    }
    let content;
    parenthesized!(content in input);
    let exprs = content.parse_terminated(Expr::parse, Token![,])?;
    let span = path.span();
    let function = path.get_ident().map(Ident::to_string).unwrap_or_default();
    let [start, step, count] = exprs.iter().collect::<Vec<_>>()[..] else {
        return Err(syn::Error::new(span, format!("`{function}` takes (start, step, count)")));
    };
    let (start, step) = (number(start)?, number(step)?);
    let count: usize = match count {
        Expr::Lit(ExprLit { lit: Lit::Int(n), .. }) => n.base10_parse()?,
        other => {
            return Err(syn::Error::new(other.span(), "the bucket count must be an integer literal"));
        }
    };
    let values = match function.as_str() {
        "linear" => (0..count).map(|i| start + step * i as f64).collect(),
        "exponential" => (0..count).map(|i| start * step.powi(i as i32)).collect(),
        _ => {
            return Err(syn::Error::new(
                span,
                "expected a list `[0.1, 0.5, 1.0]`, `linear(start, width, count)`, `exponential(start, factor, count)` or a const",
            ));
        }
    };
    Ok(BucketSpec::Generated(values, span))
}

use syn::parse::Parse;

/// `native`, alone or with `(schema = …, max_buckets = …)`.
fn parse_native(input: ParseStream, keyword: Ident) -> syn::Result<Native> {
    let mut native = Native { keyword, schema: None, max_buckets: None };
    if !input.peek(syn::token::Paren) {
        return Ok(native);
    }
    let content;
    parenthesized!(content in input);
    for chunk in split_commas(content.parse()?) {
        let parse = |input: ParseStream| {
            let key: Ident = input.parse()?;
            input.parse::<Token![=]>()?;
            let value: Expr = input.parse()?;
            let slot = match key.to_string().as_str() {
                "schema" => &mut native.schema,
                "max_buckets" => &mut native.max_buckets,
                other => {
                    return Err(syn::Error::new(
                        key.span(),
                        format!("unknown `native` argument `{other}`; expected one of: schema, max_buckets"),
                    ));
                }
            };
            if slot.replace((integer(&value)?, value.span())).is_some() {
                return Err(syn::Error::new(key.span(), format!("duplicate `native` argument `{key}`")));
            }
            Ok(())
        };
        parse.parse2(chunk)?;
    }
    Ok(native)
}

/// An integer literal, possibly negated.
fn integer(expr: &Expr) -> syn::Result<i64> {
    match expr {
        Expr::Lit(ExprLit { lit: Lit::Int(i), .. }) => i.base10_parse(),
        Expr::Unary(ExprUnary { op: UnOp::Neg(_), expr, .. }) => Ok(-integer(expr)?),
        _ => Err(syn::Error::new(expr.span(), "expected an integer literal")),
    }
}

/// A number literal, possibly negated, as `f64`.
fn number(expr: &Expr) -> syn::Result<f64> {
    match expr {
        Expr::Lit(ExprLit { lit: Lit::Float(f), .. }) => f.base10_parse(),
        Expr::Lit(ExprLit { lit: Lit::Int(i), .. }) => i.base10_parse::<f64>(),
        Expr::Unary(ExprUnary { op: UnOp::Neg(_), expr, .. }) => Ok(-number(expr)?),
        Expr::Path(p) if p.path.segments.last().is_some_and(|s| s.ident == "INFINITY" || s.ident == "NAN") => {
            Err(syn::Error::new(expr.span(), "histogram buckets must be finite; the `+Inf` bucket is always added"))
        }
        _ => Err(syn::Error::new(expr.span(), "expected a number literal")),
    }
}
