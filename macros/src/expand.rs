//! The code `#[metric]` writes: the static with its `const` initializer,
//! a type per inline label list, and a `const _` block holding the
//! registry entry and the series-budget assertion.

use proc_macro2::{Span, TokenStream};
use quote::{format_ident, quote, quote_spanned};
use syn::{Attribute, PathArguments, Type};

use crate::ast::{Kind, Static};
use crate::attr::{self, Args, BucketSpec, Source};
use crate::check::{self, Metric};
use crate::ctxt::Ctxt;

/// The whole of `#[metric]`: parse, check, expand.
pub(crate) fn metric(args: TokenStream, item: TokenStream) -> TokenStream {
    let decl: Static = match syn::parse2(item.clone()) {
        Ok(decl) => decl,
        Err(e) => {
            let message = format!("{e}; #[metric] goes on a declaration like `static NAME: Counter;`");
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
    let Static { attrs, vis, static_token, ident, .. } = decl;
    let kind = decl.kind.as_ref().expect("checked");
    let (label_types, tuple) = label_types(decl, args, krate);
    let (ty, constructor) = if metric.redis {
        // The declared `Counter` or `Gauge` becomes its Redis kind.
        let redis = format_ident!("Redis{}", kind.type_name());
        let generics = (!tuple.is_empty()).then(|| quote!(<(#tuple)>));
        (quote!(#krate::redis::#redis #generics), quote!(redis::#redis))
    } else {
        let constructor = format_ident!("{}", kind.type_name());
        (instrument_type(decl, kind, &tuple), quote!(#constructor))
    };

    let (name, help) = (&metric.name, &metric.help);
    let mut opts = quote!(#krate::Opts::new(#name, #help));
    if let Some(unit) = &args.unit {
        opts.extend(quote!(.unit(#unit)));
    }
    if let Some(labels) = &args.labels {
        let names = labels.list.iter().map(|l| l.name.text.as_str());
        opts.extend(quote!(.labels(&[#(#names),*])));
    }
    let bucket_count = match args.buckets.as_ref().map(|b| &b.spec) {
        Some(BucketSpec::Listed(values, _)) => {
            let per_series = unsuffixed(values.len() + 2);
            let values = values.iter().map(|(v, _)| float(*v));
            opts.extend(quote!(.buckets(&[#(#values),*])));
            quote!(#per_series)
        }
        Some(BucketSpec::Generated(values, _)) => {
            let per_series = unsuffixed(values.len() + 2);
            let values = values.iter().map(|v| float(*v));
            opts.extend(quote!(.buckets(&[#(#values),*])));
            quote!(#per_series)
        }
        Some(BucketSpec::Path(path)) => {
            opts.extend(quote!(.buckets(&#path)));
            quote!(#path.len() + 2)
        }
        None if args.native.is_some() => quote!(2),
        None => quote!(#krate::DEFAULT_BUCKETS.len() + 2),
    };
    if let Some(native) = &args.native {
        let schema = match native.schema {
            Some((schema, _)) => {
                let schema = proc_macro2::Literal::i8_unsuffixed(schema as i8);
                quote!(#schema)
            }
            None => quote!(#krate::NativeBuckets::DEFAULT_SCHEMA),
        };
        let max = match native.max_buckets {
            Some((max, _)) => {
                let max = unsuffixed(max as usize);
                quote!(#max)
            }
            None => quote!(#krate::NativeBuckets::DEFAULT_MAX_BUCKETS),
        };
        opts.extend(quote!(.native(#schema, #max)));
    }
    if let Some(mode) = &metric.mode {
        opts.extend(quote!(.mode(#krate::GaugeMode::#mode)));
    }
    if args.exemplars.is_some() {
        opts.extend(quote!(.exemplars()));
    }
    let span = ident.span();
    opts.extend(quote_spanned!(span=> .declared_at(::core::file!(), ::core::line!())));

    let per_series = match kind {
        Kind::Histogram => bucket_count,
        Kind::Enum(states) => quote!(<#states as #krate::LabelValue>::CARDINALITY),
        _ => quote!(1),
    };
    let max_series = unsuffixed(metric.max_series);
    let cfgs = cfg_attrs(attrs);
    let user_attrs = attrs;
    // Spanned at the static's name, so a budget overrun found when the
    // const is evaluated points at the declaration.
    let krate = &respan(krate.clone(), span);
    // `check` has counted the series already unless they depend on a type
    // or constant defined elsewhere; then a const assertion counts them.
    let budget = metric.budget_unchecked.then(|| {
        quote_spanned! {span=>
            // Label combinations × samples per series must fit the budget.
            #krate::__private::check_series_budget(
                #name,
                <(#tuple) as #krate::LabelSet>::CARDINALITY,
                #per_series,
                #max_series,
            );
        }
    });
    let entry = if metric.redis {
        quote_spanned! {span=>
            #[#krate::__private::linkme::distributed_slice(#krate::redis::REDIS_METRICS)]
            #[linkme(crate = #krate::__private::linkme)]
            static ENTRY: &dyn #krate::redis::RedisMetric = &#ident;
        }
    } else {
        quote_spanned! {span=>
            #[#krate::__private::linkme::distributed_slice(#krate::__private::METRICS)]
            #[linkme(crate = #krate::__private::linkme)]
            static ENTRY: &#krate::__private::MetricCore = #ident.core();
        }
    };
    let registration = quote_spanned! {span=>
        #(#cfgs)*
        const _: () = {
            #entry
            #budget
        };
    };
    quote! {
        #label_types
        #(#user_attrs)*
        #vis #static_token #ident: #ty = #krate::#constructor::new(#opts);
        #registration
    }
}

/// After an error: the static with the same type but a placeholder
/// initializer and no registration, so code using it does not fail too.
fn fallback(decl: &Static, args: &Args, krate: &TokenStream) -> TokenStream {
    let Static { attrs, vis, static_token, ident, .. } = decl;
    let Some(kind) = &decl.kind else {
        return TokenStream::new();
    };
    let (label_types, tuple) = label_types(decl, args, krate);
    let ty = instrument_type(decl, kind, &tuple);
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
    let Some(labels) = &args.labels else { return (TokenStream::new(), TokenStream::new()) };
    let vis = &decl.vis;
    let cfgs = cfg_attrs(&decl.attrs);
    let mut items = TokenStream::new();
    let mut elements = Vec::new();
    for (position, label) in labels.list.iter().enumerate() {
        match &label.source {
            // An unbounded type was reported by `check`; a string label
            // stands in for it so the rest of the expansion type-checks.
            Source::Type(ty) if check::unbounded_type(ty).is_some() => elements.push(quote!(#krate::Bounded<1>)),
            Source::Type(ty) => elements.push(quote!(#ty)),
            Source::Bounded { capacity, span } => {
                let capacity = unsuffixed(*capacity);
                elements.push(quote_spanned!(*span=> #krate::Bounded<#capacity>));
            }
            Source::List { values, fallback, span } => {
                // A string label name (`"url.scheme"`) as an identifier,
                // with its position: `url_scheme` may be another label.
                let type_name = match syn::parse_str::<syn::Ident>(&label.name.text) {
                    Ok(ident) => format_ident!("__{}_{}", decl.ident, ident, span = Span::mixed_site()),
                    Err(_) => {
                        let [in_ident, _, _] = crate::names::escaped(&label.name.text, false);
                        format_ident!("__{}_{}_{}", decl.ident, position, in_ident, span = Span::mixed_site())
                    }
                };
                let mut texts: Vec<String> = values.iter().map(|v| v.value()).collect();
                let arms = texts.iter().enumerate().map(|(i, v)| {
                    let i = unsuffixed(i);
                    quote!(#v => #i,)
                });
                let arms: Vec<_> = arms.collect();
                let otherwise = match fallback {
                    Some(f) => {
                        let position = texts.iter().position(|v| *v == f.value()).unwrap_or_else(|| {
                            texts.push(f.value());
                            texts.len() - 1
                        });
                        let position = unsuffixed(position);
                        quote!(_ => #position,)
                    }
                    None => quote!(_ => cx.refuse(value),),
                };
                // With an `else` value nothing is refused, so the context is unused.
                let cx = if fallback.is_some() { quote!(_) } else { quote!(cx) };
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
                        fn index(value: &str, #cx: #krate::LabelContext<'_>) -> usize {
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
    (items, quote!(#(#elements,)*))
}

/// The static's type as the user wrote it (so their import is what names
/// it), with the label tuple added to its generic arguments.
fn instrument_type(decl: &Static, kind: &Kind, tuple: &TokenStream) -> TokenStream {
    let Type::Path(path) = &decl.ty else { unreachable!("checked by ast::kind_of") };
    let mut path = path.clone();
    if let Some(last) = path.path.segments.last_mut() {
        last.arguments = PathArguments::None;
    }
    match kind {
        Kind::Info => quote!(#path),
        Kind::Enum(states) => quote!(#path<#states, (#tuple)>),
        // `()` is the default label set.
        _ if tuple.is_empty() => quote!(#path),
        _ => quote!(#path<(#tuple)>),
    }
}

/// `#[cfg]`s of the static, repeated on every generated item so that a
/// configured-out metric leaves nothing behind.
fn cfg_attrs(attrs: &[Attribute]) -> Vec<&Attribute> {
    attrs.iter().filter(|a| a.path().is_ident("cfg")).collect()
}

/// `tokens` with every span set to `span`.
fn respan(tokens: TokenStream, span: Span) -> TokenStream {
    tokens
        .into_iter()
        .map(|mut tt| {
            if let proc_macro2::TokenTree::Group(g) = &tt {
                let mut group = proc_macro2::Group::new(g.delimiter(), respan(g.stream(), span));
                group.set_span(span);
                tt = group.into();
            }
            tt.set_span(span);
            tt
        })
        .collect()
}

/// An `f64` literal that always reads back as the same float.
fn float(v: f64) -> proc_macro2::Literal {
    proc_macro2::Literal::f64_unsuffixed(v)
}

fn unsuffixed(n: usize) -> proc_macro2::Literal {
    proc_macro2::Literal::usize_unsuffixed(n)
}
