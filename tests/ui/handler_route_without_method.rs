use promshard::instrument_handler;

#[instrument_handler(route = "/users")]
fn users() {}

fn main() {}
