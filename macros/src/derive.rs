//! `#[derive(LabelValue)]` for fieldless enums.

use proc_macro2::TokenStream;
use quote::quote;
use syn::ext::IdentExt;
use syn::{Data, DeriveInput, Fields, LitStr};

pub(crate) fn label_value(input: &DeriveInput) -> syn::Result<TokenStream> {
    let Data::Enum(data) = &input.data else {
        return Err(syn::Error::new(
            input.ident.span(),
            "#[derive(LabelValue)] works on fieldless enums; a label needs a fixed set of values",
        ));
    };
    if !input.generics.params.is_empty() {
        return Err(syn::Error::new_spanned(&input.generics, "#[derive(LabelValue)] does not support generic enums"));
    }
    let mut krate = quote!(::promshard);
    for attr in input.attrs.iter().filter(|a| a.path().is_ident("label")) {
        attr.parse_nested_meta(|meta| {
            if meta.path.is_ident("crate") {
                let path: syn::Path = meta.value()?.parse()?;
                krate = quote!(#path);
                Ok(())
            } else {
                Err(meta.error("unknown argument; expected `crate = path`"))
            }
        })?;
    }
    let mut errors: Option<syn::Error> = None;
    let mut push = |e: syn::Error| match &mut errors {
        Some(all) => all.combine(e),
        None => errors = Some(e),
    };
    if data.variants.is_empty() {
        push(syn::Error::new(input.ident.span(), "a label needs at least one value: add a variant"));
    }
    let mut values: Vec<String> = Vec::new();
    let mut arms = Vec::new();
    for (index, variant) in data.variants.iter().enumerate() {
        if !matches!(variant.fields, Fields::Unit) {
            push(syn::Error::new_spanned(&variant.fields, "label values are fieldless variants; remove the fields"));
        }
        let mut value = snake_case(&variant.ident.unraw().to_string());
        for attr in variant.attrs.iter().filter(|a| a.path().is_ident("label")) {
            let result = attr.parse_nested_meta(|meta| {
                if meta.path.is_ident("rename") {
                    value = meta.value()?.parse::<LitStr>()?.value();
                    Ok(())
                } else {
                    Err(meta.error("unknown argument; expected `rename = \"...\"`"))
                }
            });
            if let Err(e) = result {
                push(e);
            }
        }
        if values.contains(&value) {
            push(syn::Error::new(variant.ident.span(), format!("two variants have the label value {value:?}")));
        }
        let ident = &variant.ident;
        let index = proc_macro2::Literal::usize_unsuffixed(index);
        arms.push(quote!(Self::#ident => #index,));
        values.push(value);
    }
    if let Some(errors) = errors {
        return Err(errors);
    }
    let ident = &input.ident;
    Ok(quote! {
        impl #krate::LabelValue for #ident {
            const VALUES: &'static [&'static str] = &[#(#values),*];
            #[inline]
            fn index(self) -> usize {
                match self {
                    #(#arms)*
                }
            }
        }
    })
}

/// `NotFound` → `not_found`, `HTTPError` → `http_error`, `V2` → `v2`.
fn snake_case(name: &str) -> String {
    let chars: Vec<char> = name.chars().collect();
    let mut out = String::with_capacity(name.len() + 4);
    for (i, &c) in chars.iter().enumerate() {
        if c.is_uppercase() && i > 0 {
            let prev = chars[i - 1];
            let next_lower = chars.get(i + 1).is_some_and(|n| n.is_lowercase());
            if prev.is_lowercase() || prev.is_ascii_digit() || (prev.is_uppercase() && next_lower) {
                out.push('_');
            }
        }
        out.extend(c.to_lowercase());
    }
    out
}
