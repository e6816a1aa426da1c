use promshard::instrument_handler;

#[instrument_handler]
struct Users;

fn main() {}
