//! The code `#[metric]` writes: the static with its `const` initializer,
//! a type per inline label list, and a `const _` block holding the
//! registry entry and the series-budget assertion.

use proc_macro2::{Span, TokenStream};
use quote::{format_ident, quote, quote_spanned};
use syn::Attribute;

use crate::ast::{Kind, Static};
use crate::attr::{self, Args, BucketSpec, Source};
use crate::check::{self, Metric};
use crate::ctxt::Ctxt;

/// The whole of `#[metric]`: parse, check, expand.
pub(crate) fn metric(args: TokenStream, item: TokenStream) -> TokenStream {
    let decl: Static = match syn::parse2(item.clone()) {
        Ok(decl) => decl,
        Err(e) => {
            let message =
                format!("{e}; #[metric] goes on a declaration like `static NAME: Counter;`");
            let error = syn::Error::new(e.span(), message).into_compile_error();
            return quote!(#error #item);
        }
    };
    let mut cx = Ctxt::default();
    let args = attr::parse(args, &mut cx);
    let checked = check::check(&decl, &args, &mut cx);
    let krate = match &args.krate {
        Some(path) => quote!(#path),
        None => quote!(::promshard),
    };
    match checked {
        Some(metric) if cx.is_empty() => expand(&decl, &args, &metric, &krate),
        _ => {
            let errors = cx.into_error().map(syn::Error::into_compile_error);
            let fallback = fallback(&decl, &args, &krate);
            quote!(#errors #fallback)
        }
    }
}

fn expand(decl: &Static, args: &Args, metric: &Metric, krate: &TokenStream) -> TokenStream {
    let Static {
        attrs,
        vis,
        static_token,
        ident,
        ..
    } = decl;
    let kind = decl.kind.as_ref().expect("checked");
    let (label_types, tuple) = label_types(decl, args, krate);
    let ty = instrument_type(kind, &tuple, krate);
    let constructor = format_ident!("{}", kind.type_name());

    let (name, help) = (&metric.name, &metric.help);
    let mut opts = quote!(#krate::Opts::new(#name, #help));
    if let Some(unit) = &args.unit {
        opts.extend(quote!(.unit(#unit)));
    }
    if let Some(labels) = &args.labels {
        let names = labels.list.iter().map(|l| l.name.to_string());
        opts.extend(quote!(.labels(&[#(#names),*])));
    }
    let bucket_count = match args.buckets.as_ref().map(|b| &b.spec) {
        Some(BucketSpec::Listed(values, _)) => {
            let n = values.len();
            let values = values.iter().map(|(v, _)| float(*v));
            opts.extend(quote!(.buckets(&[#(#values),*])));
            quote!(#n)
        }
        Some(BucketSpec::Generated(values, _)) => {
            let n = values.len();
            let values = values.iter().map(|v| float(*v));
            opts.extend(quote!(.buckets(&[#(#values),*])));
            quote!(#n)
        }
        Some(BucketSpec::Path(path)) => {
            opts.extend(quote!(.buckets(&#path)));
            quote!(#path.len())
        }
        None => quote!(#krate::DEFAULT_BUCKETS.len()),
    };
    if let Some(mode) = &metric.mode {
        opts.extend(quote!(.mode(#krate::GaugeMode::#mode)));
    }
    let span = ident.span();
    opts.extend(quote_spanned!(span=> .declared_at(::core::file!(), ::core::line!())));

    let per_series = match kind {
        Kind::Histogram => quote!(#bucket_count + 2),
        Kind::Enum(states) => quote!(<#states as #krate::LabelValue>::CARDINALITY),
        _ => quote!(1),
    };
    let max_series = metric.max_series;
    let cfgs = cfg_attrs(attrs);
    let user_attrs = attrs;
    let budget = quote_spanned! {span=>
        #krate::__private::check_series_budget(
            #name,
            <#tuple as #krate::LabelSet>::CARDINALITY,
            #per_series,
            #max_series,
        )
    };
    quote! {
        #label_types
        #(#user_attrs)*
        #vis #static_token #ident: #ty = #krate::#constructor::new(#opts);
        #(#cfgs)*
        const _: () = {
            #[#krate::__private::linkme::distributed_slice(#krate::__private::METRICS)]
            #[linkme(crate = #krate::__private::linkme)]
            static ENTRY: &#krate::__private::MetricCore = #ident.core();
            // Label combinations × samples per series must fit the budget.
            #budget
        };
    }
}

/// After an error: the static with the same type but a placeholder
/// initializer and no registration, so code using it does not fail too.
fn fallback(decl: &Static, args: &Args, krate: &TokenStream) -> TokenStream {
    let Static {
        attrs,
        vis,
        static_token,
        ident,
        ..
    } = decl;
    let Some(kind) = &decl.kind else {
        return TokenStream::new();
    };
    let (label_types, tuple) = label_types(decl, args, krate);
    let ty = instrument_type(kind, &tuple, krate);
    let constructor = format_ident!("{}", kind.type_name());
    let count = args.labels.as_ref().map_or(0, |l| l.list.len());
    let names = (0..count).map(|i| format!("l{i}"));
    quote! {
        #label_types
        #(#attrs)*
        #vis #static_token #ident: #ty =
            #krate::#constructor::new(#krate::Opts::new("invalid_metric", "").labels(&[#(#names),*]));
    }
}

/// The label tuple type, and the items it needs: one zero-sized type per
/// inline list, implementing `LabelType` with a `match`.
fn label_types(decl: &Static, args: &Args, krate: &TokenStream) -> (TokenStream, TokenStream) {
    let Some(labels) = &args.labels else {
        return (TokenStream::new(), quote!(()));
    };
    let vis = &decl.vis;
    let cfgs = cfg_attrs(&decl.attrs);
    let mut items = TokenStream::new();
    let mut elements = Vec::new();
    for label in &labels.list {
        match &label.source {
            Source::Type(ty) => elements.push(quote!(#ty)),
            Source::Bounded { capacity, span } => {
                elements.push(quote_spanned!(*span=> #krate::Bounded<#capacity>))
            }
            Source::List {
                values,
                fallback,
                span,
            } => {
                let type_name =
                    format_ident!("__{}_{}", decl.ident, label.name, span = Span::mixed_site());
                let mut texts: Vec<String> = values.iter().map(|v| v.value()).collect();
                let arms = texts
                    .iter()
                    .enumerate()
                    .map(|(i, v)| quote!(#v => #i,))
                    .collect::<Vec<_>>();
                let otherwise = match fallback {
                    Some(f) => {
                        let position =
                            texts
                                .iter()
                                .position(|v| *v == f.value())
                                .unwrap_or_else(|| {
                                    texts.push(f.value());
                                    texts.len() - 1
                                });
                        quote!(_ => #position,)
                    }
                    None => quote!(_ => cx.refuse(value),),
                };
                let doc = format!("Values of label `{}` of `{}`.", label.name, decl.ident);
                items.extend(quote_spanned! {*span=>
                    #(#cfgs)*
                    #[doc = #doc]
                    #[doc(hidden)]
                    #[allow(non_camel_case_types)]
                    #vis struct #type_name;
                    #(#cfgs)*
                    impl #krate::LabelType for #type_name {
                        type Value<'a> = &'a str;
                        const DOMAIN: #krate::LabelDomain = #krate::LabelDomain::Values(&[#(#texts),*]);
                        #[inline]
                        fn index(value: &str, cx: #krate::LabelContext<'_>) -> usize {
                            match value {
                                #(#arms)*
                                #otherwise
                            }
                        }
                    }
                });
                elements.push(quote!(#type_name));
            }
        }
    }
    (items, quote!((#(#elements,)*)))
}

fn instrument_type(kind: &Kind, tuple: &TokenStream, krate: &TokenStream) -> TokenStream {
    match kind {
        Kind::Counter => quote!(#krate::Counter<#tuple>),
        Kind::Gauge => quote!(#krate::Gauge<#tuple>),
        Kind::Histogram => quote!(#krate::Histogram<#tuple>),
        Kind::Info => quote!(#krate::Info),
        Kind::Enum(states) => quote!(#krate::Enum<#states, #tuple>),
    }
}

/// `#[cfg]`s of the static, repeated on every generated item so that a
/// configured-out metric leaves nothing behind.
fn cfg_attrs(attrs: &[Attribute]) -> Vec<&Attribute> {
    attrs.iter().filter(|a| a.path().is_ident("cfg")).collect()
}

/// An `f64` literal that always reads back as the same float.
fn float(v: f64) -> TokenStream {
    let lit = proc_macro2::Literal::f64_suffixed(v);
    quote!(#lit)
}
