//! The code `#[instrument_handler]` writes: the function as it was, its
//! body handed to its call site's `call` (or `instrument` for futures),
//! and before it the site's `static` and its entry in the handler slice.

use proc_macro2::TokenStream;
use quote::{quote, quote_spanned};
use syn::ItemFn;
use syn::spanned::Spanned;

use crate::ctxt::Ctxt;
use crate::handler_attr::{self, HandlerArgs};
use crate::handler_check::{self, Body, Handler};

/// The whole of `#[instrument_handler]`: parse, check, expand.
pub(crate) fn instrument_handler(args: TokenStream, item: TokenStream) -> TokenStream {
    let function: ItemFn = match syn::parse2(item.clone()) {
        Ok(function) => function,
        Err(e) => {
            let message =
                format!("{e}; #[instrument_handler] goes on a function with a body (free, or a method in an `impl`)");
            let error = syn::Error::new(e.span(), message).into_compile_error();
            return quote!(#error #item);
        }
    };
    let mut cx = Ctxt::default();
    let args = handler_attr::parse(args, &mut cx);
    let checked = handler_check::check(&function, &args, &mut cx);
    match checked {
        Some(handler) if cx.is_empty() => expand(function, &args, &handler),
        // The function unchanged, so that its callers do not fail too.
        _ => {
            let errors = cx.into_error().map(syn::Error::into_compile_error);
            quote!(#errors #function)
        }
    }
}

fn expand(function: ItemFn, args: &HandlerArgs, handler: &Handler) -> TokenStream {
    let ItemFn { attrs, vis, modifiers, sig, block } = function;
    let defaultness = &modifiers.defaultness;
    let krate = match &args.krate {
        Some(path) => quote!(#path),
        None => quote!(::promshard),
    };
    let label = &handler.label;
    let (families, budget) = match &args.families {
        // The defaults fit any one handler; a user's constant is checked
        // where it is named.
        Some(path) => {
            let check = quote_spanned! {path.span()=>
                const _: () = #krate::__private::check_handler_site(&#path, #label);
            };
            (quote!(#path), Some(check))
        }
        None if handler.http.is_some() => (quote!(#krate::HandlerFamilies::HTTP), None),
        None => (quote!(#krate::HandlerFamilies::FUNCTIONS), None),
    };
    let site = match &handler.http {
        Some((_, method)) => quote! {
            #krate::__private::HandlerSite::http(&#families, #label, #method, ::core::file!(), ::core::line!())
        },
        None => quote! {
            #krate::__private::HandlerSite::function(&#families, #label, ::core::file!(), ::core::line!())
        },
    };
    let classify = match &handler.classified {
        Some(output) => quote!(|__ret: &#output| #krate::__private::outcome!(__ret)),
        None => quote!(|__ret| #krate::__private::outcome!(__ret)),
    };
    // The body stays one block, pinned to the return type so that `?` and
    // `.into()` in it infer as they did. A body that always panics makes
    // the binding a diverging sub-expression and `__ret` unreachable: ours,
    // not the user's, so allowed.
    let pinned = match &handler.return_type {
        Some(ty) => quote!({
            #[allow(clippy::diverging_sub_expression)]
            let __ret: #ty = #block;
            #[allow(unreachable_code)]
            __ret
        }),
        None => quote!(#block),
    };
    let run = match handler.body {
        Body::Sync => quote!(__PROMSHARD_HANDLER.call(move || #pinned, #classify)),
        Body::Async => quote!(__PROMSHARD_HANDLER.instrument(async move #pinned, #classify).await),
        // The body runs in a closure, as a sync body does, so that a
        // `return` in it hands its future to the wrapper too instead of
        // leaving the function with it, uncounted.
        Body::BoxedFuture => {
            let ty = handler.return_type.as_ref().expect("a boxed future's type is written out");
            quote!(::std::boxed::Box::pin(__PROMSHARD_HANDLER.instrument_made(move || -> #ty #block, #classify)))
        }
        Body::ImplFuture => quote!(__PROMSHARD_HANDLER.instrument_made(move || #block, #classify)),
    };
    // A body that never returns was pinned to `Infallible`; nothing of it
    // comes back, so the call's value is matched empty, which is `!`.
    let run = if handler.never { quote!(match #run {}) } else { run };
    quote! {
        #(#attrs)*
        #vis #defaultness #sig {
            static __PROMSHARD_HANDLER: #krate::__private::HandlerSite = #site;
            #[#krate::__private::linkme::distributed_slice(#krate::__private::HANDLERS)]
            #[linkme(crate = #krate::__private::linkme)]
            static __PROMSHARD_HANDLER_ENTRY: &#krate::__private::HandlerSite = &__PROMSHARD_HANDLER;
            #budget
            #run
        }
    }
}
