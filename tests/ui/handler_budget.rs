use promshard::{HandlerFamilies, instrument_handler};

const TINY: HandlerFamilies = HandlerFamilies::http().max_series(100);

#[instrument_handler(route = "/users/{id}", method = "GET", families = TINY)]
fn get_user() {}

fn main() {}
