//! Encoding (a scrape's text exposition) of 1,000,000 series, and the bytes each
//! library holds for them: promshard against every peer that encodes
//! Prometheus text. See `benches/encode/mod.rs`.
//!
//! `cargo bench --bench encode_1m`

mod encode;
mod forked;
mod results;

#[global_allocator]
static ALLOCATOR: encode::CountingAllocator = encode::CountingAllocator;

/// 1000 routes × 1000 tenants.
static REQUESTS: encode::Requests<1000, 1000> = encode::requests();
promshard::register!(REQUESTS);

fn main() {
    encode::run(encode::Size { name: "1m", routes: 1000, tenants: 1000, gzip: false }, &REQUESTS);
}
