use promshard::instrument_handler;

#[instrument_handler(route = "", method = "GET", method = "POST", name = "")]
fn users() {}

fn main() {}
