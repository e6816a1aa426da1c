use promshard::instrument_handler;

#[instrument_handler(route = "/users", method = "FETCH")]
fn users() {}

fn main() {}
