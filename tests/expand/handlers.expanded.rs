async fn get_user(Path(id): Path<u64>) -> Result<Json<User>, ApiError> {
    static __PROMSHARD_HANDLER: ::promshard::__private::HandlerSite = ::promshard::__private::HandlerSite::http(
        &::promshard::HandlerFamilies::HTTP,
        "/users/{id}",
        "GET",
        ::core::file!(),
        ::core::line!(),
    );
    #[::promshard::__private::linkme::distributed_slice(
        ::promshard::__private::HANDLERS
    )]
    #[linkme(crate = ::promshard::__private::linkme)]
    static __PROMSHARD_HANDLER_ENTRY: &::promshard::__private::HandlerSite = &__PROMSHARD_HANDLER;
    __PROMSHARD_HANDLER
        .instrument(
            async move {
                #[allow(clippy::diverging_sub_expression)]
                let __ret: Result<Json<User>, ApiError> = {
                    let user = find_user(id).await?;
                    Ok(Json(user))
                };
                #[allow(unreachable_code)] __ret
            },
            |__ret| ::promshard::__private::outcome!(__ret),
        )
        .await
}
fn settle_invoice(amount: i64) -> Result<i64, InvoiceError> {
    static __PROMSHARD_HANDLER: ::promshard::__private::HandlerSite = ::promshard::__private::HandlerSite::function(
        &::promshard::HandlerFamilies::FUNCTIONS,
        ::core::concat!(::core::module_path!(), "::settle_invoice"),
        ::core::file!(),
        ::core::line!(),
    );
    #[::promshard::__private::linkme::distributed_slice(
        ::promshard::__private::HANDLERS
    )]
    #[linkme(crate = ::promshard::__private::linkme)]
    static __PROMSHARD_HANDLER_ENTRY: &::promshard::__private::HandlerSite = &__PROMSHARD_HANDLER;
    __PROMSHARD_HANDLER
        .call(
            move || {
                #[allow(clippy::diverging_sub_expression)]
                let __ret: Result<i64, InvoiceError> = {
                    if amount < 0 {
                        return Err(InvoiceError::Negative);
                    }
                    Ok(amount)
                };
                #[allow(unreachable_code)] __ret
            },
            |__ret| ::promshard::__private::outcome!(__ret),
        )
}
