use promshard::{HandlerFamilies, instrument_handler};

#[instrument_handler(route = "/users", method = "GET", families = HandlerFamilies::FUNCTIONS)]
fn users() {}

fn main() {}
