use promshard::instrument_handler;

// A status label of any `u16` would be unbounded: statuses come from the
// family's list, and the outcome from the return type.
#[instrument_handler(route = "/users", method = "GET", status = u16)]
fn users() -> u16 {
    200
}

fn main() {}
