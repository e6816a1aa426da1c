//! The rules of `#[instrument_handler]` that need the arguments and the
//! function together, and the shape of the function's body.

use proc_macro2::TokenStream;
use quote::quote;
use syn::ext::IdentExt;
use syn::{GenericArgument, ItemFn, LitStr, PathArguments, ReturnType, Type, TypeParamBound};

use crate::ctxt::Ctxt;
use crate::handler_attr::HandlerArgs;

/// The longest label value the runtime keeps (its `MAX_LABEL_VALUE`).
const MAX_LABEL_VALUE: usize = 256;

/// The request methods `method` accepts (`promshard::STANDARD_METHODS`).
const METHODS: [&str; 9] = ["GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"];

pub(crate) struct Handler {
    /// `Some((route, method))` for an HTTP handler.
    pub(crate) http: Option<(LitStr, String)>,
    /// The `handler` label's value, as an expression.
    pub(crate) label: TokenStream,
    pub(crate) body: Body,
    /// Whether the function returns `!`.
    pub(crate) never: bool,
    /// The return type to pin the body's type to (`?` and `.into()` in the
    /// body need it); `None` for `impl Trait`, which cannot be written in a
    /// `let`.
    pub(crate) return_type: Option<Type>,
    /// The type the outcome is read from, written on the outcome's
    /// closure: the return type, or for a body that returns a future its
    /// output, with each `impl Trait` in it left to inference (`_`).
    /// Without it, a type the body leaves to inference until the end (the
    /// error of `?`, converted by `From`) would be classified by a rule
    /// chosen before it is known: `Result<impl IntoResponse, AppError>`
    /// would ask `AppError` for its status.
    pub(crate) classified: Option<Type>,
}

/// How the function runs its body.
pub(crate) enum Body {
    /// `fn`: the call is the body's run.
    Sync,
    /// `async fn`: the call is the future's life.
    Async,
    /// A `fn` returning `Pin<Box<dyn Future>>`, as `#[async_trait]` writes
    /// an `async fn` (or the futures crate's `BoxFuture`): the call is the
    /// returned future's life.
    BoxedFuture,
    /// A `fn` returning `impl Future`: the call is the returned future's
    /// life, as for `async fn`.
    ImplFuture,
}

pub(crate) fn check(item: &ItemFn, args: &HandlerArgs, cx: &mut Ctxt) -> Option<Handler> {
    let sig = &item.sig;
    if let Some(constness) = &sig.constness {
        cx.error(constness.span, "#[instrument_handler] cannot go on a `const fn`: recording happens at run time");
    }
    if let Some(variadic) = &sig.variadic {
        cx.error(variadic.dots.spans[0], "#[instrument_handler] cannot go on a variadic function");
    }
    // The body runs in a closure (so that `return` and `?` end the call
    // properly), where `Location::caller()` would name the function
    // itself: refused rather than silently changed.
    if let Some(attr) = item.attrs.iter().find(|a| a.path().is_ident("track_caller")) {
        cx.error(
            attr.path().get_ident().map_or_else(proc_macro2::Span::call_site, |i| i.span()),
            "#[instrument_handler] cannot keep #[track_caller]: the body runs in a closure, where \
             `Location::caller()` would name this function instead of its caller",
        );
    }
    let http = match (&args.route, &args.method) {
        (Some(route), Some((_, method))) => {
            if route.value().is_empty() {
                cx.error(route.span(), "`route` must not be empty: it is the `handler` label's value");
            }
            let upper = method.value().to_ascii_uppercase();
            if !METHODS.contains(&upper.as_str()) {
                cx.error(
                    method.span(),
                    format!("unknown method {:?}; expected one of: {}", method.value(), METHODS.join(", ")),
                );
            }
            Some((route.clone(), upper))
        }
        (Some(route), None) => {
            cx.error(
                route.span(),
                "`route` needs `method = \"GET\"` (or another method): the method label is taken from \
                 the attribute",
            );
            None
        }
        (None, Some((key, _))) => {
            cx.error(
                key.span(),
                "`method` needs `route = \"...\"`: only HTTP handlers have a method; \
                 a function without a route is labelled by its path and result",
            );
            None
        }
        (None, None) => None,
    };
    if let Some(name) = &args.name {
        if name.value().is_empty() {
            cx.error(name.span(), "`name` must not be empty: it is the `handler` label's value");
        }
    }
    // Label values past this length cannot be kept by the layer's route
    // table (promshard's MAX_LABEL_VALUE): refused here rather than
    // counted as overflow at every start.
    for value in args.name.iter().chain(args.route.as_ref()) {
        if value.value().len() > MAX_LABEL_VALUE {
            cx.error(
                value.span(),
                format!(
                    "the `handler` label's value is {} bytes long; at most {MAX_LABEL_VALUE} are kept",
                    value.value().len()
                ),
            );
        }
    }
    let label = match (&args.name, &http) {
        (Some(name), _) => quote!(#name),
        (None, Some((route, _))) => quote!(#route),
        (None, None) => {
            let name = format!("::{}", sig.ident.unraw());
            quote!(::core::concat!(::core::module_path!(), #name))
        }
    };
    let never = matches!(&sig.output, ReturnType::Type(_, ty) if matches!(**ty, Type::Never(_)));
    let body = if sig.asyncness.is_some() {
        Body::Async
    } else if boxed_future_output(&sig.output).is_some() || box_future_alias(&sig.output).is_some() {
        Body::BoxedFuture
    } else if impl_future_output(&sig.output).is_some() {
        Body::ImplFuture
    } else {
        Body::Sync
    };
    // The output, written on the outcome's closure: the body's future may
    // leave it to be inferred from the return type (`.into()`, `parse()`),
    // later than the outcome is chosen.
    let classified = match body {
        Body::BoxedFuture | Body::ImplFuture => boxed_future_output(&sig.output)
            .or_else(|| box_future_alias(&sig.output))
            .or_else(|| impl_future_output(&sig.output).flatten())
            .and_then(infer_impl_trait),
        // The body is pinned to a return type without `impl`.
        Body::Sync | Body::Async if never => None,
        Body::Sync | Body::Async => match &sig.output {
            ReturnType::Type(_, ty) if contains_impl_trait(ty) => infer_impl_trait(ty),
            _ => None,
        },
    };
    let return_type = match &sig.output {
        ReturnType::Default => Some(syn::parse_quote!(())),
        ReturnType::Type(_, ty) if contains_impl_trait(ty) => None,
        // `!` cannot be written in a `let` on stable: the body is pinned to
        // `Infallible`, which it coerces to, and the call matched empty.
        _ if never => Some(syn::parse_quote!(::core::convert::Infallible)),
        ReturnType::Type(_, ty) => Some((**ty).clone()),
    };
    Some(Handler { http, label, body, never, return_type, classified })
}

/// `X` when `output` is `Pin<Box<dyn Future<Output = X> + ...>>`.
fn boxed_future_output(output: &ReturnType) -> Option<&Type> {
    let ReturnType::Type(_, ty) = output else { return None };
    let pinned = single_argument(ty, "Pin")?;
    let Type::TraitObject(object) = single_argument(pinned, "Box")? else { return None };
    object.bounds.iter().find_map(|bound| {
        let TypeParamBound::Trait(bound) = bound else { return None };
        let last = bound.path.segments.last()?;
        if last.ident != "Future" {
            return None;
        }
        let PathArguments::AngleBracketed(args) = &last.arguments else { return None };
        args.args.iter().find_map(|arg| match arg {
            GenericArgument::AssocType(assoc) if assoc.ident == "Output" => Some(&assoc.ty),
            _ => None,
        })
    })
}

/// `T` when `output` is the futures crate's `BoxFuture<'a, T>` or
/// `LocalBoxFuture<'a, T>` (`Pin<Box<dyn Future<Output = T> ...>>`), known
/// by name: an alias cannot be seen through.
fn box_future_alias(output: &ReturnType) -> Option<&Type> {
    let ReturnType::Type(_, ty) = output else { return None };
    single_argument(ty, "BoxFuture").or_else(|| single_argument(ty, "LocalBoxFuture"))
}

/// When `output` is `impl Future<...>` (with any other bounds): `Some` of
/// its `Output`, if it names one.
fn impl_future_output(output: &ReturnType) -> Option<Option<&Type>> {
    let ReturnType::Type(_, ty) = output else { return None };
    let Type::ImplTrait(bounds) = &**ty else { return None };
    bounds.bounds.iter().find_map(|bound| {
        let TypeParamBound::Trait(bound) = bound else { return None };
        let last = bound.path.segments.last()?;
        if last.ident != "Future" {
            return None;
        }
        let PathArguments::AngleBracketed(args) = &last.arguments else { return Some(None) };
        Some(args.args.iter().find_map(|arg| match arg {
            GenericArgument::AssocType(assoc) if assoc.ident == "Output" => Some(&assoc.ty),
            _ => None,
        }))
    })
}

/// The one type argument of `ty` when its last path segment is `name`.
fn single_argument<'a>(ty: &'a Type, name: &str) -> Option<&'a Type> {
    let Type::Path(path) = ty else { return None };
    let last = path.path.segments.last()?;
    if last.ident != name {
        return None;
    }
    let PathArguments::AngleBracketed(args) = &last.arguments else { return None };
    args.args.iter().find_map(|arg| match arg {
        GenericArgument::Type(ty) => Some(ty),
        _ => None,
    })
}

/// `ty` with every `impl Trait` in it replaced by `_`, which a closure's
/// parameter may hold; `None` when an `impl` is left where this does not
/// look (in a bound, a function pointer...), or when nothing is known
/// (`ty` is `impl Trait` itself).
fn infer_impl_trait(ty: &Type) -> Option<Type> {
    fn replace(ty: &mut Type) {
        match ty {
            Type::ImplTrait(_) => *ty = syn::parse_quote!(_),
            Type::Path(path) => {
                if let Some(qself) = &mut path.qself {
                    replace(&mut qself.ty);
                }
                for segment in &mut path.path.segments {
                    if let PathArguments::AngleBracketed(args) = &mut segment.arguments {
                        for arg in &mut args.args {
                            if let GenericArgument::Type(ty) = arg {
                                replace(ty);
                            }
                        }
                    }
                }
            }
            Type::Reference(reference) => replace(&mut reference.elem),
            Type::Tuple(tuple) => tuple.elems.iter_mut().for_each(replace),
            Type::Array(array) => replace(&mut array.elem),
            Type::Slice(slice) => replace(&mut slice.elem),
            Type::Paren(paren) => replace(&mut paren.elem),
            Type::Group(group) => replace(&mut group.elem),
            _ => {}
        }
    }
    if matches!(ty, Type::ImplTrait(_)) {
        return None;
    }
    let mut ty = ty.clone();
    replace(&mut ty);
    (!contains_impl_trait(&ty)).then_some(ty)
}

fn contains_impl_trait(ty: &Type) -> bool {
    fn scan(tokens: TokenStream) -> bool {
        tokens.into_iter().any(|tt| match tt {
            proc_macro2::TokenTree::Ident(ident) => ident == "impl",
            proc_macro2::TokenTree::Group(group) => scan(group.stream()),
            _ => false,
        })
    }
    scan(quote::ToTokens::to_token_stream(ty))
}
