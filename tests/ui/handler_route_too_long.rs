use promshard::instrument_handler;

#[instrument_handler(route = "/segment/segment/segment/segment/segment/segment/segment/segment/segment/segment/segment/segment/segment/segment/segment/segment/segment/segment/segment/segment/segment/segment/segment/segment/segment/segment/segment/segment/segment/segment/segment/segment/segment/segment/segment/segment/segment/segment/segment/segment/", method = "GET")]
fn long_route() {}

fn main() {
    long_route();
}
