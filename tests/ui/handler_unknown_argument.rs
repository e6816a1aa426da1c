use promshard::instrument_handler;

#[instrument_handler(rout = "/users")]
fn users() {}

fn main() {}
