use promshard::instrument_handler;

#[instrument_handler]
const fn answer() -> u32 {
    42
}

fn main() {}
