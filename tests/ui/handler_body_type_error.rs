use promshard::instrument_handler;

#[derive(Debug)]
struct NotFound;

// The errors are in the body, and point there, not at the attribute.
#[instrument_handler(route = "/users/{id}", method = "GET")]
fn get_user(id: u64) -> Result<String, NotFound> {
    let name: String = id;
    Ok(name)
}

#[instrument_handler]
async fn count() -> u32 {
    "three"
}

fn main() {}
