#[instrument_handler(route = "/users/{id}", method = "GET")]
async fn get_user(Path(id): Path<u64>) -> Result<Json<User>, ApiError> {
    let user = find_user(id).await?;
    Ok(Json(user))
}

#[instrument_handler]
fn settle_invoice(amount: i64) -> Result<i64, InvoiceError> {
    if amount < 0 {
        return Err(InvoiceError::Negative);
    }
    Ok(amount)
}
