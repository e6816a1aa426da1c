use promshard::instrument_handler;

#[instrument_handler]
#[track_caller]
fn checked(value: u32) -> u32 {
    assert!(value > 0, "called with zero at {}", std::panic::Location::caller());
    value
}

fn main() {
    checked(1);
}
