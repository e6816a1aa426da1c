use promshard::instrument_handler;

#[instrument_handler(method = "GET")]
fn users() {}

fn main() {}
