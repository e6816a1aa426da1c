//! Encoding (a scrape's text exposition) of 1,000 series, and the bytes each
//! library holds for them: promshard against every peer that encodes
//! Prometheus text. See `benches/encode/mod.rs`.
//!
//! `cargo bench --bench encode_1k`

mod encode;
mod forked;
mod results;

#[global_allocator]
static ALLOCATOR: encode::CountingAllocator = encode::CountingAllocator;

/// 100 routes × 10 tenants.
static REQUESTS: encode::Requests<100, 10> = encode::requests();
promshard::register!(REQUESTS);

fn main() {
    encode::run(encode::Size { name: "1k", routes: 100, tenants: 10, gzip: false }, &REQUESTS);
}
